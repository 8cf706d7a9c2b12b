//! The conditions the `host_events` source looks for, evaluated from what it is given
//! (heartbeats, stage totals, the time), so that they are tested without a host.
//!
//! An evaluation returns one event per condition that holds *now*: a rule downstream
//! (the `alert` transform) sees a condition as active every interval while it lasts and
//! hears nothing once it clears, which is how it resolves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::counters::{self, DEAD_LETTERED, ERRORS};
use crate::signals::{DeviceHeartbeat, JobFailure};

/// A condition, by the name its events carry in `check` (and `checks` lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    DeviceOffline,
    UplinkDropping,
    UplinkDepth,
    StageErrors,
    JobFailed,
}

impl Check {
    pub fn all() -> Vec<Check> {
        vec![
            Check::DeviceOffline,
            Check::UplinkDropping,
            Check::UplinkDepth,
            Check::StageErrors,
            Check::JobFailed,
        ]
    }
}

/// Where each condition starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A device whose last heartbeat is older than this is offline.
    pub device_offline: Duration,
    /// A device whose uplink buffers more entries than this is reported.
    pub uplink_depth: u64,
    /// Failed batches per second of a stage, over an interval, above which it is
    /// reported.
    pub stage_error_rate: f64,
    /// Dead letters per second of a stage, likewise.
    pub stage_dead_letter_rate: f64,
}

/// Every stage's errors and dead letters so far (the counters only grow).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTotals {
    pub errors: BTreeMap<String, u64>,
    pub dead_letters: BTreeMap<String, u64>,
}

impl StageTotals {
    /// This process's totals now.
    pub fn now() -> StageTotals {
        StageTotals {
            errors: counters::totals(ERRORS),
            dead_letters: counters::totals(DEAD_LETTERED),
        }
    }
}

/// What a device's uplink had dropped at the last two of its heartbeats seen.
struct Drops {
    received_ms: i64,
    dropped: u64,
    /// Entries dropped between the two.
    growth: u64,
}

/// The conditions a source looks for, and what it remembers between evaluations.
pub struct Watch {
    checks: BTreeSet<Check>,
    thresholds: Thresholds,
    drops: HashMap<String, Drops>,
    /// The stage totals at the previous evaluation.
    stages: StageTotals,
}

impl Watch {
    /// Rates are counted from `baseline` on.
    pub fn new(checks: &[Check], thresholds: Thresholds, baseline: StageTotals) -> Watch {
        Watch {
            checks: checks.iter().copied().collect(),
            thresholds,
            drops: HashMap::new(),
            stages: baseline,
        }
    }

    pub fn checks(&self, check: Check) -> bool {
        self.checks.contains(&check)
    }

    /// One event per condition that holds at `now_ms`, `elapsed` after the previous
    /// evaluation (or the baseline).
    pub fn evaluate(
        &mut self,
        now_ms: i64,
        elapsed: Duration,
        devices: &[DeviceHeartbeat],
        stages: StageTotals,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        for device in devices {
            self.device(now_ms, device, &mut events);
        }
        self.stages(elapsed, stages, &mut events);
        events
    }

    /// An offline device's last heartbeat says nothing of its uplink now: it is reported
    /// offline only (or not at all, without that check).
    fn device(&mut self, now_ms: i64, device: &DeviceHeartbeat, events: &mut Vec<Value>) {
        let growth = self.dropped_since_previous(device);
        let silent_ms = now_ms.saturating_sub(device.received_ms);
        let offline = silent_ms > self.thresholds.device_offline.as_millis() as i64;
        if offline {
            if self.checks(Check::DeviceOffline) {
                events.push(json!({
                    "check": "device_offline",
                    "device_id": device.device_id,
                    "group": device.group,
                    "last_seen": rfc3339(device.received_ms),
                    "offline_secs": silent_ms / 1000,
                }));
            }
            return;
        }
        if growth > 0 && self.checks(Check::UplinkDropping) {
            events.push(json!({
                "check": "uplink_dropping",
                "device_id": device.device_id,
                "group": device.group,
                "dropped_entries": growth,
                "dropped_total": device.dropped_entries,
            }));
        }
        if device.buffered_entries > self.thresholds.uplink_depth && self.checks(Check::UplinkDepth)
        {
            events.push(json!({
                "check": "uplink_depth",
                "device_id": device.device_id,
                "group": device.group,
                "buffered_entries": device.buffered_entries,
                "buffered_bytes": device.buffered_bytes,
                "uplink_depth": self.thresholds.uplink_depth,
            }));
        }
    }

