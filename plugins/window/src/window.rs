//! Windows over a key-value store: which windows an event falls in, what a window
//! keeps, when it is late, and what a closed window emits.
//!
//! State layout (the stage's durable state):
//! - `l/{sequence}/{instance}`: the window log, the open windows' [`Bucket`]s as the
//!   calls that changed them left them ([`crate::log`]);
//! - `w/{end, 20 digits}/{key}`: an open window's [`Bucket`] in a store written before
//!   the log, read as it is and moved into the log when it changes;
//! - `wm`: the largest event time seen (event-time windows);
//! - `writer`: the last call that wrote the state ([`crate::open`]);
//! - `d/{key}`: the last interval the downsampler let an event of `key` through.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::sketch::Sketch;

/// Where a plugin's state lives: the host's per-stage state, or memory in tests.
pub trait Store {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&mut self, key: &str, value: &[u8]);
    fn delete(&mut self, key: &str);
    /// Up to `limit` entries under `prefix`, in key order.
    fn scan(&self, prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)>;
}

pub const WINDOWS: &str = "w/";
pub const WATERMARK: &str = "wm";

/// Window lengths: tumbling windows are hopping windows whose hop is their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub size_ms: i64,
    pub hop_ms: i64,
}

impl Windows {
    /// The `(start, end)` of every window holding time `t`, latest start first.
    pub fn containing(&self, t: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let last_start = t.div_euclid(self.hop_ms) * self.hop_ms;
        (0..)
            .map(move |k| last_start - k * self.hop_ms)
            .take_while(move |start| start + self.size_ms > t)
            .map(move |start| (start, start + self.size_ms))
    }
}

/// The state key under which a store written before the log keeps the window of `key`
/// ending at `end`, into `out`, replacing what it held (a buffer reused per window).
/// The end's digits are written by hand: `format!`'s padding machinery measured as much
/// as the rest of the key.
pub fn write_window_key(out: &mut String, end: i64, key: &str) {
    out.clear();
    out.push_str(WINDOWS);
    if end < 0 {
        // Before 1970: rare enough for the general path (and the same text).
        use std::fmt::Write;
        write!(out, "{end:020}").expect("writing to a String succeeds");
    } else {
        let mut digits = [b'0'; 20];
        let mut rest = end as u64;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
    }
    out.push('/');
    out.push_str(key);
}

/// The window end a `w/` state key (a store written before the log) holds.
pub fn end_of(state_key: &str) -> Option<i64> {
    state_key.strip_prefix(WINDOWS)?.get(..20)?.parse().ok()
}

/// A key as the events carried it: its JSON text, as serde_json writes the value, and
/// the text that names it in state keys (strings as they are, other values as JSON).
/// Held as text, not as a `Value`: a key is compared, hashed and stored per event, and
/// only a closed window's result needs it as a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Key {
    json: String,
    /// `None` when the key is a string whose JSON holds no escape: its text is then the
    /// JSON between the quotes, and is not kept twice.
    text: Option<String>,
}

impl Key {
    pub fn from_value(value: &Value) -> Key {
        let json = value.to_string();
        match value {
            Value::String(text) if json.len() != text.len() + 2 => Key {
                json,
                text: Some(text.clone()),
            },
            Value::String(_) => Key { json, text: None },
            _ => Key {
                text: Some(json.clone()),
                json,
            },
        }
    }

    /// The key whose JSON text is `raw` (a payload field as written, or a stored
    /// key); `None` when `raw` is not JSON. A string without escapes, the common key,
    /// is taken as it is; anything else goes through serde_json, so that one value
    /// always makes one key however the payload spelled it.
    pub fn parse(raw: &str) -> Option<Key> {
        match Key::canonical(raw)? {
            Cow::Borrowed(json) => Some(Key {
                json: json.to_owned(),
                text: None,
            }),
            Cow::Owned(json) => serde_json::from_str::<Value>(&json)
                .ok()
                .map(|value| Key::from_value(&value)),
        }
    }

    /// The JSON text of the key `raw` spells, as [`Key::json`] holds it: `raw` itself
    /// for a string without escapes (the common key, then not copied), else as
    /// serde_json writes its value; `None` when `raw` is not JSON.
    pub fn canonical(raw: &str) -> Option<Cow<'_, str>> {
        if raw.len() >= 2 && raw.starts_with('"') && !raw.contains('\\') {
            return Some(Cow::Borrowed(raw));
        }
        serde_json::from_str::<Value>(raw)
            .ok()
            .map(|value| Cow::Owned(value.to_string()))
    }

    /// The key's JSON text (as serde_json writes it).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The key as it names state entries and emitted events.
    pub fn text(&self) -> &str {
        self.text
            .as_deref()
            .unwrap_or_else(|| &self.json[1..self.json.len() - 1])
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).expect("a key's JSON is valid")
    }
}

