//! What `sluice top` shows, from successive polls of `GET /v1/admin/overview`: each
//! stage's rates per second over the time between two polls, whether its errors or dead
//! letters grew, the fleet's devices, and the order and selection the keys choose.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

/// A device heard from within this long is online: `host_events`' default for
/// `device_offline_secs`.
pub const OFFLINE_AFTER_MS: i64 = 60_000;

/// The overview as the host serves it; fields a host may not send yet are optional.
#[derive(Deserialize)]
struct Overview {
    stages: Vec<StageJson>,
    #[serde(default)]
    devices: Option<BTreeMap<String, DeviceJson>>,
    #[serde(default)]
    alerts: AlertsJson,
}

#[derive(Deserialize)]
struct StageJson {
    name: String,
    kind: String,
    component: String,
    #[serde(default)]
    events_in: u64,
    #[serde(default)]
    events_out: u64,
    #[serde(default)]
    rate_in: f64,
    #[serde(default)]
    rate_out: f64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    dead_lettered: u64,
    #[serde(default)]
    queue_depth: u64,
    /// Mean plugin call (or batch) time over the host's last sample; absent from older
    /// hosts and null when nothing was called.
    #[serde(default)]
    call_ms: Option<f64>,
}

#[derive(Deserialize)]
struct DeviceJson {
    group: String,
    last_seen_ms: Option<i64>,
    applied: Option<String>,
    offered: Option<String>,
    heartbeat: Option<HeartbeatJson>,
}

#[derive(Deserialize)]
struct HeartbeatJson {
    received_ms: i64,
}

#[derive(Default, Deserialize)]
struct AlertsJson {
    #[serde(default)]
    firing: Vec<serde_json::Value>,
}

/// One stage as shown: its counters, and rates from the two newest polls.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRow {
    pub name: String,
    pub kind: String,
    pub component: String,
    pub rate_in: f64,
    pub rate_out: f64,
    pub errors: u64,
    /// None until two polls have been seen.
    pub errors_per_sec: Option<f64>,
    pub dead_lettered: u64,
    pub dead_per_sec: Option<f64>,
    pub queue_depth: u64,
    pub call_ms: Option<f64>,
    /// Errors or dead letters grew since the previous poll.
    pub failing: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub group: String,
    /// The newest of its last poll and its last heartbeat.
    pub last_contact_ms: Option<i64>,
    pub online: bool,
    pub applied: Option<String>,
    pub offered: Option<String>,
}

/// The columns `s` cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Name,
    RateIn,
    RateOut,
    Errors,
    DeadLetters,
    Queue,
}

impl SortColumn {
    pub const ALL: [SortColumn; 6] = [
        SortColumn::Name,
        SortColumn::RateIn,
        SortColumn::RateOut,
        SortColumn::Errors,
        SortColumn::DeadLetters,
        SortColumn::Queue,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortColumn::Name => "name",
            SortColumn::RateIn => "in/s",
            SortColumn::RateOut => "out/s",
            SortColumn::Errors => "errors",
            SortColumn::DeadLetters => "dead",
            SortColumn::Queue => "queue",
        }
    }

    fn next(self) -> SortColumn {
        let at = SortColumn::ALL.iter().position(|c| *c == self).unwrap_or(0);
        SortColumn::ALL[(at + 1) % SortColumn::ALL.len()]
    }

    /// Names read A to Z; numbers biggest first, where trouble shows.
    fn ascending_by_default(self) -> bool {
        self == SortColumn::Name
    }
}

/// Counters of the previous poll, for the rates of the next.
struct Previous {
    at: Instant,
    counts: BTreeMap<String, [u64; 4]>,
}

/// Everything the screen shows except a tap.
pub struct Model {
    pub url: String,
    stages: Vec<StageRow>,
    pub devices: Option<Vec<DeviceRow>>,
    pub alerts_firing: usize,
    /// Wall-clock time (ms since the epoch) of the last successful poll.
    pub refreshed_ms: Option<i64>,
    /// Why the last poll failed, and when; cleared by the next success.
    pub error: Option<(i64, String)>,
    previous: Option<Previous>,
    pub sort: SortColumn,
    pub reversed: bool,
    selected: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// What the sources took in per second.
    pub rate_in: f64,
    /// What the sinks stored per second.
    pub rate_out: f64,
    pub errors: u64,
    pub dead_lettered: u64,
}

