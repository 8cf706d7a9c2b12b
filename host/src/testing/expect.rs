//! A test's expectations against what its pipeline did, each failure with a readable
//! diff: the expected and the actual payload, then field by field what differs.
//!
//! Payloads are compared as JSON values (a payload that is not JSON as a string), and
//! numbers by value: `31` and `31.0` are equal. A dead letter that no
//! `[[tests.dead_letters]]` entry expects fails the test: a plugin that refuses or
//! traps on an event shows there.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::{DeadLetterCheck, Expect, OutputCheck, Point, TestCase};
use crate::config::DEAD_LETTER;
use crate::event::Event;

/// Events listed, at most, under a failure.
const SHOWN: usize = 10;

/// One unmet expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What failed: `shape, event 1 of 1`, `score.alerts: count`.
    pub title: String,
    pub lines: Vec<String>,
}

/// Every expectation of `test` that `captured` does not meet.
pub fn check(test: &TestCase, captured: &BTreeMap<Point, Vec<Event>>) -> Vec<Failure> {
    let mut failures = Vec::new();
    for output in &test.outputs {
        let events = captured.get(&output.from).map(Vec::as_slice).unwrap_or(&[]);
        let values: Vec<Value> = events.iter().map(payload_value).collect();
        check_output(output, &values, &mut failures);
    }
    check_dead_letters(&test.dead_letters, captured, &mut failures);
    failures
}

/// The payload as JSON, or its text as a JSON string.
pub fn payload_value(event: &Event) -> Value {
    serde_json::from_slice(&event.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.payload).into_owned()))
}

fn check_output(output: &OutputCheck, actual: &[Value], failures: &mut Vec<Failure>) {
    let from = &output.from;
    let listed = match &output.expect {
        Expect::Events(expected) => Some(expected.len()),
        Expect::Fields(expected) => Some(expected.len()),
        Expect::Conditions(_) | Expect::Count => None,
    };
    if let Some(wanted) = output.count.or(listed)
        && wanted != actual.len()
    {
        let mut lines = vec![format!("expected {wanted} event(s), got {}", actual.len())];
        match &output.expect {
            Expect::Events(expected) => unmatched(expected, actual, &same, &mut lines),
            Expect::Fields(expected) => {
                let objects: Vec<Value> = expected.iter().cloned().map(Value::Object).collect();
                unmatched(&objects, actual, &has_fields, &mut lines);
            }
            Expect::Conditions(_) | Expect::Count => {
                list("actual", actual.iter(), &mut lines);
            }
        }
        failures.push(Failure {
            title: format!("{from}: count"),
            lines,
        });
        return;
    }
    let total = actual.len();
    let title = |index: usize| format!("{from}, event {} of {total}", index + 1);
    match &output.expect {
        Expect::Events(expected) => {
            for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
                if !same(expected, actual) {
                    let mut lines = both(expected, actual);
                    diff(expected, actual, "", false, &mut lines);
                    failures.push(Failure {
                        title: title(index),
                        lines,
                    });
                }
            }
        }
        Expect::Fields(expected) => {
            for (index, (fields, actual)) in expected.iter().zip(actual).enumerate() {
                let expected = Value::Object(fields.clone());
                if !has_fields(&expected, actual) {
                    let mut lines = vec![
                        format!("expected fields: {expected}"),
                        format!("actual:    {actual}"),
                    ];
                    diff(&expected, actual, "", true, &mut lines);
                    failures.push(Failure {
                        title: title(index),
                        lines,
                    });
                }
            }
        }
        Expect::Conditions(conditions) => {
            if actual.is_empty() && output.count.is_none() {
                failures.push(Failure {
                    title: format!("{from}: no events"),
                    lines: vec![format!(
                        "conditions need at least one event (or `count = 0`); none reached `{from}`"
                    )],
                });
            }
            let mut shown = 0;
            for (index, actual) in actual.iter().enumerate() {
                let missed: Vec<String> = conditions
                    .iter()
                    .filter(|condition| !condition.predicate.matches(actual))
                    .map(|condition| format!("does not match {}", condition.text))
                    .collect();
                if missed.is_empty() || shown == SHOWN {
                    continue;
                }
                shown += 1;
                let mut lines = vec![format!("actual:    {actual}")];
                lines.extend(missed);
                failures.push(Failure {
                    title: title(index),
                    lines,
                });
            }
        }
        Expect::Count => {}
    }
}