/// What one window of one key has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// The key as the events carried it.
    pub key: Key,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// (event time, value) of the earliest and of the latest event.
    pub first: (i64, f64),
    pub last: (i64, f64),
    pub sketch: Option<Sketch>,
}

/// The first byte of an encoded bucket: its layout's version.
const BUCKET_LAYOUT: u8 = 1;

impl Bucket {
    /// The bucket in a compact binary form for the state (it is written once per batch
    /// that touches it, so JSON's cost would dominate the plugin's), appended to `out`
    /// (a buffer reused per window).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let key = self.key.json().as_bytes();
        out.push(BUCKET_LAYOUT);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&self.count.to_le_bytes());
        for number in [self.sum, self.min, self.max, self.first.1, self.last.1] {
            out.extend_from_slice(&number.to_le_bytes());
        }
        out.extend_from_slice(&self.first.0.to_le_bytes());
        out.extend_from_slice(&self.last.0.to_le_bytes());
        match &self.sketch {
            Some(sketch) => {
                out.push(1);
                sketch.encode(out);
            }
            None => out.push(0),
        }
    }

    /// A bucket written by [`Bucket::encode_into`]; `None` for anything else.
    pub fn decode(mut bytes: &[u8]) -> Option<Bucket> {
        use crate::sketch::{take, take_u64};
        let bytes = &mut bytes;
        if take(bytes, 1)? != [BUCKET_LAYOUT] {
            return None;
        }
        let key_len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(take(bytes, key_len)?).ok()?;
        let key = Key::parse(key)?;
        let count = take_u64(bytes)?;
        let mut numbers = [0f64; 5];
        for number in &mut numbers {
            *number = f64::from_bits(take_u64(bytes)?);
        }
        let first_time = take_u64(bytes)? as i64;
        let last_time = take_u64(bytes)? as i64;
        let sketch = match take(bytes, 1)? {
            [1] => Some(Sketch::decode(bytes)?),
            _ => None,
        };
        let [sum, min, max, first, last] = numbers;
        Some(Bucket {
            key,
            count,
            sum,
            min,
            max,
            first: (first_time, first),
            last: (last_time, last),
            sketch,
        })
    }

    pub fn new(key: Key, with_sketch: bool) -> Self {
        Bucket {
            key,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: with_sketch.then(Sketch::default),
            ..Bucket::default()
        }
    }

    pub fn add(&mut self, time: i64, value: f64) {
        if self.count == 0 || time < self.first.0 {
            self.first = (time, value);
        }
        // Equal times: the later arrival is the last.
        if self.count == 0 || time >= self.last.0 {
            self.last = (time, value);
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Some(sketch) = &mut self.sketch {
            sketch.add(value);
        }
    }
}

/// An aggregate a closed window reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
    Mean,
    First,
    Last,
    /// A percentile (`p50`, `p99`, `p99.9`), as a fraction.
    Percentile(String, f64),
}

impl Aggregate {
    pub fn parse(name: &str) -> Result<Aggregate, String> {
        Ok(match name {
            "count" => Aggregate::Count,
            "sum" => Aggregate::Sum,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "mean" => Aggregate::Mean,
            "first" => Aggregate::First,
            "last" => Aggregate::Last,
            other => {
                let percent: f64 = other
                    .strip_prefix('p')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        format!(
                            "unknown aggregate `{other}`: use count, sum, min, max, mean, first, \
                             last or a percentile such as p50, p99, p99.9"
                        )
                    })?;
                Aggregate::Percentile(other.to_owned(), percent / 100.0)
            }
        })
    }

    pub fn needs_sketch(&self) -> bool {
        matches!(self, Aggregate::Percentile(..))
    }
}

