//! The newest dead letters of every stage, kept in memory for the admin page's
//! dead-letter browser (`GET /v1/dead-letters`). Each stage keeps a ring of the last
//! [`KEPT_PER_STAGE`], and each record's payload, reason, key and origin are cut to a
//! few KiB: what the log holds stays bounded whatever a plugin emits or says.
//! The dead-letter route itself still carries every letter whole.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::event::{Event, now_ms};

/// Dead letters kept per stage; older ones are forgotten.
pub const KEPT_PER_STAGE: usize = 100;
/// The longest payload kept, as shown (UTF-8 text, or base64 of a binary payload).
pub const PAYLOAD_BYTES: usize = 4096;
/// The longest reason, key and origin kept (a plugin writes its reasons).
pub const TEXT_BYTES: usize = 1024;

/// One dead letter as the log keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedDeadLetter {
    /// Increases with every dead letter of the process: newer letters have larger ids.
    pub id: u64,
    pub stage: String,
    pub reason: String,
    pub at_ms: i64,
    pub origin: String,
    pub key: Option<String>,
    /// The original payload's start: its text, or base64 when it is not UTF-8.
    pub payload: String,
    pub payload_encoding: &'static str,
    /// The size of the original payload.
    pub payload_bytes: usize,
    /// Whether `payload` is only the start of the original.
    pub truncated: bool,
}

type Ring = Arc<Mutex<VecDeque<Arc<LoggedDeadLetter>>>>;

fn rings() -> &'static Mutex<BTreeMap<Arc<str>, Ring>> {
    static RINGS: OnceLock<Mutex<BTreeMap<Arc<str>, Ring>>> = OnceLock::new();
    RINGS.get_or_init(Mutex::default)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The log of one stage, looked up once when its outputs are made.
pub struct StageDeadLetterLog {
    stage: Arc<str>,
    ring: Ring,
}

impl StageDeadLetterLog {
    pub fn of(stage: &str) -> StageDeadLetterLog {
        let stage: Arc<str> = Arc::from(stage);
        let ring = rings()
            .lock()
            .unwrap()
            .entry(stage.clone())
            .or_default()
            .clone();
        StageDeadLetterLog { stage, ring }
    }

    pub fn record(&self, event: &Event, reason: &str) {
        let (payload, payload_encoding, truncated) = shown_payload(&event.payload);
        let letter = Arc::new(LoggedDeadLetter {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stage: self.stage.to_string(),
            reason: cut(reason, TEXT_BYTES).to_owned(),
            at_ms: now_ms(),
            origin: cut(&event.origin, TEXT_BYTES).to_owned(),
            key: event
                .key
                .as_ref()
                .map(|key| cut(&String::from_utf8_lossy(key), TEXT_BYTES).to_owned()),
            payload,
            payload_encoding,
            payload_bytes: event.payload.len(),
            truncated,
        });
        let mut ring = self.ring.lock().unwrap();
        if ring.len() == KEPT_PER_STAGE {
            ring.pop_front();
        }
        ring.push_back(letter);
    }
}