fn check_dead_letters(
    checks: &[DeadLetterCheck],
    captured: &BTreeMap<Point, Vec<Event>>,
    failures: &mut Vec<Failure>,
) {
    let dead: BTreeMap<&str, Vec<DeadLetter>> = captured
        .iter()
        .filter(|(at, _)| at.route.as_deref() == Some(DEAD_LETTER))
        .map(|(at, events)| {
            (
                at.stage.as_str(),
                events.iter().map(DeadLetter::read).collect(),
            )
        })
        .collect();
    for check in checks {
        let letters = dead
            .get(check.stage.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let matching: Vec<&DeadLetter> = letters.iter().filter(|letter| letter.is(check)).collect();
        let about = match &check.reason {
            Some(reason) => format!(
                "dead letters of {} with reason containing \"{reason}\"",
                check.stage
            ),
            None => format!("dead letters of {}", check.stage),
        };
        let wrong_count = match check.count {
            Some(count) => matching.len() != count,
            None => matching.is_empty(),
        };
        if wrong_count {
            let wanted = check
                .count
                .map_or("at least 1".to_owned(), |count| count.to_string());
            let mut lines = vec![format!("expected {wanted}, got {}", matching.len())];
            let all = letters.iter().map(DeadLetter::describe);
            lines.extend(
                all.clone()
                    .take(SHOWN)
                    .map(|line| format!("  dead letter: {line}")),
            );
            if letters.len() > SHOWN {
                lines.push(format!("  ... and {} more", letters.len() - SHOWN));
            }
            failures.push(Failure {
                title: about,
                lines,
            });
            continue;
        }
        let Some(fields) = &check.fields else {
            continue;
        };
        for (index, (fields, letter)) in fields.iter().zip(&matching).enumerate() {
            let expected = Value::Object(fields.clone());
            if !has_fields(&expected, &letter.payload) {
                let mut lines = vec![
                    format!("expected fields: {expected}"),
                    format!("actual:    {}", letter.payload),
                ];
                diff(&expected, &letter.payload, "", true, &mut lines);
                failures.push(Failure {
                    title: format!("{about}, dead letter {} of {}", index + 1, matching.len()),
                    lines,
                });
            }
        }
    }
    for (stage, letters) in &dead {
        let unexpected: Vec<&DeadLetter> = letters
            .iter()
            .filter(|letter| {
                !checks
                    .iter()
                    .any(|check| check.stage == *stage && letter.is(check))
            })
            .collect();
        if unexpected.is_empty() {
            continue;
        }
        let mut lines: Vec<String> = unexpected
            .iter()
            .take(SHOWN)
            .map(|letter| letter.describe())
            .collect();
        if unexpected.len() > SHOWN {
            lines.push(format!("... and {} more", unexpected.len() - SHOWN));
        }
        failures.push(Failure {
            title: format!("unexpected dead letters of {stage} ({})", unexpected.len()),
            lines,
        });
    }
}

/// A dead-letter record, read back: why, and the original payload.
struct DeadLetter {
    reason: String,
    payload: Value,
}

impl DeadLetter {
    fn read(event: &Event) -> DeadLetter {
        let record = payload_value(event);
        let reason = record["reason"].as_str().unwrap_or_default().to_owned();
        // The original payload is kept as text when it was UTF-8.
        let payload = match (&record["payload"], record["payload_encoding"].as_str()) {
            (Value::String(text), Some("utf8")) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            (other, _) => other.clone(),
        };
        DeadLetter { reason, payload }
    }

    fn is(&self, check: &DeadLetterCheck) -> bool {
        check
            .reason
            .as_ref()
            .is_none_or(|reason| self.reason.contains(reason.as_str()))
    }

    fn describe(&self) -> String {
        format!("{} (payload {})", self.reason, self.payload)
    }
}

/// Under a count mismatch: the expected events no actual one meets, and the actual
/// events that meet no expected one.
fn unmatched(
    expected: &[Value],
    actual: &[Value],
    meets: &dyn Fn(&Value, &Value) -> bool,
    lines: &mut Vec<String>,
) {
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    for wanted in expected {
        match (0..actual.len()).find(|&i| !used[i] && meets(wanted, &actual[i])) {
            Some(i) => used[i] = true,
            None => missing.push(wanted),
        }
    }
    let extra = actual
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(value, _)| value);
    list("expected, not seen", missing.into_iter(), lines);
    list("seen, not expected", extra, lines);
}

