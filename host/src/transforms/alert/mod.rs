//! `type = "alert"` transform: a rule over events, per key, that emits `firing` once a
//! condition has held for `for_secs` and `resolved` once it has been quiet for
//! `resolve_after_secs` — one of each per episode, however often the events come or
//! flap ([`rule`]). Its tracks are durable in the stage's state, committed with the
//! alerts they produced ([`stage`]), so that a restart neither fires again nor loses a
//! resolve. The admin page shows what fires ([`board`]).
//!
//! ```toml
//! [transforms.overheating]
//! type = "alert"
//! inputs = ["telemetry"]
//! when = { field = "temperature", gt = 80 }   # as the filter plugin writes it
//! key = "device_id"
//! value = "temperature"
//! for_secs = 30
//! resolve_after_secs = 120
//! ```

pub mod board;
mod rule;
mod stage;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_with::{DurationMilliSeconds, DurationSecondsWithFrac};
use sluice_sdk::predicate::Predicate;

use super::Transform;
use crate::component::{BuildContext, BuildError, Declaration, Problem, Role};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTransformConfig {
    /// The alert's name in what it emits; the stage's name without it.
    pub name: Option<String>,
    /// The condition of an active observation; without it, every event is one (an
    /// input route that carries only anomalies).
    pub when: Option<Predicate>,
    /// The payload field (a dotted path) that keys the alert.
    pub key: String,
    /// The payload field reported as first and last value; the whole payload without it.
    pub value: Option<String>,
    /// Labels every alert of the rule carries, besides the key's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "for_secs",
        default,
        with = "serde_with::As::<DurationSecondsWithFrac<f64>>"
    )]
    pub hold: Duration,
    #[serde(
        rename = "resolve_after_secs",
        default = "default_resolve_after",
        with = "serde_with::As::<DurationSecondsWithFrac<f64>>"
    )]
    pub resolve_after: Duration,
    #[serde(
        rename = "repeat_interval_secs",
        default,
        with = "serde_with::As::<Option<DurationSecondsWithFrac<f64>>>"
    )]
    pub repeat_interval: Option<Duration>,
    /// How often the timer looks for alerts due by time alone: how late, at most, a
    /// steady condition fires and a quiet one resolves.
    #[serde(
        rename = "check_interval_ms",
        default = "default_check_interval",
        with = "serde_with::As::<DurationMilliSeconds<u64>>"
    )]
    pub check_interval: Duration,
}

fn default_resolve_after() -> Duration {
    Duration::from_secs(60)
}

fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}

impl super::TransformConfig for AlertTransformConfig {
    fn declare(&self) -> Declaration<'_> {
        let mut problems = Vec::new();
        let mut problem = |message: &str, hint: &str| {
            problems.push(Problem {
                message: message.to_owned(),
                hint: hint.to_owned(),
            })
        };
        if self.key.is_empty() {
            problem("`key` is empty", "name the payload field that keys the alert: key = \"device_id\"");
        }
        if self.labels.contains_key(&self.key) {
            problem(
                &format!("`labels` sets `{}`, the key's own label", self.key),
                "every alert is labelled with its key: remove that label",
            );
        }
        if self.resolve_after.is_zero() {
            problem("`resolve_after_secs` is 0", "an alert resolves after this long without an active event: make it positive");
        }
        if self.repeat_interval.is_some_and(|every| every.is_zero()) {
            problem("`repeat_interval_secs` is 0", "make it positive, or leave it out to send `firing` once");
        }
        if self.check_interval.is_zero() {
            problem("`check_interval_ms` is 0", "make it at least 1");
        }
        Declaration {
            problems,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError> {
        let rule = rule::Rule {
            name: self.name.clone().unwrap_or_else(|| context.stage.to_owned()),
            when: self.when.clone(),
            key_field: self.key.clone(),
            value_field: self.value.clone(),
            labels: self.labels.clone(),
            hold: self.hold,
            resolve_after: self.resolve_after,
            repeat_interval: self.repeat_interval,
        };
        Ok(Box::new(stage::AlertStage {
            stage: context.stage.into(),
            rule,
            state: context.state.clone(),
            check_interval: self.check_interval,
            public: context.role == Role::Host,
        }))
    }
}
