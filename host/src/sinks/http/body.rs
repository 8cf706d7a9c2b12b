//! The body of a webhook request: a JSON template with `{{field}}` placeholders over the
//! event's JSON payload, rendered so that the result is always JSON, whatever the
//! fields hold.
//!
//! Double braces, because a JSON template is full of single ones. Where a placeholder
//! stands decides what it becomes:
//! - **outside a string** (`"labels": {{labels}}`) it is the field's JSON value: a
//!   string quoted and escaped, a number, a boolean, an object or an array as it is, and
//!   `null` when the payload has no such field;
//! - **inside a string** (`"text": "{{alert}} on {{key}}"`) it is the field's text,
//!   escaped for a JSON string: a string without its quotes, anything else as JSON
//!   text, and nothing for a missing or null field.
//!
//! A field's text can therefore never close a string or add a member: an alert whose
//! name holds `"` or `\n` stays one string.
//!
//! A placeholder may translate values: `{{status: firing=trigger, resolved=resolve}}`
//! is `trigger` where `status` is `firing`, `resolve` where it is `resolved`, and the
//! field itself otherwise (so that a receiver refuses what nobody mapped, visibly). One
//! sink can then speak a receiver's vocabulary (PagerDuty's `event_action`) without
//! splitting the stream, which would let a `resolve` overtake its `trigger`.

use serde::de::IgnoredAny;

use crate::event::Event;
use crate::template;

/// A body template that parses, and whose every rendering is JSON.
#[derive(Debug)]
pub struct BodyTemplate {
    parts: Vec<Part>,
    /// The payload's top-level fields the placeholders read.
    fields: Vec<String>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    /// A placeholder outside a string: the field's JSON value.
    Value(Field),
    /// A placeholder inside a string: the field's text, escaped.
    InString(Field),
}

#[derive(Debug)]
struct Field {
    /// The dotted path inside `{{...}}`.
    path: String,
    /// `value=replacement` pairs after a `:`.
    map: Vec<(String, String)>,
    /// How many characters the placeholder takes in the template, braces included.
    width: usize,
}

impl Field {
    /// `path` or `path: a=b, c=d`; `None` when a pair has no `=` or a side is empty.
    fn parse(inside: &str, width: usize) -> Option<Field> {
        let (path, map) = inside.split_once(':').unwrap_or((inside, ""));
        let map = map
            .split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| {
                let (from, to) = pair.split_once('=')?;
                let (from, to) = (from.trim(), to.trim());
                (!from.is_empty() && !to.is_empty()).then(|| (from.to_owned(), to.to_owned()))
            })
            .collect::<Option<_>>()?;
        let path = path.trim();
        (!path.is_empty()).then(|| Field {
            path: path.to_owned(),
            map,
            width,
        })
    }

    /// The field's value in `payload`, translated by the map.
    fn value<'a>(&'a self, payload: &'a serde_json::Value) -> Option<std::borrow::Cow<'a, serde_json::Value>> {
        use std::borrow::Cow;
        let value = template::field(Some(payload), &self.path)?;
        let text = match value {
            serde_json::Value::String(text) => Cow::Borrowed(text.as_str()),
            other => Cow::Owned(other.to_string()),
        };
        Some(match self.map.iter().find(|(from, _)| *from == text) {
            Some((_, to)) => Cow::Owned(serde_json::Value::from(to.as_str())),
            None => Cow::Borrowed(value),
        })
    }
}

/// Why a body template cannot be used, with where (1-based line and column).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("`body` has an unclosed `{{{{` at line {line}, column {column}")]
    Unclosed { line: usize, column: usize },
    #[error(
        "`body` has a placeholder at line {line}, column {column} that is neither `{{{{field}}}}` nor `{{{{field: value=replacement, ...}}}}`"
    )]
    Placeholder { line: usize, column: usize },
    #[error("`body` is not JSON at line {line}, column {column}: {message}")]
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
}

/// Why one event's body cannot be made; the event becomes a dead letter with this.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("the payload is not a JSON object, so `body` has no fields to take")]
    NotAnObject,
    #[error("the payload is not JSON, so it cannot be an element of a batch's JSON array")]
    NotJson,
}