fn list<'v>(label: &str, values: impl Iterator<Item = &'v Value>, lines: &mut Vec<String>) {
    let values: Vec<&Value> = values.collect();
    if values.is_empty() {
        return;
    }
    lines.push(format!("{label}:"));
    lines.extend(values.iter().take(SHOWN).map(|value| format!("  {value}")));
    if values.len() > SHOWN {
        lines.push(format!("  ... and {} more", values.len() - SHOWN));
    }
}

fn both(expected: &Value, actual: &Value) -> Vec<String> {
    vec![
        format!("expected:  {expected}"),
        format!("actual:    {actual}"),
    ]
}

/// Equal as JSON, numbers by value.
fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| same(a, b)))
        }
        _ => expected == actual,
    }
}

/// `actual` has every field of `expected` (recursively in objects), with its value.
fn has_fields(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(wanted), Value::Object(actual)) => wanted.iter().all(|(key, wanted)| {
            actual
                .get(key)
                .is_some_and(|actual| has_fields(wanted, actual))
        }),
        _ => same(expected, actual),
    }
}

/// What differs, field by field (dotted paths); with `subset`, fields only in `actual`
/// are fine.
fn diff(expected: &Value, actual: &Value, path: &str, subset: bool, lines: &mut Vec<String>) {
    let (Value::Object(expected), Value::Object(actual)) = (expected, actual) else {
        if !path.is_empty() && !same(expected, actual) {
            lines.push(format!("field {path}: expected {expected}, got {actual}"));
        }
        return;
    };
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    for (key, wanted) in expected {
        match actual.get(key) {
            None => lines.push(format!("field {}: missing (expected {wanted})", at(key))),
            Some(got) if subset && has_fields(wanted, got) => {}
            Some(got) if !subset && same(wanted, got) => {}
            Some(got) => diff(wanted, got, &at(key), subset, lines),
        }
    }
    if !subset {
        let extra = actual.keys().filter(|key| !expected.contains_key(*key));
        lines.extend(extra.map(|key| format!("field {}: not expected", at(key))));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object: {value}"),
        }
    }

    #[test]
    fn a_payload_diff_names_each_field_that_differs_and_each_one_not_expected() {
        let mut lines = Vec::new();
        let expected = json!({"device_id": "d1", "temperature_c": 31.0});
        let actual = json!({"device_id": "d1", "site": "plant-1", "temperature_c": 30.5});
        diff(&expected, &actual, "", false, &mut lines);
        assert_eq!(
            lines,
            [
                "field temperature_c: expected 31.0, got 30.5",
                "field site: not expected"
            ]
        );
    }

    #[test]
    fn numbers_are_equal_by_value_and_fields_are_a_subset() {
        assert!(same(&json!({"n": 31}), &json!({"n": 31.0})));
        assert!(!same(&json!({"n": 31}), &json!({"n": 31, "m": 1})));
        assert!(has_fields(
            &json!({"a": {"b": 1}}),
            &json!({"a": {"b": 1.0, "c": 2}, "d": 3})
        ));
        assert!(!has_fields(
            &json!({"a": {"b": 1}}),
            &json!({"a": {"c": 2}})
        ));
        let mut lines = Vec::new();
        diff(
            &json!({"a": {"b": 1}}),
            &json!({"a": {"c": 2}}),
            "",
            true,
            &mut lines,
        );
        assert_eq!(lines, ["field a.b: missing (expected 1)"]);
    }

    #[test]
    fn a_count_mismatch_shows_both_counts_and_the_unmatched_events() {
        let output = OutputCheck {
            from: Point {
                stage: "shape".into(),
                route: None,
            },
            expect: Expect::Fields(vec![object(json!({"id": 1})), object(json!({"id": 2}))]),
            count: None,
        };
        let mut failures = Vec::new();
        check_output(
            &output,
            &[json!({"id": 2, "x": 0}), json!({"id": 3}), json!({"id": 4})],
            &mut failures,
        );
        assert_eq!(
            failures,
            [Failure {
                title: "shape: count".into(),
                lines: vec![
                    "expected 2 event(s), got 3".into(),
                    "expected, not seen:".into(),
                    "  {\"id\":1}".into(),
                    "seen, not expected:".into(),
                    "  {\"id\":3}".into(),
                    "  {\"id\":4}".into(),
                ],
            }]
        );
    }
}
