//! `filter`: keep (or drop) JSON events that match a field predicate.
//!
//! ```toml
//! [transforms.hot.config]
//! when = { field = "temperature", gt = 80.0 }
//! action = "keep"   # or "drop"
//! ```
//! Events whose payload is not JSON are rejected (dead-lettered) with the parse error.
//! The payload is checked and scanned, never parsed into a document: only the fields
//! the predicate tests are read.

use serde::Deserialize;
use sluice_sdk::json::RawObject;
use sluice_sdk::predicate::Predicate;
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub when: Predicate,
    #[serde(default)]
    pub action: Action,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Keep,
    Drop,
}

pub struct Filter {
    when: Predicate,
    keep_matching: bool,
}

impl Processor for Filter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        Ok(Filter {
            when: config.when,
            keep_matching: config.action == Action::Keep,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let payload = RawObject::parse_document(event.text()?)?;
        if self.when.matches_raw(payload.as_ref()) == self.keep_matching {
            out.forward(event);
        }
        Ok(())
    }
}

sluice_sdk::export_processor!(Filter);