/// The payload as kept: text when its start is UTF-8 (a character cut in two at the end
/// does not count against it), else base64; at most [`PAYLOAD_BYTES`] either way.
fn shown_payload(payload: &[u8]) -> (String, &'static str, bool) {
    let start = &payload[..payload.len().min(PAYLOAD_BYTES)];
    match std::str::from_utf8(start) {
        Ok(text) => (text.to_owned(), "utf8", start.len() < payload.len()),
        Err(error) if error.error_len().is_none() && start.len() < payload.len() => {
            let text = std::str::from_utf8(&start[..error.valid_up_to()]).expect("checked");
            (text.to_owned(), "utf8", true)
        }
        Err(_) => {
            // Base64 takes 4 characters for 3 bytes.
            let start = &payload[..payload.len().min(PAYLOAD_BYTES / 4 * 3)];
            (BASE64.encode(start), "base64", start.len() < payload.len())
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(0);
    &text[..end]
}

/// The kept dead letters of `stage` (every stage: `None`), newest first, at most
/// `limit`; with `text`, only those whose reason or payload contains it (any case).
pub fn search(stage: Option<&str>, text: Option<&str>, limit: usize) -> Vec<Arc<LoggedDeadLetter>> {
    let rings: Vec<Ring> = {
        let rings = rings().lock().unwrap();
        match stage {
            Some(stage) => rings.get(stage).cloned().into_iter().collect(),
            None => rings.values().cloned().collect(),
        }
    };
    let needle = text
        .map(str::to_lowercase)
        .filter(|needle| !needle.is_empty());
    let matches = |letter: &LoggedDeadLetter| match &needle {
        None => true,
        Some(needle) => {
            letter.reason.to_lowercase().contains(needle)
                || (letter.payload_encoding == "utf8"
                    && letter.payload.to_lowercase().contains(needle))
        }
    };
    let mut found: Vec<Arc<LoggedDeadLetter>> = rings
        .iter()
        .flat_map(|ring| {
            let ring = ring.lock().unwrap();
            ring.iter()
                .filter(|letter| matches(letter))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    found.sort_unstable_by_key(|letter| std::cmp::Reverse(letter.id));
    found.truncate(limit);
    found
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(payload: impl Into<Bytes>) -> Event {
        Event {
            key: Some(Bytes::from_static(b"dev-1")),
            payload: payload.into(),
            headers: Vec::new(),
            timestamp_ms: 0,
            origin: Arc::from("ingest"),
        }
    }

    #[test]
    fn a_stage_keeps_its_newest_hundred_dead_letters_each_cut_to_4_kib() {
        let log = StageDeadLetterLog::of("log-test-flood");
        let mebibyte = vec![b'x'; 1 << 20];
        let long_reason = "r".repeat(1 << 20);
        for number in 0..1000 {
            log.record(&event(mebibyte.clone()), &format!("{number} {long_reason}"));
        }
        let kept = search(Some("log-test-flood"), None, usize::MAX);
        assert_eq!(kept.len(), KEPT_PER_STAGE);
        assert!(kept[0].reason.starts_with("999 "), "newest first");
        assert!(kept[99].reason.starts_with("900 "), "the oldest kept");
        let mut held = 0;
        for letter in &kept {
            assert_eq!(letter.payload.len(), PAYLOAD_BYTES);
            assert!(letter.truncated);
            assert_eq!(letter.payload_bytes, 1 << 20);
            assert_eq!(letter.reason.len(), TEXT_BYTES);
            held += letter.payload.len() + letter.reason.len() + letter.origin.len();
        }
        assert!(
            held <= KEPT_PER_STAGE * (PAYLOAD_BYTES + 2 * TEXT_BYTES),
            "{held}"
        );
    }

    #[test]
    fn a_payload_is_kept_as_text_or_base64_and_never_split_inside_a_character() {
        let short = shown_payload(b"{\"t\":1}");
        assert_eq!(short, ("{\"t\":1}".to_owned(), "utf8", false));
        // 'é' is two bytes: the 4096th byte is the first half of one.
        let text = format!("a{}", "é".repeat(3000));
        let (kept, encoding, truncated) = shown_payload(text.as_bytes());
        assert_eq!(
            (kept.len(), encoding, truncated),
            (PAYLOAD_BYTES - 1, "utf8", true)
        );
        let binary = vec![0xff; 10_000];
        let (kept, encoding, truncated) = shown_payload(&binary);
        assert_eq!(
            (kept.len(), encoding, truncated),
            (PAYLOAD_BYTES, "base64", true)
        );
    }

    #[test]
    fn the_filter_finds_dead_letters_by_reason_and_by_payload_text() {
        let log = StageDeadLetterLog::of("log-test-filter");
        log.record(
            &event(r#"{"temperature":"hot"}"#),
            "cannot convert `temperature`",
        );
        log.record(&event(r#"{"humidity":12}"#), "missing field `device_id`");
        log.record(&event(vec![0xff, 0xfe]), "not UTF-8");
        let found = |text: &str| -> Vec<String> {
            search(Some("log-test-filter"), Some(text), 10)
                .iter()
                .map(|letter| letter.reason.clone())
                .collect()
        };
        assert_eq!(found("CONVERT"), ["cannot convert `temperature`"]);
        assert_eq!(found("humidity"), ["missing field `device_id`"]);
        assert_eq!(found("temperature"), ["cannot convert `temperature`"]);
        assert!(found("nowhere").is_empty());
        assert_eq!(found("").len(), 3);
        assert_eq!(search(Some("log-test-filter"), None, 2).len(), 2);
        assert!(search(Some("log-test-no-such-stage"), None, 10).is_empty());
    }
}
