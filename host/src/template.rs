//! Names rendered from events: `alerts/{device_id}` takes `device_id` (a dotted path)
//! from the event's JSON payload. Used for MQTT topics, Kafka topics and keys.

use crate::event::Event;

/// Why a template's text does not parse; `what` names the setting (e.g. "topic").
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("{what} `{text}` has an unclosed `{{`")]
    Unclosed { what: String, text: String },
    #[error("{what} `{text}` has an empty `{{}}`")]
    EmptyField { what: String, text: String },
}

/// A text with `{field}` placeholders.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
    /// The payload's top-level fields the placeholders read (see [`payload_fields`]).
    fields: Vec<String>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parse `text`; `what` names it in the error (e.g. "topic").
    pub fn parse(text: &str, what: &str) -> Result<Template, TemplateError> {
        let named = || (what.to_owned(), text.to_owned());
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or_else(|| {
                let (what, text) = named();
                TemplateError::Unclosed { what, text }
            })? + open;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let field = &rest[open + 1..close];
            if field.is_empty() {
                let (what, text) = named();
                return Err(TemplateError::EmptyField { what, text });
            }
            parts.push(Part::Field(field.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let fields = top_level_names(parts.iter().filter_map(|part| match part {
            Part::Field(name) => Some(name.as_str()),
            Part::Text(_) => None,
        }));
        Ok(Template { parts, fields })
    }

    /// Whether the template takes anything from the event.
    pub fn is_constant(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// The names inside `{...}`, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Field(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text for `event`. A field the payload lacks (or a payload that is not JSON)
    /// renders as `_`; a field's text goes through `clean`, which keeps it from adding
    /// structure (an MQTT level, a character a Kafka topic cannot hold).
    pub fn render(&self, event: &Event, clean: impl Fn(&str) -> String) -> String {
        // Only the fields the placeholders name are read out of the payload.
        let payload = if self.is_constant() {
            None
        } else {
            payload_fields(event, &self.fields)
        };
        self.render_fields(payload.as_ref(), clean)
    }

    /// As [`Template::render`], with the payload already parsed (once for several
    /// templates over the same event).
    pub fn render_fields(
        &self,
        payload: Option<&serde_json::Value>,
        clean: impl Fn(&str) -> String,
    ) -> String {
        let mut out = String::new();
        self.render_into(&mut out, |path, out| {
            out.push_str(&field_text(payload, path, &clean))
        });
        out
    }

    /// The text appended to `out`, with `value` appending each placeholder's text given
    /// its name, for callers whose placeholders are not all payload fields (partition
    /// dates, say) and who render into one buffer per event without allocating.
    pub fn render_into(&self, out: &mut String, mut value: impl FnMut(&str, &mut String)) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(name) => value(name, out),
            }
        }
    }
}

/// The top-level names that the dotted `paths` start with: what [`payload_fields`]
/// needs to read.
pub fn top_level_names<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = paths
        .into_iter()
        .map(|path| path.split('.').next().unwrap_or(path).to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A JSON object payload's top-level fields `names` (as from [`top_level_names`]), if
/// the payload is a JSON object. The rest of the payload is scanned, not built: a sink
/// that renders a template from two fields of each event then costs a scan, not a
/// document per event.
pub fn payload_fields(event: &Event, names: &[String]) -> Option<serde_json::Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(&event.payload);
    let fields = serde::de::DeserializeSeed::deserialize(Only(names), &mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(serde_json::Value::Object(fields))
}

/// Reads the fields it names out of a JSON object, skipping the others.
struct Only<'a>(&'a [String]);

impl<'de> serde::de::DeserializeSeed<'de> for Only<'_> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Only<'_> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(wanted) = map.next_key_seed(Wanted(self.0))? {
            match wanted {
                Some(index) => {
                    fields.insert(self.0[index].clone(), map.next_value()?);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A key: the index of the wanted name it equals, compared without allocating.
struct Wanted<'a>(&'a [String]);

impl<'de> serde::de::DeserializeSeed<'de> for Wanted<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Wanted<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| name == key))
    }
}

/// The value at a dotted `path` of a JSON payload.
pub fn field<'a>(
    payload: Option<&'a serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    payload.and_then(|p| path.split('.').try_fold(p, |v, step| v.get(step)))
}

/// A field's text through `clean`; `_` for a missing or null field.
pub fn field_text(
    payload: Option<&serde_json::Value>,
    path: &str,
    clean: impl Fn(&str) -> String,
) -> String {
    value_text(field(payload, path), clean)
}

/// What [`field_text`] makes of a field's value, once found.
pub fn value_text(value: Option<&serde_json::Value>, clean: impl Fn(&str) -> String) -> String {
    match value {
        Some(serde_json::Value::String(text)) => clean(text),
        Some(serde_json::Value::Null) | None => "_".to_owned(),
        Some(other) => clean(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_fields_reads_only_the_named_fields_of_an_object() {
        let names = top_level_names(["device_id", "reading.kind", "device_id"]);
        assert_eq!(names, ["device_id", "reading"]);
        let event = Event::new(
            &br#"{"pad":[1,{"x":"y"}],"device_id":"s\"1","reading":{"kind":"t"},"z":null}"#[..],
            "t",
        );
        let fields = payload_fields(&event, &names).unwrap();
        assert_eq!(
            fields,
            serde_json::json!({"device_id": "s\"1", "reading": {"kind": "t"}})
        );
        assert_eq!(
            field_text(Some(&fields), "reading.kind", str::to_owned),
            "t"
        );
        for not_an_object in [&b"[1]"[..], b"{\"a\":1} {}", b"{\"a\":", b"text"] {
            assert_eq!(
                payload_fields(&Event::new(not_an_object, "t"), &names),
                None
            );
        }
    }

    #[test]
    fn renders_dotted_fields_from_the_payload_and_marks_missing_ones() {
        let template = Template::parse("alerts/{device_id}/{reading.kind}", "topic").unwrap();
        let event = Event::new(
            &br#"{"device_id":"s-1","reading":{"kind":"temp"}}"#[..],
            "t",
        );
        let keep = |text: &str| text.to_owned();
        assert_eq!(template.render(&event, keep), "alerts/s-1/temp");
        assert_eq!(
            template.render(&Event::new(&b"{}"[..], "t"), keep),
            "alerts/_/_"
        );
        assert_eq!(
            template.render(&Event::new(&b"not json"[..], "t"), keep),
            "alerts/_/_"
        );
    }

    #[test]
    fn rejects_unclosed_and_empty_placeholders() {
        let unclosed = Template::parse("a/{b", "topic").unwrap_err();
        assert_eq!(unclosed.to_string(), "topic `a/{b` has an unclosed `{`");
        let empty = Template::parse("a/{}", "topic").unwrap_err();
        assert_eq!(empty.to_string(), "topic `a/{}` has an empty `{}`");
    }
}
