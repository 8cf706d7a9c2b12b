//! `router`: send each event to a named route. Either by predicates (first match wins)
//! or by a field's value. Unmatched events take the `default` route, or the stage's
//! default output when no default is named.
//!
//! ```toml
//! [transforms.route.config]
//! routes = [{ name = "alerts", when = { field = "temperature", gt = 80.0 } }]
//! default = "normal"
//! # or: by_field = "site"   (the route is the field's string value)
//! ```

use serde::Deserialize;
use sluice_sdk::json::RawObject;
use sluice_sdk::predicate::Predicate;
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub by_field: Option<String>,
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub when: Predicate,
}

pub struct Router {
    config: Config,
}

impl Processor for Router {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        match (&config.by_field, config.routes.is_empty()) {
            (Some(_), false) => Err(Error::new("set either `routes` or `by_field`, not both")),
            (None, true) => Err(Error::new(
                "set `routes` (a list of {name, when}) or `by_field`",
            )),
            _ => Ok(Router { config }),
        }
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let payload = RawObject::parse_document(event.text()?)?;
        let named;
        let route = match &self.config.by_field {
            Some(path) => match payload.as_ref().and_then(|object| object.get(path)) {
                Some(text) if text.starts_with('"') => {
                    named = serde_json::from_str::<String>(&text)?;
                    Some(named.as_str())
                }
                Some(text) if !matches!(&*text, "null") && !text.starts_with(['{', '[']) => {
                    return Err(Error::new(format!(
                        "`{path}` must be a string to name a route"
                    )));
                }
                _ => None,
            },
            None => self
                .config
                .routes
                .iter()
                .find(|route| route.when.matches_raw(payload.as_ref()))
                .map(|route| route.name.as_str()),
        };
        match route.or(self.config.default.as_deref()) {
            Some(name) => out.forward_to(event, name),
            None => out.forward(event),
        }
        Ok(())
    }
}

sluice_sdk::export_processor!(Router);