impl Model {
    pub fn new(url: &str) -> Model {
        Model {
            url: url.to_owned(),
            stages: Vec::new(),
            devices: None,
            alerts_firing: 0,
            refreshed_ms: None,
            error: None,
            previous: None,
            sort: SortColumn::Name,
            reversed: false,
            selected: None,
        }
    }

    /// Take a poll's overview, received at `at` (`now_ms` on the wall clock).
    pub fn apply(
        &mut self,
        overview: serde_json::Value,
        at: Instant,
        now_ms: i64,
    ) -> Result<(), serde_json::Error> {
        let overview: Overview = serde_json::from_value(overview)?;
        let previous = self.previous.take();
        let elapsed = previous
            .as_ref()
            .map(|p| at.saturating_duration_since(p.at).as_secs_f64())
            .filter(|secs| *secs > 0.0);
        let mut counts = BTreeMap::new();
        self.stages = overview
            .stages
            .into_iter()
            .map(|stage| {
                let now = [
                    stage.events_in,
                    stage.events_out,
                    stage.errors,
                    stage.dead_lettered,
                ];
                counts.insert(stage.name.clone(), now);
                let was = previous.as_ref().and_then(|p| p.counts.get(&stage.name));
                // A counter that went down (the host restarted) counts from zero.
                let rate = |i: usize| {
                    let (was, secs) = (was?, elapsed?);
                    Some(now[i].saturating_sub(was[i]) as f64 / secs)
                };
                let grew = |i: usize| was.is_some_and(|was| now[i] > was[i]);
                StageRow {
                    rate_in: rate(0).unwrap_or(stage.rate_in),
                    rate_out: rate(1).unwrap_or(stage.rate_out),
                    errors_per_sec: rate(2),
                    dead_per_sec: rate(3),
                    failing: grew(2) || grew(3),
                    name: stage.name,
                    kind: stage.kind,
                    component: stage.component,
                    errors: stage.errors,
                    dead_lettered: stage.dead_lettered,
                    queue_depth: stage.queue_depth,
                    call_ms: stage.call_ms,
                }
            })
            .collect();
        self.previous = Some(Previous { at, counts });
        self.devices = overview.devices.map(|devices| {
            devices
                .into_iter()
                .map(|(id, device)| {
                    let heard = device.heartbeat.map(|beat| beat.received_ms);
                    let last_contact_ms = device.last_seen_ms.max(heard);
                    DeviceRow {
                        online: last_contact_ms.is_some_and(|ms| now_ms - ms <= OFFLINE_AFTER_MS),
                        id,
                        group: device.group,
                        last_contact_ms,
                        applied: device.applied,
                        offered: device.offered,
                    }
                })
                .collect()
        });
        self.alerts_firing = overview.alerts.firing.len();
        self.refreshed_ms = Some(now_ms);
        self.error = None;
        // The first row until a key chooses; again when the chosen stage is gone (a reload).
        let name = self.selected.as_deref();
        if !self
            .stages
            .iter()
            .any(|stage| Some(stage.name.as_str()) == name)
        {
            self.selected = self.rows().first().map(|row| row.name.clone());
        }
        Ok(())
    }

    /// A poll failed: say so, and keep showing the last data.
    pub fn failed(&mut self, error: String, now_ms: i64) {
        self.error = Some((now_ms, error));
    }

    /// The stages in the chosen order.
    pub fn rows(&self) -> Vec<&StageRow> {
        let mut rows: Vec<&StageRow> = self.stages.iter().collect();
        let number = |row: &StageRow| match self.sort {
            SortColumn::Name => 0.0,
            SortColumn::RateIn => row.rate_in,
            SortColumn::RateOut => row.rate_out,
            SortColumn::Errors => row.errors as f64,
            SortColumn::DeadLetters => row.dead_lettered as f64,
            SortColumn::Queue => row.queue_depth as f64,
        };
        let ascending = self.ascending();
        // Ties keep the host's (graph) order either way: the sort is stable.
        rows.sort_by(|a, b| {
            let (a, b) = if ascending { (a, b) } else { (b, a) };
            match self.sort {
                SortColumn::Name => a.name.cmp(&b.name),
                _ => number(a).total_cmp(&number(b)),
            }
        });
        rows
    }