impl BodyTemplate {
    pub fn parse(text: &str) -> Result<BodyTemplate, BodyError> {
        let at = |offset: usize| line_column(text, offset);
        let mut parts = Vec::new();
        let mut literal = String::new();
        let (mut in_string, mut escaped) = (false, false);
        let mut rest = text.char_indices().peekable();
        while let Some((offset, c)) = rest.next() {
            if c == '{' && text[offset..].starts_with("{{") {
                let close = text[offset + 2..]
                    .find("}}")
                    .map(|close| offset + 2 + close)
                    .ok_or_else(|| {
                        let (line, column) = at(offset);
                        BodyError::Unclosed { line, column }
                    })?;
                let width = text[offset..close + 2].chars().count();
                let field = Field::parse(&text[offset + 2..close], width).ok_or_else(|| {
                    let (line, column) = at(offset);
                    BodyError::Placeholder { line, column }
                })?;
                parts.push(Part::Text(std::mem::take(&mut literal)));
                parts.push(if in_string {
                    Part::InString(field)
                } else {
                    Part::Value(field)
                });
                while rest.next_if(|(next, _)| *next < close + 2).is_some() {}
                escaped = false;
                continue;
            }
            literal.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                _ => {}
            }
        }
        parts.push(Part::Text(literal));
        parts.retain(|part| !matches!(part, Part::Text(text) if text.is_empty()));
        let fields = template::top_level_names(parts.iter().filter_map(|part| match part {
            Part::Value(field) | Part::InString(field) => Some(field.path.as_str()),
            Part::Text(_) => None,
        }));
        let body = BodyTemplate { parts, fields };
        body.check_json()?;
        Ok(body)
    }

    /// The template with every placeholder as a value of its own width (`null` padded,
    /// or text), so that JSON's complaint points at the template's own line and column.
    fn check_json(&self) -> Result<(), BodyError> {
        let sample = self.render_with(|part| match part {
            Part::Value(field) => format!("{:<width$}", "null", width = field.width),
            Part::InString(field) => "x".repeat(field.width),
            Part::Text(_) => unreachable!("text renders as itself"),
        });
        serde_json::from_str::<IgnoredAny>(&sample)
            .map(drop)
            .map_err(|error| BodyError::NotJson {
                line: error.line(),
                column: error.column(),
                message: error.to_string().split(" at line").next().unwrap_or("").to_owned(),
            })
    }

    /// The body for `event`.
    pub fn render(&self, event: &Event) -> Result<String, RenderError> {
        if self.fields.is_empty() {
            return Ok(self.render_with(|_| String::new()));
        }
        let payload =
            template::payload_fields(event, &self.fields).ok_or(RenderError::NotAnObject)?;
        Ok(self.render_with(|part| match part {
            Part::Value(field) => field
                .value(&payload)
                .map_or_else(|| "null".to_owned(), |value| value.to_string()),
            Part::InString(field) => match field.value(&payload).as_deref() {
                Some(serde_json::Value::Null) | None => String::new(),
                Some(serde_json::Value::String(text)) => escape(text),
                Some(other) => escape(&other.to_string()),
            },
            Part::Text(_) => unreachable!("text renders as itself"),
        }))
    }

    fn render_with(&self, mut placeholder: impl FnMut(&Part) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                field => out.push_str(&placeholder(field)),
            }
        }
        out
    }
}

/// `text` escaped for the inside of a JSON string.
fn escape(text: &str) -> String {
    let quoted = serde_json::Value::from(text).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// A batch's body: the events' bodies as one JSON array. An event's own payload (no
/// `body` template) must be JSON to be an element.
pub fn json_array<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (index, body) in bodies.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body);
    }
    out.push(b']');
    out
}

