//! Where an event goes: its Hive-style partition (`dt={date}/hour={hour}/device={device_id}`)
//! and the stream of objects inside it, and what those objects are called.
//!
//! Names are deterministic from what an object holds, so that a replay after a crash
//! rewrites an object instead of adding a second copy:
//! - events that carry `kafka.partition` and `kafka.offset` headers (the Kafka source)
//!   form one stream per topic-partition, and an object is named after that partition and
//!   its first offset, `{topic}-{partition}-{first offset, 20 digits}`. Replaying from
//!   the committed offset starts the first object again at the same offset, with the same
//!   name, and overwrites it;
//! - other events (MQTT, HTTP, collectors) have no position a redelivery repeats, so an
//!   object is named after its first event time and a hash of its contents,
//!   `{first timestamp ms}-{sha256 prefix}`: an identical object gets an identical name,
//!   but a redelivery that groups events differently makes a new object (at least once).

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::event::Event;

/// The partition template, parsed: text and `{name}` placeholders.
#[derive(Debug)]
pub struct Partitioner {
    parts: Vec<Part>,
    /// A payload field holding the event time (epoch ms or RFC 3339); otherwise the
    /// event's own timestamp (the Kafka record time, the MQTT/HTTP arrival time).
    time_field: Option<String>,
    needs_payload: bool,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Time(TimePart),
    Field(String),
}

#[derive(Debug, Clone, Copy)]
enum TimePart {
    Date,
    Year,
    Month,
    Day,
    Hour,
    Minute,
}

/// Which stream of objects an event belongs to inside its partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// A Kafka topic-partition, with the offset of this event.
    Kafka { topic: String, partition: i32 },
    /// Anything else.
    Other,
}

impl Partitioner {
    pub fn parse(template: &str, time_field: Option<String>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("partition `{template}` has an unclosed `{{`"))?
                + open;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let name = &rest[open + 1..close];
            parts.push(match name {
                "" => return Err(format!("partition `{template}` has an empty `{{}}`")),
                "date" => Part::Time(TimePart::Date),
                "year" => Part::Time(TimePart::Year),
                "month" => Part::Time(TimePart::Month),
                "day" => Part::Time(TimePart::Day),
                "hour" => Part::Time(TimePart::Hour),
                "minute" => Part::Time(TimePart::Minute),
                field => Part::Field(field.to_owned()),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let needs_payload = time_field.is_some() || parts.iter().any(|p| matches!(p, Part::Field(_)));
        Ok(Partitioner {
            parts,
            time_field,
            needs_payload,
        })
    }

    /// The partition path of `event` (without leading or trailing `/`).
    pub fn render(&self, event: &Event) -> String {
        let payload: Option<serde_json::Value> = if self.needs_payload {
            serde_json::from_slice(&event.payload).ok()
        } else {
            None
        };
        let field = |path: &str| {
            payload
                .as_ref()
                .and_then(|p| path.split('.').try_fold(p, |v, step| v.get(step)))
        };
        let millis = self
            .time_field
            .as_deref()
            .and_then(field)
            .and_then(|value| match value {
                serde_json::Value::Number(n) => n.as_i64(),
                serde_json::Value::String(text) => DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|t| t.timestamp_millis()),
                _ => None,
            })
            .unwrap_or(event.timestamp_ms);
        let time = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or_default();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Time(unit) => out.push_str(&match unit {
                    TimePart::Date => time.format("%Y-%m-%d").to_string(),
                    TimePart::Year => format!("{:04}", time.year()),
                    TimePart::Month => format!("{:02}", time.month()),
                    TimePart::Day => format!("{:02}", time.day()),
                    TimePart::Hour => format!("{:02}", time.hour()),
                    TimePart::Minute => format!("{:02}", time.minute()),
                }),
                Part::Field(path) => out.push_str(&match field(path) {
                    Some(serde_json::Value::String(text)) => clean(text),
                    Some(serde_json::Value::Null) | None => "_".to_owned(),
                    Some(other) => clean(&other.to_string()),
                }),
            }
        }
        out.trim_matches('/').to_owned()
    }
}

/// A field value may not add path levels or characters query engines trip on.
fn clean(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => cleaned,
    }
}

/// The stream of `event` and, for Kafka, its offset.
pub fn stream_of(event: &Event) -> (Stream, Option<i64>) {
    let header = |name: &str| {
        event
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    };
    match (
        header("kafka.partition").and_then(|p| p.parse().ok()),
        header("kafka.offset").and_then(|o| o.parse().ok()),
    ) {
        (Some(partition), Some(offset)) => (
            Stream::Kafka {
                topic: event.origin.to_string(),
                partition,
            },
            Some(offset),
        ),
        _ => (Stream::Other, None),
    }
}

/// The file name (without extension) of an object of `stream` whose first event had
/// `first_offset` (Kafka) or `first_timestamp_ms` and whose contents hash to `digest`.
pub fn object_stem(
    stream: &Stream,
    first_offset: Option<i64>,
    first_timestamp_ms: i64,
    digest: &[u8],
) -> String {
    match (stream, first_offset) {
        (Stream::Kafka { topic, partition }, Some(offset)) => {
            format!("{}-{partition}-{offset:020}", clean(topic))
        }
        _ => format!("{first_timestamp_ms}-{}", hex::encode(&digest[..8])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(payload: &str, timestamp_ms: i64) -> Event {
        Event {
            timestamp_ms,
            ..Event::new(payload.to_owned(), "telemetry")
        }
    }

    #[test]
    fn partitions_render_event_time_and_cleaned_fields() {
        let hive = Partitioner::parse("dt={date}/hour={hour}/device={device_id}", None).unwrap();
        // 2026-11-29T10:42:00Z
        let at = 1_795_948_920_000;
        assert_eq!(
            hive.render(&event(r#"{"device_id":"a/b c"}"#, at)),
            "dt=2026-11-29/hour=10/device=a_b_c"
        );
        assert_eq!(hive.render(&event("not json", at)), "dt=2026-11-29/hour=10/device=_");
        let by_field = Partitioner::parse("{year}/{month}/{day}", Some("ts".into())).unwrap();
        assert_eq!(
            by_field.render(&event(r#"{"ts":"2024-02-03T04:05:06Z"}"#, at)),
            "2024/02/03"
        );
        assert_eq!(by_field.render(&event(r#"{"ts":0}"#, at)), "1970/01/01");
    }

    #[test]
    fn kafka_events_name_objects_by_partition_and_offset() {
        let mut record = event("{}", 5);
        record.origin = "sensors".into();
        record.headers = vec![
            ("kafka.partition".into(), Bytes::from("3")),
            ("kafka.offset".into(), Bytes::from("1234")),
        ];
        let (stream, offset) = stream_of(&record);
        assert_eq!(
            object_stem(&stream, offset, 5, &[0; 32]),
            "sensors-3-00000000000000001234"
        );
        let (other, none) = stream_of(&event("{}", 5));
        assert_eq!(other, Stream::Other);
        assert_eq!(object_stem(&other, none, 5, &[0xab; 32]), "5-abababababababab");
    }
}