    /// The entries `device`'s uplink dropped between its two latest heartbeats seen here:
    /// the count is a total kept across the device's restarts, so a device first seen
    /// has dropped nothing yet as far as this source knows.
    fn dropped_since_previous(&mut self, device: &DeviceHeartbeat) -> u64 {
        let drops = self
            .drops
            .entry(device.device_id.clone())
            .or_insert(Drops {
                received_ms: device.received_ms,
                dropped: device.dropped_entries,
                growth: 0,
            });
        if drops.received_ms != device.received_ms {
            drops.growth = device.dropped_entries.saturating_sub(drops.dropped);
            drops.received_ms = device.received_ms;
            drops.dropped = device.dropped_entries;
        }
        drops.growth
    }

    fn stages(&mut self, elapsed: Duration, now: StageTotals, events: &mut Vec<Value>) {
        let previous = std::mem::replace(&mut self.stages, now);
        let secs = elapsed.as_secs_f64();
        if !self.checks(Check::StageErrors) || secs < 0.001 {
            return;
        }
        let rate = |now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, stage: &str| {
            let grown = now.get(stage).copied().unwrap_or(0);
            let was = before.get(stage).copied().unwrap_or(0);
            grown.saturating_sub(was) as f64 / secs
        };
        let current = &self.stages;
        let stages: BTreeSet<&String> = current
            .errors
            .keys()
            .chain(current.dead_letters.keys())
            .collect();
        for stage in stages {
            let errors = rate(&current.errors, &previous.errors, stage);
            let dead = rate(&current.dead_letters, &previous.dead_letters, stage);
            if errors > self.thresholds.stage_error_rate
                || dead > self.thresholds.stage_dead_letter_rate
            {
                events.push(json!({
                    "check": "stage_errors",
                    "stage": stage,
                    "errors_per_sec": round(errors),
                    "dead_letters_per_sec": round(dead),
                    "interval_secs": round(secs),
                }));
            }
        }
    }
}