/// The event a closed window emits.
pub fn result(
    bucket: &Bucket,
    key_field: Option<&str>,
    (start, end): (i64, i64),
    aggregates: &[Aggregate],
) -> Value {
    let mut out = Map::new();
    if let Some(field) = key_field {
        out.insert(field.to_owned(), bucket.key.to_value());
    }
    out.insert("window_start".into(), json!(start));
    out.insert("window_end".into(), json!(end));
    for aggregate in aggregates {
        let (name, value) = match aggregate {
            Aggregate::Count => ("count", json!(bucket.count)),
            Aggregate::Sum => ("sum", json!(bucket.sum)),
            Aggregate::Min => ("min", json!(bucket.min)),
            Aggregate::Max => ("max", json!(bucket.max)),
            Aggregate::Mean => ("mean", json!(bucket.sum / bucket.count.max(1) as f64)),
            Aggregate::First => ("first", json!(bucket.first.1)),
            Aggregate::Last => ("last", json!(bucket.last.1)),
            Aggregate::Percentile(name, q) => {
                // A bucket's representative may pass the extremes by its 1%: clamp.
                let value = bucket
                    .sketch
                    .as_ref()
                    .and_then(|s| s.quantile(*q))
                    .map(|v| v.clamp(bucket.min, bucket.max));
                (name.as_str(), json!(value))
            }
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_key(end: i64, key: &str) -> String {
        let mut state_key = String::new();
        write_window_key(&mut state_key, end, key);
        state_key
    }

    fn encoded(bucket: &Bucket) -> Vec<u8> {
        let mut out = Vec::new();
        bucket.encode_into(&mut out);
        out
    }

    #[test]
    fn tumbling_and_hopping_windows_hold_an_event() {
        let tumbling = Windows {
            size_ms: 60_000,
            hop_ms: 60_000,
        };
        assert_eq!(
            tumbling.containing(125_000).collect::<Vec<_>>(),
            [(120_000, 180_000)]
        );
        assert_eq!(
            tumbling.containing(120_000).collect::<Vec<_>>(),
            [(120_000, 180_000)]
        );
        let hopping = Windows {
            size_ms: 60_000,
            hop_ms: 20_000,
        };
        assert_eq!(
            hopping.containing(125_000).collect::<Vec<_>>(),
            [(120_000, 180_000), (100_000, 160_000), (80_000, 140_000)]
        );
    }

    #[test]
    fn state_keys_sort_by_window_end() {
        assert_eq!(
            window_key(1_795_948_980_000, "d1"),
            "w/00000001795948980000/d1"
        );
        assert_eq!(window_key(-60_000, "d1"), format!("w/{:020}/d1", -60_000));
        let early = window_key(9_000, "zz");
        let late = window_key(10_000, "aa");
        assert!(early < late);
        assert_eq!(end_of(&late), Some(10_000));
    }

    #[test]
    fn a_bucket_comes_back_from_its_encoding_whole() {
        let mut bucket = Bucket::new(Key::from_value(&json!({"site": "a", "n": 1})), true);
        for (t, v) in [(5, -2.5), (3, 0.0), (9, 1e9)] {
            bucket.add(t, v);
        }
        assert_eq!(Bucket::decode(&encoded(&bucket)), Some(bucket.clone()));
        let plain = Bucket::new(Key::from_value(&json!("d1")), false);
        assert_eq!(Bucket::decode(&encoded(&plain)), Some(plain));
        assert_eq!(Bucket::decode(b"{\"count\":1}"), None, "not this layout");
        assert_eq!(Bucket::decode(&encoded(&bucket)[..20]), None, "cut short");
    }

    #[test]
    fn a_key_is_the_same_however_the_payload_spelled_it() {
        let plain = Key::parse(r#""k1""#).unwrap();
        assert_eq!(plain, Key::from_value(&json!("k1")));
        assert_eq!((plain.json(), plain.text()), (r#""k1""#, "k1"));
        let escaped = Key::parse(r#""k\u0031""#).unwrap();
        assert_eq!(escaped, plain, "an escape spells the same string");
        let quoted = Key::parse(r#""a\"b""#).unwrap();
        assert_eq!((quoted.json(), quoted.text()), (r#""a\"b""#, r#"a"b"#));
        let number = Key::parse("1.0e3").unwrap();
        assert_eq!((number.json(), number.text()), ("1000.0", "1000.0"));
        assert_eq!(Key::parse("null").unwrap().text(), "null");
        assert_eq!(Key::parse("{").map(|key| key.json().to_owned()), None);
        assert_eq!(number.to_value(), json!(1000.0));
    }

    #[test]
    fn a_bucket_keeps_first_and_last_by_event_time() {
        let mut bucket = Bucket::new(Key::from_value(&json!("d1")), true);
        bucket.add(20, 2.0);
        bucket.add(10, 1.0);
        bucket.add(30, 3.0);
        bucket.add(30, 4.0);
        let aggregates: Vec<Aggregate> =
            ["count", "sum", "min", "max", "mean", "first", "last", "p50"]
                .iter()
                .map(|name| Aggregate::parse(name).unwrap())
                .collect();
        let out = result(&bucket, Some("device"), (0, 60), &aggregates);
        assert_eq!(out["device"], "d1");
        assert_eq!(out["count"], 4);
        assert_eq!(out["sum"], 10.0);
        assert_eq!(out["mean"], 2.5);
        assert_eq!(out["first"], 1.0);
        assert_eq!(out["last"], 4.0);
        assert_eq!(
            (out["min"].as_f64(), out["max"].as_f64()),
            (Some(1.0), Some(4.0))
        );
        let p50 = out["p50"].as_f64().unwrap();
        assert!((p50 - 3.0).abs() <= 0.03, "{p50}");
        assert!(Aggregate::parse("median").unwrap_err().contains("`median`"));
        let Aggregate::Percentile(name, q) = Aggregate::parse("p99.9").unwrap() else {
            panic!("p99.9 is a percentile");
        };
        assert_eq!(name, "p99.9");
        assert!((q - 0.999).abs() < 1e-12);
    }
}
