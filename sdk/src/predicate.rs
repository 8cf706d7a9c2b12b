//! Field predicates over JSON payloads, shared by the filter and router plugins.
//!
//! In config a predicate is an object: `{"field": "temperature", "gt": 80}`, or a
//! combination `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}`. Comparison
//! operators: `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in` (a list), `contains`
//! (substring or array element), `exists` (true/false).

use serde_json::Value;

use crate::json::{self, RawObject};

/// A parsed predicate. Deserialize it from config; errors name the offending part.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(try_from = "Value")]
pub enum Predicate {
    All(Vec<Predicate>),
    Any(Vec<Predicate>),
    Not(Box<Predicate>),
    Field { path: String, test: Test },
}

/// A test of one field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Eq(Value),
    Ne(Value),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    In(Vec<Value>),
    Contains(Value),
    Exists(bool),
}

const OPERATORS: &str = "eq, ne, gt, gte, lt, lte, in, contains, exists";

impl TryFrom<Value> for Predicate {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let Value::Object(mut object) = value else {
            return Err(format!(
                "a predicate must be an object, found {}",
                json::type_name(&value)
            ));
        };
        for combinator in ["all", "any"] {
            if let Some(list) = object.remove(combinator) {
                let Value::Array(items) = list else {
                    return Err(format!("`{combinator}` takes a list of predicates"));
                };
                let items = items
                    .into_iter()
                    .map(Predicate::try_from)
                    .collect::<Result<_, _>>()?;
                return Ok(if combinator == "all" {
                    Predicate::All(items)
                } else {
                    Predicate::Any(items)
                });
            }
        }
        if let Some(inner) = object.remove("not") {
            return Ok(Predicate::Not(Box::new(Predicate::try_from(inner)?)));
        }
        let path = match object.remove("field") {
            Some(Value::String(path)) if !path.is_empty() => path,
            Some(other) => {
                return Err(format!("`field` must be a non-empty string, found {other}"));
            }
            None => return Err("a predicate needs `field` (or `all`, `any`, `not`)".to_owned()),
        };
        let mut entries = object.into_iter();
        let (operator, operand) = entries.next().ok_or_else(|| {
            format!("predicate on `{path}` has no operator; use one of {OPERATORS}")
        })?;
        if let Some((extra, _)) = entries.next() {
            return Err(format!(
                "predicate on `{path}` has two operators (`{operator}`, `{extra}`)"
            ));
        }
        let number = |operand: &Value| {
            operand
                .as_f64()
                .ok_or_else(|| format!("`{operator}` on `{path}` takes a number, found {operand}"))
        };
        let test = match operator.as_str() {
            "eq" => Test::Eq(operand),
            "ne" => Test::Ne(operand),
            "gt" => Test::Gt(number(&operand)?),
            "gte" => Test::Gte(number(&operand)?),
            "lt" => Test::Lt(number(&operand)?),
            "lte" => Test::Lte(number(&operand)?),
            "contains" => Test::Contains(operand),
            "in" => match operand {
                Value::Array(items) => Test::In(items),
                other => return Err(format!("`in` on `{path}` takes a list, found {other}")),
            },
            "exists" => match operand {
                Value::Bool(flag) => Test::Exists(flag),
                other => {
                    return Err(format!(
                        "`exists` on `{path}` takes true or false, found {other}"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "unknown operator `{other}` on `{path}`; use one of {OPERATORS}"
                ));
            }
        };
        Ok(Predicate::Field { path, test })
    }
}

impl Predicate {
    /// Whether `payload` satisfies the predicate. A missing field fails every test but
    /// `ne` and `exists: false`.
    pub fn matches(&self, payload: &Value) -> bool {
        match self {
            Predicate::All(items) => items.iter().all(|p| p.matches(payload)),
            Predicate::Any(items) => items.iter().any(|p| p.matches(payload)),
            Predicate::Not(inner) => !inner.matches(payload),
            Predicate::Field { path, test } => test.matches(json::get(payload, path)),
        }
    }

    /// [`Predicate::matches`] over a payload's text (`None`: valid JSON that is not an
    /// object, which has no fields): only the fields tested are read, numbers straight
    /// from their text.
    pub fn matches_raw(&self, payload: Option<&RawObject<'_>>) -> bool {
        match self {
            Predicate::All(items) => items.iter().all(|p| p.matches_raw(payload)),
            Predicate::Any(items) => items.iter().any(|p| p.matches_raw(payload)),
            Predicate::Not(inner) => !inner.matches_raw(payload),
            Predicate::Field { path, test } => {
                test.matches_text(payload.and_then(|object| object.get(path)).as_deref())
            }
        }
    }
}

