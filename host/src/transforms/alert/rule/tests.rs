//! The state machine on a clock the tests drive: one reading per call, timer checks
//! where a running stage would make them.

use serde_json::json;

use super::*;

fn rule(hold: u64, resolve_after: u64, repeat: Option<u64>) -> Rule {
    Rule {
        name: "overheating".into(),
        when: Some(serde_json::from_value(json!({"field": "temperature", "gt": 80})).unwrap()),
        key_field: "device_id".into(),
        value_field: Some("temperature".into()),
        labels: BTreeMap::from([("severity".into(), "page".into())]),
        hold: Duration::from_secs(hold),
        resolve_after: Duration::from_secs(resolve_after),
        repeat_interval: repeat.map(Duration::from_secs),
    }
}

/// A rule's tracks, and the payloads of every alert emitted so far.
struct Machine {
    rule: Rule,
    tracks: BTreeMap<String, Track>,
    emitted: Vec<Value>,
}

impl Machine {
    fn new(rule: Rule) -> Machine {
        Machine { rule, tracks: BTreeMap::new(), emitted: Vec::new() }
    }

    fn take(&mut self, changes: Changes) {
        for (key, status, track) in changes.alerts {
            self.emitted.push(self.rule.payload(&key, status, &track));
        }
    }

    /// A reading of `device` at `second`, then the timer check of that second.
    fn reading(&mut self, second: i64, device: &str, temperature: f64) {
        let payload = json!({"device_id": device, "temperature": temperature}).to_string();
        let observation = self.rule.observe(payload.as_bytes()).unwrap();
        let mut changes = Changes::default();
        self.rule.apply(&mut self.tracks, observation, second * 1000, &mut changes);
        self.take(changes);
        self.check(second);
    }

    fn check(&mut self, second: i64) {
        let mut changes = Changes::default();
        self.rule.check(&mut self.tracks, second * 1000, &mut changes);
        self.take(changes);
    }

    fn statuses(&self) -> Vec<&str> {
        self.emitted.iter().map(|alert| alert["status"].as_str().unwrap()).collect()
    }
}

#[test]
fn a_flapping_reading_fires_once_and_resolves_once() {
    let mut machine = Machine::new(rule(0, 5, None));
    for second in 0..20 {
        let temperature = if second % 2 == 0 { 85.0 } else { 75.0 };
        machine.reading(second, "gw1", temperature + second as f64 / 100.0);
    }
    assert_eq!(machine.statuses(), ["firing"]);
    for second in 20..30 {
        machine.reading(second, "gw1", 70.0);
    }
    assert_eq!(machine.statuses(), ["firing", "resolved"]);
    let resolved = &machine.emitted[1];
    assert_eq!(
        *resolved,
        json!({
            "alert": "overheating", "status": "resolved", "key": "gw1",
            "labels": {"device_id": "gw1", "severity": "page"},
            "first_value": 85.0, "last_value": 85.18,
            "starts_at": "1970-01-01T00:00:00.000Z",
            // The last active reading (second 18) and five quiet seconds.
            "ends_at": "1970-01-01T00:00:23.000Z",
            "count": 10,
        })
    );
    assert_eq!(machine.emitted[0]["ends_at"], Value::Null);
    assert!(machine.tracks.is_empty(), "a resolved key is forgotten");
}

#[test]
fn for_holds_back_short_blips_and_fires_a_steady_condition_without_more_events() {
    let mut machine = Machine::new(rule(3, 10, None));
    // Hot for two seconds, then a clear reading: pending is forgotten.
    machine.reading(0, "gw1", 90.0);
    machine.reading(2, "gw1", 90.0);
    machine.reading(3, "gw1", 20.0);
    assert!(machine.emitted.is_empty());
    assert!(machine.tracks.is_empty(), "a clear reading resets pending");
    // Hot from second 10; one more reading at 11, then silence: the timer fires it at 13.
    machine.reading(10, "gw1", 91.0);
    machine.reading(11, "gw1", 92.0);
    machine.check(12);
    assert!(machine.emitted.is_empty(), "not yet three seconds");
    machine.check(13);
    assert_eq!(machine.statuses(), ["firing"]);
    assert_eq!(machine.emitted[0]["starts_at"], "1970-01-01T00:00:10.000Z");
    assert_eq!(
        (machine.emitted[0]["first_value"].as_f64(), machine.emitted[0]["count"].as_u64()),
        (Some(91.0), Some(2))
    );
}

#[test]
fn resolve_after_counts_from_the_last_active_reading() {
    let mut machine = Machine::new(rule(0, 5, None));
    machine.reading(0, "gw1", 90.0);
    machine.reading(4, "gw1", 90.0);
    machine.check(8);
    assert_eq!(machine.statuses(), ["firing"], "four quiet seconds of five");
    machine.check(9);
    assert_eq!(machine.statuses(), ["firing", "resolved"]);
    // A reading after a quiet spell the checks did not see (a host that was down)
    // ends the old episode before it starts a new one.
    machine.reading(20, "gw1", 95.0);
    machine.reading(40, "gw1", 96.0);
    assert_eq!(machine.statuses(), ["firing", "resolved", "firing", "resolved", "firing"]);
    assert_eq!(machine.emitted[3]["ends_at"], "1970-01-01T00:00:25.000Z");
}

#[test]
fn a_pending_key_that_goes_quiet_is_forgotten_without_firing() {
    let mut machine = Machine::new(rule(10, 5, None));
    machine.reading(0, "gw1", 90.0);
    machine.check(5);
    assert!(machine.tracks.is_empty());
    machine.check(20);
    assert!(machine.emitted.is_empty());
}

#[test]
fn repeat_interval_sends_firing_again_while_active() {
    let mut machine = Machine::new(rule(0, 5, Some(10)));
    for second in 0..=25 {
        machine.reading(second, "gw1", 90.0);
    }
    assert_eq!(machine.statuses(), ["firing", "firing", "firing"]);
    let counts: Vec<u64> = machine.emitted.iter().map(|a| a["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 11, 21]);
    for second in 26..40 {
        machine.check(second);
    }
    assert_eq!(machine.statuses(), ["firing", "firing", "firing", "resolved"]);
}

#[test]
fn keys_are_deduplicated_apart() {
    let mut machine = Machine::new(rule(0, 5, None));
    for second in 0..3 {
        machine.reading(second, "gw1", 90.0);
        machine.reading(second, "gw2", 90.0);
    }
    let keys: Vec<&str> = machine.emitted.iter().map(|a| a["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["gw1", "gw2"]);
}

#[test]
fn events_without_the_key_or_json_cannot_be_observed() {
    let rule = rule(0, 5, None);
    assert_eq!(
        rule.observe(br#"{"temperature": 99}"#),
        Err(Unobservable::NoKey("device_id".into()))
    );
    assert!(matches!(rule.observe(b"hot"), Err(Unobservable::NotJson(_))));
    // A number keys as its text; without a condition everything is active.
    let everything = Rule { when: None, key_field: "unit.id".into(), value_field: None, ..rule };
    let observation = everything.observe(br#"{"unit": {"id": 7}, "score": 0.1}"#).unwrap();
    assert_eq!(
        observation,
        Observation { key: "7".into(), active: true, value: json!({"unit": {"id": 7}, "score": 0.1}) }
    );
}

#[test]
fn times_are_rfc3339_in_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339(1_790_000_000_000), "2026-09-21T14:13:20.000Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
}
