//! One event as a line of JSON: what `sluice tap --save` writes and a pipeline test's
//! `recording = "..."` input reads back.
//!
//! ```json
//! {"stage":"shape","route":null,"key":"d1","timestamp_ms":123,"headers":{"team":"ops"},
//!  "payload":{"device_id":"d1"},"payload_encoding":"json"}
//! ```
//!
//! The payload is kept readable where it can be: a JSON payload as the JSON value itself
//! (`json`, re-encoded compactly when read back), other text as a string (`utf8`), and
//! anything else as standard base64 (`base64`). A key and header values are text (lossily
//! for bytes that are not UTF-8); a header name given twice keeps its last value.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// How [`EventRecord::payload`] holds the event's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// The payload parsed as JSON.
    Json,
    /// The payload's text, as a JSON string.
    Utf8,
    /// The payload's bytes, standard base64, as a JSON string.
    Base64,
}

/// One event seen at one stage's output (`route` is `None` for its default output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    pub stage: String,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    pub timestamp_ms: i64,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub payload: serde_json::Value,
    pub payload_encoding: PayloadEncoding,
}

/// Why a line is not an [`EventRecord`].
#[derive(Debug, thiserror::Error)]
pub enum EventRecordError {
    #[error("not an event record: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("payload_encoding \"{0}\" needs the payload as a JSON string")]
    NotAString(&'static str),
    #[error("payload is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

impl EventRecord {
    /// The record of `event` leaving `stage` (on `route`, or its default output).
    pub fn of(stage: &str, route: Option<&str>, event: &Event) -> EventRecord {
        let (payload, payload_encoding) = encode_payload(&event.payload);
        EventRecord {
            stage: stage.to_string(),
            route: route.map(str::to_string),
            key: event
                .key
                .as_ref()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            timestamp_ms: event.timestamp_ms,
            headers: event
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect(),
            payload,
            payload_encoding,
        }
    }

    /// The record as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record of strings and JSON values serializes")
    }

    /// A record from one line written by [`to_line`](Self::to_line).
    pub fn from_line(line: &str) -> Result<EventRecord, EventRecordError> {
        let record: EventRecord = serde_json::from_str(line)?;
        // Check the payload decodes now, so that a bad line is reported where it is read.
        record.payload_bytes()?;
        Ok(record)
    }

    /// The event again, its origin the record's stage.
    pub fn into_event(self) -> Event {
        let payload = self.payload_bytes().expect("from_line checked the payload");
        Event {
            key: self.key.map(Bytes::from),
            payload,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| (name, Bytes::from(value)))
                .collect(),
            timestamp_ms: self.timestamp_ms,
            origin: self.stage.into(),
        }
    }

    /// The payload's bytes, decoded as its encoding says.
    pub fn payload_bytes(&self) -> Result<Bytes, EventRecordError> {
        match (self.payload_encoding, &self.payload) {
            (PayloadEncoding::Json, value) => Ok(Bytes::from(
                serde_json::to_vec(value).expect("a JSON value serializes"),
            )),
            (PayloadEncoding::Utf8, serde_json::Value::String(text)) => {
                Ok(Bytes::from(text.clone()))
            }
            (PayloadEncoding::Base64, serde_json::Value::String(text)) => {
                Ok(Bytes::from(BASE64.decode(text)?))
            }
            (PayloadEncoding::Utf8, _) => Err(EventRecordError::NotAString("utf8")),
            (PayloadEncoding::Base64, _) => Err(EventRecordError::NotAString("base64")),
        }
    }
}

/// The most readable faithful form of `payload`: JSON, else text, else base64.
fn encode_payload(payload: &[u8]) -> (serde_json::Value, PayloadEncoding) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        return (value, PayloadEncoding::Json);
    }
    match std::str::from_utf8(payload) {
        Ok(text) => (
            serde_json::Value::String(text.to_string()),
            PayloadEncoding::Utf8,
        ),
        Err(_) => (
            serde_json::Value::String(BASE64.encode(payload)),
            PayloadEncoding::Base64,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &'static [u8]) -> Event {
        Event {
            key: Some(Bytes::from_static(b"d1")),
            payload: Bytes::from_static(payload),
            headers: vec![("team".into(), Bytes::from_static(b"ops"))],
            timestamp_ms: 1_767_225_600_000,
            origin: "telemetry".into(),
        }
    }

    #[test]
    fn a_json_payload_is_kept_as_json_and_comes_back_compact() {
        let record = EventRecord::of("shape", None, &event(b"{ \"device_id\": \"d1\" }"));
        let line = record.to_line();
        assert_eq!(
            line,
            r#"{"stage":"shape","route":null,"key":"d1","timestamp_ms":1767225600000,"headers":{"team":"ops"},"payload":{"device_id":"d1"},"payload_encoding":"json"}"#
        );
        let back = EventRecord::from_line(&line).unwrap().into_event();
        assert_eq!(&back.payload[..], br#"{"device_id":"d1"}"#);
        assert_eq!(back.key.as_deref(), Some(&b"d1"[..]));
        assert_eq!(
            back.headers,
            vec![("team".into(), Bytes::from_static(b"ops"))]
        );
        assert_eq!(back.timestamp_ms, 1_767_225_600_000);
        assert_eq!(&*back.origin, "shape");
    }

    #[test]
    fn text_and_binary_payloads_round_trip_exactly() {
        for payload in [&b"not json {"[..], &[0xff, 0x00, 0xfe][..]] {
            let mut original = event(b"");
            original.payload = Bytes::copy_from_slice(payload);
            let record = EventRecord::of("score", Some("alerts"), &original);
            let back = EventRecord::from_line(&record.to_line()).unwrap();
            assert_eq!(back.route.as_deref(), Some("alerts"));
            assert_eq!(&back.into_event().payload[..], payload);
        }
        let binary = EventRecord::of("s", None, &{
            let mut e = event(b"");
            e.payload = Bytes::from_static(&[0xff]);
            e
        });
        assert_eq!(binary.payload_encoding, PayloadEncoding::Base64);
        assert_eq!(binary.payload, serde_json::json!("/w=="));
    }

    #[test]
    fn lines_of_another_shape_are_refused() {
        for line in [
            r#"{"tap":{"stage":"shape","connected":true}}"#,
            r#"{"stage":"s","timestamp_ms":1,"payload":{}}"#,
            r#"{"stage":"s","timestamp_ms":1,"payload":3,"payload_encoding":"utf8"}"#,
            r#"{"stage":"s","timestamp_ms":1,"payload":"%%","payload_encoding":"base64"}"#,
            "not json",
        ] {
            assert!(EventRecord::from_line(line).is_err(), "{line} was accepted");
        }
    }
}