impl Test {
    /// [`Test::matches`] on a field's JSON text.
    fn matches_text(&self, text: Option<&str>) -> bool {
        let number = || {
            text.filter(|t| t.starts_with(|c: char| c == '-' || c.is_ascii_digit()))
                .and_then(|t| t.parse::<f64>().ok())
        };
        match self {
            Test::Exists(expected) => text.is_some() == *expected,
            Test::Gt(limit) => number().is_some_and(|n| n > *limit),
            Test::Gte(limit) => number().is_some_and(|n| n >= *limit),
            Test::Lt(limit) => number().is_some_and(|n| n < *limit),
            Test::Lte(limit) => number().is_some_and(|n| n <= *limit),
            _ => {
                let value = text.and_then(|t| serde_json::from_str::<Value>(t).ok());
                self.matches(value.as_ref())
            }
        }
    }

    fn matches(&self, value: Option<&Value>) -> bool {
        let number = || value.and_then(Value::as_f64);
        match self {
            Test::Exists(expected) => value.is_some() == *expected,
            Test::Eq(expected) => value.is_some_and(|v| loosely_equal(v, expected)),
            Test::Ne(expected) => !value.is_some_and(|v| loosely_equal(v, expected)),
            Test::Gt(limit) => number().is_some_and(|n| n > *limit),
            Test::Gte(limit) => number().is_some_and(|n| n >= *limit),
            Test::Lt(limit) => number().is_some_and(|n| n < *limit),
            Test::Lte(limit) => number().is_some_and(|n| n <= *limit),
            Test::In(options) => value.is_some_and(|v| options.iter().any(|o| loosely_equal(v, o))),
            Test::Contains(needle) => match (value, needle) {
                (Some(Value::String(text)), Value::String(part)) => text.contains(part.as_str()),
                (Some(Value::Array(items)), needle) => {
                    items.iter().any(|i| loosely_equal(i, needle))
                }
                _ => false,
            },
        }
    }
}

/// Equality where numbers compare by value (`1` equals `1.0`).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Predicate, String> {
        Predicate::try_from(value)
    }

    #[test]
    fn comparisons_and_combinators() {
        let hot = parse(json!({"field": "t", "gt": 80})).unwrap();
        assert!(hot.matches(&json!({"t": 81})));
        assert!(!hot.matches(&json!({"t": 80})));
        assert!(!hot.matches(&json!({})));
        let either =
            parse(json!({"any": [{"field": "t", "gt": 80}, {"field": "kind", "eq": "alarm"}]}))
                .unwrap();
        assert!(either.matches(&json!({"t": 1, "kind": "alarm"})));
        let not = parse(json!({"not": {"field": "a.b", "exists": true}})).unwrap();
        assert!(not.matches(&json!({"a": {}})));
        assert!(
            parse(json!({"field": "x", "in": [1, 2]}))
                .unwrap()
                .matches(&json!({"x": 2.0}))
        );
    }

    #[test]
    fn raw_payloads_match_as_parsed_ones_do() {
        let predicates = [
            json!({"field": "t", "gt": 80}),
            json!({"field": "t", "lte": 80.5}),
            json!({"field": "a.b", "exists": true}),
            json!({"field": "kind", "eq": "alarm"}),
            json!({"field": "kind", "ne": "alarm"}),
            json!({"field": "tags", "contains": "x"}),
            json!({"field": "n", "in": [1, 2]}),
            json!({"not": {"any": [{"field": "t", "lt": 0}, {"field": "a.b", "eq": 1}]}}),
        ];
        let payloads = [
            r#"{"t": 81, "kind": "alarm", "tags": ["x"], "n": 2.0, "a": {"b": 1}}"#,
            r#"{"t": 80.5, "kind": "info", "tags": "xyz", "n": 3}"#,
            r#"{"t": "90", "a": {"b": null}}"#,
            r#"{"t": -1e1}"#,
            r#"[1, 2]"#,
        ];
        for predicate in predicates {
            let predicate = parse(predicate).unwrap();
            for payload in payloads {
                let parsed: Value = serde_json::from_str(payload).unwrap();
                let raw = RawObject::parse_document(payload).unwrap();
                assert_eq!(
                    predicate.matches_raw(raw.as_ref()),
                    predicate.matches(&parsed),
                    "{predicate:?} on {payload}"
                );
            }
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse(json!({"field": "t", "greater": 1})).unwrap_err(),
            "unknown operator `greater` on `t`; use one of eq, ne, gt, gte, lt, lte, in, contains, exists"
        );
        assert_eq!(
            parse(json!({"field": "t", "gt": "hot"})).unwrap_err(),
            "`gt` on `t` takes a number, found \"hot\""
        );
        assert!(
            parse(json!({"gt": 1}))
                .unwrap_err()
                .contains("needs `field`")
        );
    }
}
