//! The host's event type, shared by sources, plugins and sinks.

use std::sync::Arc;

use bytes::Bytes;

/// One event. Cheap to clone: byte fields are reference-counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Where the event came from: a topic or a source stage.
    pub origin: Arc<str>,
}

impl Event {
    /// An event with just a payload, stamped now.
    pub fn new(payload: impl Into<Bytes>, origin: impl Into<Arc<str>>) -> Self {
        Event {
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            timestamp_ms: now_ms(),
            origin: origin.into(),
        }
    }

    /// The payload as text, lossily, for logs and error messages.
    pub fn payload_preview(&self, max: usize) -> String {
        preview(&self.payload, max)
    }
}

/// `bytes` as text, lossily, cut to at most `max` bytes (and marked `…` if cut).
pub fn preview(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return text.into_owned();
    }
    let cut = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…", &text[..cut])
}

/// Header names the host derives (`kafka.partition`, `kafka.offset`, the dead-letter
/// reason under `sluice.`): a producer's record or a plugin's output cannot set them,
/// since the object store names objects after the Kafka ones.
pub fn is_reserved_header(name: &str) -> bool {
    name.starts_with("kafka.") || name.starts_with("sluice.")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