/// The event of a job run that failed for good.
pub fn job_failed(failure: &JobFailure) -> Value {
    json!({
        "check": "job_failed",
        "job": failure.job,
        "slot": failure.slot,
        "reason": failure.reason,
        "attempts": failure.attempts,
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// A rate as people read it: three decimals.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn thresholds() -> Thresholds {
        Thresholds {
            device_offline: Duration::from_secs(3),
            uplink_depth: 100,
            stage_error_rate: 0.5,
            stage_dead_letter_rate: 0.0,
        }
    }

    fn beat(device: &str, received_ms: i64, buffered: u64, dropped: u64) -> DeviceHeartbeat {
        DeviceHeartbeat {
            device_id: device.into(),
            group: "gateways".into(),
            received_ms,
            buffered_entries: buffered,
            buffered_bytes: buffered * 10,
            dropped_entries: dropped,
        }
    }

    fn checks_of(events: &[Value]) -> Vec<(&str, &str)> {
        events
            .iter()
            .map(|event| {
                let subject = ["device_id", "stage", "job"]
                    .into_iter()
                    .find_map(|field| event[field].as_str())
                    .unwrap();
                (event["check"].as_str().unwrap(), subject)
            })
            .collect()
    }

    fn totals(errors: &[(&str, u64)], dead: &[(&str, u64)]) -> StageTotals {
        let map = |pairs: &[(&str, u64)]| pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        StageTotals {
            errors: map(errors),
            dead_letters: map(dead),
        }
    }

    #[test]
    fn a_device_silent_past_the_limit_is_offline_until_it_beats_again() {
        let mut watch = Watch::new(&Check::all(), thresholds(), StageTotals::default());
        let t0 = 1_700_000_000_000;
        let devices = [beat("gw1", t0, 0, 0), beat("gw2", t0 + 2_000, 0, 0)];
        let quiet = watch.evaluate(t0 + 3_000, SECOND, &devices, StageTotals::default());
        assert!(quiet.is_empty(), "{quiet:?}");
        let events = watch.evaluate(t0 + 4_500, SECOND, &devices, StageTotals::default());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0],
            json!({
                "check": "device_offline", "device_id": "gw1", "group": "gateways",
                "last_seen": "2023-11-14T22:13:20.000Z", "offline_secs": 4,
            })
        );
        // Still offline at the next interval, then back.
        let again = watch.evaluate(t0 + 5_000, SECOND, &devices, StageTotals::default());
        assert_eq!(checks_of(&again), [("device_offline", "gw1")]);
        let back = [beat("gw1", t0 + 6_000, 0, 0), beat("gw2", t0 + 6_000, 0, 0)];
        assert!(watch.evaluate(t0 + 6_500, SECOND, &back, StageTotals::default()).is_empty());
    }

    #[test]
    fn an_uplink_is_dropping_while_its_count_grows_between_heartbeats() {
        let mut watch = Watch::new(&Check::all(), thresholds(), StageTotals::default());
        let t0 = 1_700_000_000_000;
        let mut at = |received: i64, dropped: u64| {
            let devices = [beat("gw1", t0 + received, 0, dropped)];
            watch.evaluate(t0 + received + 100, SECOND, &devices, StageTotals::default())
        };
        // Drops from before this source started are no news.
        assert!(at(0, 40).is_empty());
        let events = at(1_000, 45);
        assert_eq!(checks_of(&events), [("uplink_dropping", "gw1")]);
        assert_eq!(
            (&events[0]["dropped_entries"], &events[0]["dropped_total"]),
            (&json!(5), &json!(45))
        );
        // No new heartbeat: the last verdict stands; a heartbeat without growth clears it.
        assert_eq!(checks_of(&at(1_000, 45)), [("uplink_dropping", "gw1")]);
        assert!(at(2_000, 45).is_empty());
    }

    #[test]
    fn a_deep_buffer_is_reported_and_an_offline_device_only_as_offline() {
        let mut watch = Watch::new(&Check::all(), thresholds(), StageTotals::default());
        let t0 = 1_700_000_000_000;
        let deep = [beat("gw1", t0, 101, 0), beat("gw2", t0, 100, 0)];
        let events = watch.evaluate(t0 + 500, SECOND, &deep, StageTotals::default());
        assert_eq!(checks_of(&events), [("uplink_depth", "gw1")]);
        assert_eq!(events[0]["buffered_entries"], 101);
        let events = watch.evaluate(t0 + 10_000, SECOND, &deep, StageTotals::default());
        assert_eq!(
            checks_of(&events),
            [("device_offline", "gw1"), ("device_offline", "gw2")]
        );
    }

    #[test]
    fn a_stage_is_reported_while_its_error_or_dead_letter_rate_is_over_its_threshold() {
        let baseline = totals(&[("score", 10)], &[("route", 3)]);
        let mut watch = Watch::new(&Check::all(), thresholds(), baseline);
        let two = Duration::from_secs(2);
        // score: 2 errors in 2 s (1/s > 0.5); route: no new dead letter; parse: one.
        let now = totals(&[("score", 12)], &[("route", 3), ("parse", 1)]);
        let events = watch.evaluate(0, two, &[], now.clone());
        assert_eq!(
            checks_of(&events),
            [("stage_errors", "parse"), ("stage_errors", "score")]
        );
        assert_eq!(
            events[1],
            json!({
                "check": "stage_errors", "stage": "score", "errors_per_sec": 1.0,
                "dead_letters_per_sec": 0.0, "interval_secs": 2.0,
            })
        );
        // One error in 2 s is at most the threshold: nothing.
        let calmer = totals(&[("score", 13)], &[("route", 3), ("parse", 1)]);
        assert!(watch.evaluate(0, two, &[], calmer).is_empty());
    }

    #[test]
    fn checks_left_out_report_nothing() {
        let mut watch = Watch::new(&[Check::UplinkDepth], thresholds(), StageTotals::default());
        let t0 = 1_700_000_000_000;
        let devices = [beat("gw1", t0, 500, 0), beat("gw2", t0 - 60_000, 0, 0)];
        let events = watch.evaluate(t0, SECOND, &devices, totals(&[("score", 100)], &[]));
        assert_eq!(checks_of(&events), [("uplink_depth", "gw1")]);
        assert!(!watch.checks(Check::JobFailed));
    }

    #[test]
    fn a_failed_job_run_is_one_event() {
        let failure = JobFailure {
            job: "train".into(),
            slot: "2024-05-01T00:00:00Z".into(),
            reason: "exit status 1".into(),
            attempts: 3,
        };
        assert_eq!(
            job_failed(&failure),
            json!({
                "check": "job_failed", "job": "train", "slot": "2024-05-01T00:00:00Z",
                "reason": "exit status 1", "attempts": 3,
            })
        );
    }
}