    pub fn totals(&self) -> Totals {
        let sum = |kind: &str, rate: fn(&StageRow) -> f64| {
            self.stages
                .iter()
                .filter(|s| s.kind == kind)
                .map(rate)
                // Not `sum`, whose empty sum is -0.0.
                .fold(0.0, |sum, rate| sum + rate)
        };
        Totals {
            rate_in: sum("source", |s| s.rate_out),
            rate_out: sum("sink", |s| s.rate_out),
            errors: self.stages.iter().map(|s| s.errors).sum(),
            dead_lettered: self.stages.iter().map(|s| s.dead_lettered).sum(),
        }
    }

    /// The selected stage's place in [`Model::rows`].
    pub fn selected_index(&self) -> Option<usize> {
        let name = self.selected.as_deref()?;
        self.rows().iter().position(|row| row.name == name)
    }

    pub fn selected_stage(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    /// Move the selection `by` rows (down is positive), staying within the table.
    pub fn select(&mut self, by: isize) {
        let rows = self.rows();
        let Some(last) = rows.len().checked_sub(1) else {
            return;
        };
        let at = self.selected_index().unwrap_or(0);
        let to = at.saturating_add_signed(by).min(last);
        self.selected = Some(rows[to].name.clone());
    }

    /// The next sort column, in its natural direction.
    pub fn cycle_sort(&mut self) {
        self.sort = self.sort.next();
        self.reversed = false;
    }

    /// Whether the sort column reads smallest first (its indicator points up).
    pub fn ascending(&self) -> bool {
        self.sort.ascending_by_default() != self.reversed
    }

    pub fn reverse(&mut self) {
        self.reversed = !self.reversed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn stage(name: &str, kind: &str, counts: [u64; 4], queue: u64) -> serde_json::Value {
        json!({
            "name": name, "kind": kind, "component": "wasm", "inputs": [],
            "events_in": counts[0], "events_out": counts[1], "rate_in": 7.0, "rate_out": 7.0,
            "errors": counts[2], "dead_lettered": counts[3], "queue_depth": queue,
        })
    }

    fn overview(stages: Vec<serde_json::Value>) -> serde_json::Value {
        json!({ "stages": stages, "plugins": [], "models": [], "devices": null,
                "alerts": { "firing": [], "resolved": [] } })
    }

    #[test]
    fn rates_come_from_the_counters_of_two_polls_and_growth_marks_a_stage_failing() {
        let mut model = Model::new("http://h");
        let start = Instant::now();
        model
            .apply(
                overview(vec![stage("shape", "transform", [100, 90, 1, 0], 0)]),
                start,
                0,
            )
            .unwrap();
        let first = model.rows()[0].clone();
        assert_eq!(
            (first.rate_in, first.rate_out),
            (7.0, 7.0),
            "the host's own"
        );
        assert_eq!(first.errors_per_sec, None, "no rate from one poll");
        assert!(!first.failing);

        model
            .apply(
                overview(vec![stage("shape", "transform", [300, 250, 3, 0], 0)]),
                start + Duration::from_secs(2),
                2000,
            )
            .unwrap();
        let second = model.rows()[0].clone();
        assert_eq!((second.rate_in, second.rate_out), (100.0, 80.0));
        assert_eq!(second.errors_per_sec, Some(1.0));
        assert_eq!(second.dead_per_sec, Some(0.0));
        assert!(second.failing, "errors grew");

        model
            .apply(
                overview(vec![stage("shape", "transform", [300, 250, 3, 0], 0)]),
                start + Duration::from_secs(3),
                3000,
            )
            .unwrap();
        assert!(!model.rows()[0].failing, "no growth, no alarm");
    }

    #[test]
    fn every_sort_column_orders_the_rows_and_r_reverses_it() {
        let mut model = Model::new("http://h");
        let start = Instant::now();
        let stages = |scale: u64| {
            overview(vec![
                stage("b", "source", [0, 10 * scale, 0, 5], 2),
                stage("a", "transform", [30 * scale, 20 * scale, 9, 0], 0),
                stage("c", "sink", [20 * scale, 0, 1, 1], 7),
            ])
        };
        model.apply(stages(0), start, 0).unwrap();
        model
            .apply(stages(1), start + Duration::from_secs(1), 1000)
            .unwrap();
        let order = |model: &Model| {
            model
                .rows()
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        let mut seen = Vec::new();
        for _ in SortColumn::ALL {
            seen.push((model.sort, order(&model)));
            model.cycle_sort();
        }
        assert_eq!(
            seen,
            [
                (SortColumn::Name, vec!["a", "b", "c"]),
                (SortColumn::RateIn, vec!["a", "c", "b"]),
                (SortColumn::RateOut, vec!["a", "b", "c"]),
                (SortColumn::Errors, vec!["a", "c", "b"]),
                (SortColumn::DeadLetters, vec!["b", "c", "a"]),
                (SortColumn::Queue, vec!["c", "b", "a"]),
            ]
            .map(|(c, o)| (c, o.into_iter().map(String::from).collect()))
        );
        assert_eq!(model.sort, SortColumn::Name, "the cycle comes round");
        model.reverse();
        assert_eq!(order(&model), ["c", "b", "a"]);
    }

    #[test]
    fn the_selection_follows_its_stage_through_a_new_order_and_stays_in_the_table() {
        let mut model = Model::new("http://h");
        let stages = overview(vec![
            stage("b", "source", [0, 0, 0, 0], 0),
            stage("a", "sink", [0, 0, 0, 0], 0),
        ]);
        model.apply(stages, Instant::now(), 0).unwrap();
        assert_eq!(model.selected_stage(), Some("a"));
        model.select(5);
        assert_eq!(model.selected_stage(), Some("b"));
        model.reverse();
        assert_eq!(model.selected_index(), Some(0), "b moved to the top");
        model.select(-3);
        assert_eq!(model.selected_stage(), Some("b"));
    }

    #[test]
    fn call_time_is_absent_unless_the_host_measured_it() {
        let mut model = Model::new("http://h");
        let mut timed = stage("timed", "transform", [0, 0, 0, 0], 0);
        timed["call_ms"] = json!(0.25);
        let mut idle = stage("idle", "transform", [0, 0, 0, 0], 0);
        idle["call_ms"] = serde_json::Value::Null;
        let older = stage("older", "transform", [0, 0, 0, 0], 0);
        model
            .apply(overview(vec![timed, idle, older]), Instant::now(), 0)
            .unwrap();
        let calls: Vec<_> = model.rows().iter().map(|r| r.call_ms).collect();
        assert_eq!(calls, [None, None, Some(0.25)], "idle, older, timed");
    }

    #[test]
    fn totals_are_what_sources_take_in_and_sinks_store() {
        let mut model = Model::new("http://h");
        let start = Instant::now();
        let stages = |n: u64| {
            overview(vec![
                stage("in", "source", [0, 10 * n, 0, 0], 0),
                stage("mid", "transform", [10 * n, 10 * n, n, 0], 0),
                stage("out", "sink", [10 * n, 8 * n, 0, 2 * n], 0),
            ])
        };
        model.apply(stages(1), start, 0).unwrap();
        model
            .apply(stages(3), start + Duration::from_secs(2), 2000)
            .unwrap();
        assert_eq!(
            model.totals(),
            Totals {
                rate_in: 10.0,
                rate_out: 8.0,
                errors: 3,
                dead_lettered: 6
            }
        );
    }

    #[test]
    fn a_device_is_online_when_heard_from_within_a_minute_by_poll_or_heartbeat() {
        let mut model = Model::new("http://h");
        let mut body = overview(vec![]);
        body["devices"] = json!({
            "gw1": { "group": "gateways", "last_seen_ms": 1_000, "applied": "r1",
                     "heartbeat": { "received_ms": 95_000 } },
            "gw2": { "group": "gateways", "last_seen_ms": 20_000, "applied": "r1",
                     "offered": "r2", "heartbeat": null },
            "gw3": { "group": "gateways", "last_seen_ms": null },
        });
        model.apply(body, Instant::now(), 100_000).unwrap();
        let devices = model.devices.unwrap();
        let seen: Vec<_> = devices
            .iter()
            .map(|d| (d.id.as_str(), d.online, d.last_contact_ms))
            .collect();
        assert_eq!(
            seen,
            [
                ("gw1", true, Some(95_000)),
                ("gw2", false, Some(20_000)),
                ("gw3", false, None)
            ]
        );
    }

    #[test]
    fn a_failed_poll_keeps_the_last_data_until_the_next_success_clears_it() {
        let mut model = Model::new("http://h");
        model
            .apply(
                overview(vec![stage("a", "source", [0; 4], 0)]),
                Instant::now(),
                0,
            )
            .unwrap();
        model.failed("401 Unauthorized".into(), 1000);
        assert_eq!(model.rows().len(), 1);
        assert_eq!(model.error, Some((1000, "401 Unauthorized".into())));
        model
            .apply(
                overview(vec![stage("a", "source", [0; 4], 0)]),
                Instant::now(),
                2000,
            )
            .unwrap();
        assert_eq!(model.error, None);
    }
}