/// Whether `payload` is one JSON value (what [`json_array`] needs of an element).
pub fn one_json_value(payload: &[u8]) -> Result<(), RenderError> {
    serde_json::from_slice::<IgnoredAny>(payload)
        .map(drop)
        .map_err(|_| RenderError::NotJson)
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, payload: &str) -> serde_json::Value {
        let body = BodyTemplate::parse(template).unwrap();
        let text = body.render(&Event::new(payload.to_owned(), "t")).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn placeholders_outside_strings_are_json_values() {
        let rendered = render(
            r#"{"a": {{alert}}, "n": {{count}}, "l": {{labels}}, "e": {{ ends_at }}, "x": {{missing}}}"#,
            r#"{"alert":"over\"heat","count":3,"labels":{"d":"gw1"},"ends_at":null}"#,
        );
        assert_eq!(
            rendered,
            serde_json::json!({"a": "over\"heat", "n": 3, "l": {"d": "gw1"}, "e": null, "x": null})
        );
    }

    #[test]
    fn placeholders_inside_strings_are_escaped_text() {
        let rendered = render(
            r#"{"text": "{{alert}} on {{labels.device_id}}: {{last_value}} ({{missing}})", "{{key}}": 1}"#,
            r#"{"alert":"a\"}, \"evil\": {\n","labels":{"device_id":"gw\\1"},"last_value":81.5,"key":"k"}"#,
        );
        assert_eq!(
            rendered,
            serde_json::json!({"text": "a\"}, \"evil\": {\n on gw\\1: 81.5 ()", "k": 1})
        );
    }

    #[test]
    fn escaped_quotes_in_the_template_keep_the_string_open() {
        let rendered = render(r#"{"t": "say \"{{alert}}\""}"#, r#"{"alert":"hi"}"#);
        assert_eq!(rendered, serde_json::json!({"t": "say \"hi\""}));
    }

    #[test]
    fn a_placeholder_translates_the_values_it_maps() {
        let template = r#"{"action": {{status: firing=trigger, resolved=resolve}}, "t": "{{status:firing=on}}", "n": {{n: 1=one}}}"#;
        let render = |payload: &str| render(template, payload);
        assert_eq!(
            render(r#"{"status":"firing","n":1}"#),
            serde_json::json!({"action": "trigger", "t": "on", "n": "one"})
        );
        assert_eq!(
            render(r#"{"status":"resolved","n":2}"#),
            serde_json::json!({"action": "resolve", "t": "resolved", "n": 2})
        );
        assert_eq!(
            render(r#"{"status":"pending"}"#),
            serde_json::json!({"action": "pending", "t": "pending", "n": null})
        );
    }

    #[test]
    fn a_template_without_placeholders_is_sent_as_written() {
        let body = BodyTemplate::parse(r#"{"ping": true}"#).unwrap();
        assert_eq!(
            body.render(&Event::new(&b"not json"[..], "t")).unwrap(),
            r#"{"ping": true}"#
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_cannot_fill_placeholders() {
        let body = BodyTemplate::parse(r#"{"a": {{alert}}}"#).unwrap();
        for payload in [&b"not json"[..], b"[1]"] {
            assert_eq!(
                body.render(&Event::new(payload, "t")),
                Err(RenderError::NotAnObject)
            );
        }
    }

    #[test]
    fn a_broken_template_says_where() {
        assert_eq!(
            BodyTemplate::parse("{\n  \"a\": {{alert\n}").unwrap_err(),
            BodyError::Unclosed { line: 2, column: 8 }
        );
        for broken in [r#"{"a": {{ }}}"#, r#"{"a": {{s: x}}}"#, r#"{"a": {{s: x=}}}"#] {
            assert_eq!(
                BodyTemplate::parse(broken).unwrap_err(),
                BodyError::Placeholder { line: 1, column: 7 },
                "{broken}"
            );
        }
        let error = BodyTemplate::parse("{\n  \"a\": {{alert}},\n  \"b\" 1\n}").unwrap_err();
        assert!(
            matches!(error, BodyError::NotJson { line: 3, column: 7, .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "`body` is not JSON at line 3, column 7: expected `:`"
        );
        // A value placeholder inside quotes is text, so this is a string: fine. Outside
        // them two values in a row are not JSON.
        assert!(BodyTemplate::parse(r#"{"a": "{{x}}{{y}}"}"#).is_ok());
        assert!(BodyTemplate::parse(r#"{"a": {{x}}{{y}}}"#).is_err());
    }

    #[test]
    fn a_batch_is_a_json_array_of_the_bodies() {
        let bodies: [&[u8]; 2] = [br#"{"a":1}"#, b"2"];
        assert_eq!(json_array(bodies), br#"[{"a":1},2]"#);
        assert_eq!(one_json_value(b"{\"a\":"), Err(RenderError::NotJson));
        assert_eq!(one_json_value(b" [1] "), Ok(()));
    }
}
