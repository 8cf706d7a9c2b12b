//! An alert rule's state machine, per key, over the host's clock.
//!
//! An event whose condition holds is an *active* observation of its key, any other a
//! *clear* one. The first active observation makes the key *pending*; a clear one
//! before it fires forgets it again. It *fires* once it has been active for `for`:
//! checked at every observation and at every timer check, so that a condition that
//! stays true fires on time even when its key sends nothing more. While firing, active
//! observations only move its last value and count (one alert per key, not one per
//! event) and clear ones change nothing: it *resolves* once no active observation has
//! come for `resolve_after` (a timer check sees it), so that a reading flapping across
//! a threshold makes one `firing` and one `resolved`. `repeat_interval` sends `firing`
//! again while it stays active.
//!
//! Times are arrival times on the host's clock, never the events' own: `for` and
//! `resolve_after` are measured by a timer that runs when no event comes, and events'
//! clocks may be skewed, late or replayed. Everything here takes `now` as an argument,
//! so that tests drive the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_sdk::predicate::Predicate;

/// A rule's settings, as the stage config gives them.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The alert's name in what it emits.
    pub name: String,
    /// Without a condition every event is an active observation (an input route that
    /// carries only anomalies, for example).
    pub when: Option<Predicate>,
    /// The payload field whose value keys the alert; its name is a label too.
    pub key_field: String,
    /// The payload field reported as first and last value; the whole payload without it.
    pub value_field: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub hold: Duration,
    pub resolve_after: Duration,
    pub repeat_interval: Option<Duration>,
}

/// One key's episode, from its first active observation until it resolves or is
/// forgotten. Stored as JSON in the stage's state, so its fields are its format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// The first active observation: the alert's `starts_at`.
    pub since_ms: i64,
    pub last_active_ms: i64,
    /// When `firing` was last emitted; `None` while pending.
    pub notified_ms: Option<i64>,
    pub first_value: Value,
    pub last_value: Value,
    /// Active observations in this episode.
    pub count: u64,
}

impl Track {
    pub fn firing(&self) -> bool {
        self.notified_ms.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

/// One observation of a key, read from an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub key: String,
    pub active: bool,
    pub value: Value,
}

/// Why an event cannot be observed: it goes to the dead-letter route with this.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Unobservable {
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("the payload has no `{0}` to key the alert by")]
    NoKey(String),
}

/// What a step of the machine did: the alerts to emit, and the keys whose stored
/// track changed (written, or deleted when no longer tracked).
#[derive(Debug, Default)]
pub struct Changes {
    pub alerts: Vec<(String, Status, Track)>,
    pub touched: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.touched.is_empty()
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Rule {
    /// The observation an event's JSON payload makes.
    pub fn observe(&self, payload: &[u8]) -> Result<Observation, Unobservable> {
        let payload: Value = serde_json::from_slice(payload)
            .map_err(|error| Unobservable::NotJson(error.to_string()))?;
        let key = match sluice_sdk::json::get(&payload, &self.key_field) {
            None | Some(Value::Null) => return Err(Unobservable::NoKey(self.key_field.clone())),
            Some(Value::String(key)) => key.clone(),
            Some(other) => other.to_string(),
        };
        let active = self.when.as_ref().is_none_or(|when| when.matches(&payload));
        let value = match &self.value_field {
            Some(field) => sluice_sdk::json::get(&payload, field)
                .cloned()
                .unwrap_or(Value::Null),
            None => payload,
        };
        Ok(Observation { key, active, value })
    }

    /// Take one observation at `now`.
    pub fn apply(
        &self,
        tracks: &mut BTreeMap<String, Track>,
        observation: Observation,
        now: i64,
        changes: &mut Changes,
    ) {
        let Observation { key, active, value } = observation;
        // An episode that went quiet before this observation ends first (a timer check
        // that has not run yet, or a host that was down). Nothing fires here: whether
        // the condition still holds is this observation's to say.
        if tracks.get(&key).is_some_and(|track| self.quiet(track, now)) {
            self.advance(tracks, &key, now, changes);
        }
        if active {
            let track = tracks.entry(key.clone()).or_insert_with(|| Track {
                since_ms: now,
                last_active_ms: now,
                notified_ms: None,
                first_value: value.clone(),
                last_value: Value::Null,
                count: 0,
            });
            track.last_active_ms = now;
            track.last_value = value;
            track.count += 1;
            changes.touched.insert(key.clone());
            self.advance(tracks, &key, now, changes);
        } else if tracks.get(&key).is_some_and(|track| !track.firing()) {
            tracks.remove(&key);
            changes.touched.insert(key);
        }
    }

    /// The timer's check at `now`: what fires, repeats or resolves by time alone.
    pub fn check(&self, tracks: &mut BTreeMap<String, Track>, now: i64, changes: &mut Changes) {
        let keys: Vec<String> = tracks.keys().cloned().collect();
        for key in keys {
            self.advance(tracks, &key, now, changes);
        }
    }

    /// Whether `track` has had no active observation for `resolve_after` at `now`.
    fn quiet(&self, track: &Track, now: i64) -> bool {
        now - track.last_active_ms >= ms(self.resolve_after)
    }

    /// Move `key`'s track along at `now`: fire, repeat, resolve, or forget it.
    fn advance(
        &self,
        tracks: &mut BTreeMap<String, Track>,
        key: &str,
        now: i64,
        changes: &mut Changes,
    ) {
        let Some(track) = tracks.get_mut(key) else {
            return;
        };
        let quiet = self.quiet(track, now);
        let due = match track.notified_ms {
            None => !quiet && now - track.since_ms >= ms(self.hold),
            Some(notified) => {
                !quiet && self.repeat_interval.is_some_and(|every| now - notified >= ms(every))
            }
        };
        if due {
            track.notified_ms = Some(now);
            changes.alerts.push((key.to_owned(), Status::Firing, track.clone()));
            changes.touched.insert(key.to_owned());
        } else if quiet {
            let track = tracks.remove(key).expect("looked up above");
            if track.firing() {
                changes.alerts.push((key.to_owned(), Status::Resolved, track));
            }
            changes.touched.insert(key.to_owned());
        }
    }

    /// The alert event's payload (its documented shape: webhooks are templated on it).
    pub fn payload(&self, key: &str, status: Status, track: &Track) -> Value {
        let mut labels = self.labels.clone();
        labels.insert(self.key_field.clone(), key.to_owned());
        let ends_at = match status {
            Status::Firing => Value::Null,
            // When it became resolved by definition, whenever the check saw it: the
            // same after a restart as without one.
            Status::Resolved => json!(rfc3339(track.last_active_ms + ms(self.resolve_after))),
        };
        json!({
            "alert": self.name,
            "status": match status { Status::Firing => "firing", Status::Resolved => "resolved" },
            "key": key,
            "labels": labels,
            "first_value": track.first_value,
            "last_value": track.last_value,
            "starts_at": rfc3339(track.since_ms),
            "ends_at": ends_at,
            "count": track.count,
        })
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`2026-05-01T10:00:00.250Z`),
/// without a date library: the device build has none.
pub fn rfc3339(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let seconds = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests;
