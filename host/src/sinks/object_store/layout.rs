//! Where an event goes: its Hive-style partition (`dt={date}/hour={hour}/device={device_id}`)
//! and the stream of objects inside it, and what those objects are called.
//!
//! Names are deterministic from what an object holds, so that a replay after a crash
//! rewrites or replaces an object instead of adding a second copy:
//! - events that carry `kafka.partition`, `kafka.offset` and `kafka.assignment` headers
//!   (the Kafka source) form one stream per topic-partition and assignment, and an
//!   object is named after that partition, its first and last offsets and the
//!   assignment that read it, `{topic}-{partition}-{first, 20 digits}-{last}-{assignment}`.
//!   Two owners of a partition (one whose assignment was revoked, still uploading, and
//!   the next) never write one name, and a stored object replaces only objects of
//!   earlier assignments whose offsets lie inside what its own assignment has stored
//!   (see the sink's `delete_covered`);
//! - other events (MQTT, HTTP, collectors) have no position a redelivery repeats, so an
//!   object is named after its first event's time (the `time_field`, else the event's
//!   timestamp) and a hash of its contents,
//!   `{first timestamp ms}-{64 bits of its XXH3-128}`: an identical object gets an identical name,
//!   but a redelivery that groups events differently makes a new object (at least once).

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::scan::{FieldRef, FieldValue};
use crate::event::Event;
use crate::template::{self, Template};

/// The partition template (a [`Template`] whose placeholders are time parts or payload
/// fields) and where the event time comes from.
#[derive(Debug)]
pub struct Partitioner {
    template: Template,
    /// A payload field holding the event time (epoch ms or RFC 3339); otherwise the
    /// event's own timestamp (the Kafka record time, the MQTT/HTTP arrival time).
    time_field: Option<String>,
    /// The payload's top-level fields rendering reads (a time field, field
    /// placeholders); none when only the event's timestamp is used.
    fields: Vec<String>,
    /// The time parts of the last minute rendered: events come in time order, mostly.
    minute: Option<(i64, [String; 6])>,
}

/// Placeholders that are parts of the event time, not payload fields.
const TIME_PARTS: [&str; 6] = ["date", "year", "month", "day", "hour", "minute"];

/// Which stream of objects an event belongs to inside its partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// A Kafka topic-partition as one assignment reads it: offsets in order, none skipped.
    Kafka {
        topic: String,
        partition: i32,
        assignment: Assignment,
    },
    /// Anything else.
    Other,
}

/// One assignment of a Kafka partition to a consumer, as the source names it in the
/// `kafka.assignment` header: `{first offset read}-{assigned at, epoch ms}-{tag, 8 hex}`.
/// Ordered so that a later owner of the partition sorts after an earlier one: it
/// begins at or past the offsets committed before it; two that begin at one offset
/// are ordered by time, and the random tag tells apart two of one millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Assignment {
    first_offset: i64,
    assigned_ms: i64,
    tag: u32,
}

impl Assignment {
    pub fn parse(text: &str) -> Option<Assignment> {
        let mut parts = text.splitn(3, '-');
        let first_offset = parts.next()?.parse().ok()?;
        let assigned_ms = parts.next()?.parse().ok()?;
        let tag = parts.next().filter(|tag| tag.len() == 8)?;
        let tag = u32::from_str_radix(tag, 16).ok()?;
        Some(Assignment {
            first_offset,
            assigned_ms,
            tag,
        })
    }
}

impl std::fmt::Display for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{:08x}",
            self.first_offset, self.assigned_ms, self.tag
        )
    }
}

/// What the name of a Kafka object tells: its offsets and the assignment that read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaObject {
    pub first: i64,
    pub last: i64,
    pub assignment: Assignment,
}

impl Partitioner {
    pub fn parse(template: &str, time_field: Option<String>) -> Result<Self, String> {
        let template = Template::parse(template, "partition").map_err(|error| error.to_string())?;
        let fields = template::top_level_names(
            template
                .placeholders()
                .filter(|name| !TIME_PARTS.contains(name))
                .chain(time_field.as_deref()),
        );
        Ok(Partitioner {
            template,
            time_field,
            fields,
            minute: None,
        })
    }

    /// The payload's top-level fields rendering reads: what the caller reads out of
    /// each payload for [`Partitioner::render_into`].
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The partition path of `event` (without leading or trailing `/`) written into
    /// `out` (cleared first: one buffer serves every event), and its event time in
    /// epoch milliseconds. `fields`: the payload's [`Partitioner::fields`], in order
    /// (the sink reads them in the same pass as its schema check).
    pub fn render_into(
        &mut self,
        event: &Event,
        fields: &[Option<FieldValue>],
        out: &mut String,
    ) -> i64 {
        let names = &self.fields;
        let payload = &event.payload[..];
        let millis = self
            .time_field
            .as_deref()
            .and_then(|path| lookup(names, fields, payload, path))
            .and_then(|field| match field {
                FieldRef::Text(text) => crate::storage::text_time_ms(text),
                FieldRef::Json(value) => crate::storage::time_ms(value),
            })
            .unwrap_or(event.timestamp_ms);
        let minute = millis.div_euclid(60_000);
        if self
            .minute
            .as_ref()
            .is_none_or(|(cached, _)| *cached != minute)
        {
            self.minute = Some((minute, time_parts(millis)));
        }
        let parts = &self.minute.as_ref().expect("filled above").1;
        out.clear();
        self.template.render_into(out, |name, out| {
            match TIME_PARTS.iter().position(|part| *part == name) {
                Some(index) => out.push_str(&parts[index]),
                None => match lookup(names, fields, payload, name) {
                    Some(FieldRef::Text(text)) => clean_into(text, out),
                    Some(FieldRef::Json(value)) => {
                        out.push_str(&template::value_text(Some(value), clean))
                    }
                    None => out.push_str(&template::value_text(None, clean)),
                },
            }
        });
        let end = out.trim_end_matches('/').len();
        out.truncate(end);
        let start = out.len() - out.trim_start_matches('/').len();
        out.drain(..start);
        millis
    }
}

/// The value at a dotted `path` of `payload`, whose top-level fields `names` are
/// `fields`, as [`template::field`] finds it in the whole payload.
fn lookup<'a>(
    names: &[String],
    fields: &'a [Option<FieldValue>],
    payload: &'a [u8],
    path: &str,
) -> Option<FieldRef<'a>> {
    let mut steps = path.split('.');
    let first = steps.next()?;
    let top = fields
        .get(names.iter().position(|name| name == first)?)?
        .as_ref()?
        .get(payload);
    steps.try_fold(top, |field, step| match field {
        FieldRef::Json(value) => value.get(step).map(FieldRef::Json),
        // A string has no fields.
        FieldRef::Text(_) => None,
    })
}

/// `date`, `year`, `month`, `day`, `hour`, `minute` of `millis` in UTC, in the order of
/// [`TIME_PARTS`].
fn time_parts(millis: i64) -> [String; 6] {
    let time = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or_default();
    [
        format!("{:04}-{:02}-{:02}", time.year(), time.month(), time.day()),
        format!("{:04}", time.year()),
        format!("{:02}", time.month()),
        format!("{:02}", time.day()),
        format!("{:02}", time.hour()),
        format!("{:02}", time.minute()),
    ]
}

/// A field value may not add path levels or characters query engines trip on.
fn clean(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    clean_into(text, &mut cleaned);
    cleaned
}

/// [`clean`], appended to `out` (no string per event).
fn clean_into(text: &str, out: &mut String) {
    let start = out.len();
    out.extend(text.chars().map(|c| {
        if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+') {
            c
        } else {
            '_'
        }
    }));
    if matches!(&out[start..], "" | "." | "..") {
        out.truncate(start);
        out.push('_');
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
        header("kafka.assignment").and_then(Assignment::parse),
    ) {
        (Some(partition), Some(offset), Some(assignment)) => (
            Stream::Kafka {
                topic: event.origin.to_string(),
                partition,
                assignment,
            },
            Some(offset),
        ),
        _ => (Stream::Other, None),
    }
}

/// The offsets and assignment of an object of `topic`-`partition` called `name` (a
/// file name with its extension), if it is one.
pub fn kafka_object(name: &str, topic: &str, partition: i32) -> Option<KafkaObject> {
    let rest = name.strip_prefix(&format!("{}-{partition}-", clean(topic)))?;
    let stem = rest.split('.').next()?;
    let mut parts = stem.splitn(3, '-');
    let first = parts
        .next()
        .filter(|digits| digits.len() == 20)?
        .parse()
        .ok()?;
    let last = parts.next()?.parse().ok()?;
    let assignment = Assignment::parse(parts.next()?)?;
    Some(KafkaObject {
        first,
        last,
        assignment,
    })
}

/// The file name (without extension) of an object of `stream` holding offsets
/// `offsets` (Kafka), else whose first event had `first_timestamp_ms` and whose
/// contents hash to `digest`.
pub fn object_stem(
    stream: &Stream,
    offsets: Option<(i64, i64)>,
    first_timestamp_ms: i64,
    digest: &[u8],
) -> String {
    match (stream, offsets) {
        (
            Stream::Kafka {
                topic,
                partition,
                assignment,
            },
            Some((first, last)),
        ) => format!(
            "{}-{partition}-{first:020}-{last}-{assignment}",
            clean(topic)
        ),
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

    /// The partition and time of `event`, rendered into a buffer that held another's.
    fn render(partitioner: &mut Partitioner, event: &Event) -> (String, i64) {
        let mut out = "/stale/".to_owned();
        let mut fields = Vec::new();
        super::super::scan::unchecked_fields(event, partitioner.fields(), &mut fields);
        let millis = partitioner.render_into(event, &fields, &mut out);
        (out, millis)
    }

    #[test]
    fn partitions_render_event_time_and_cleaned_fields() {
        let mut hive =
            Partitioner::parse("dt={date}/hour={hour}/device={device_id}", None).unwrap();
        // 2026-11-29T10:42:00Z
        let at = 1_795_948_920_000;
        assert_eq!(
            render(&mut hive, &event(r#"{"device_id":"a/b c"}"#, at)),
            ("dt=2026-11-29/hour=10/device=a_b_c".to_owned(), at)
        );
        assert_eq!(
            render(&mut hive, &event("not json", at)).0,
            "dt=2026-11-29/hour=10/device=_"
        );
        let mut by_field = Partitioner::parse("{year}/{month}/{day}", Some("ts".into())).unwrap();
        assert_eq!(
            render(
                &mut by_field,
                &event(r#"{"ts":"2024-02-03T04:05:06Z"}"#, at)
            ),
            ("2024/02/03".to_owned(), 1_706_933_106_000)
        );
        assert_eq!(
            render(&mut by_field, &event(r#"{"ts":0}"#, at)),
            ("1970/01/01".to_owned(), 0)
        );
    }

    fn record(offset: i64, assignment: &str) -> Event {
        let mut record = event("{}", 5);
        record.origin = "sensors".into();
        record.headers = vec![
            ("kafka.partition".into(), Bytes::from("3")),
            ("kafka.offset".into(), Bytes::from(offset.to_string())),
            (
                "kafka.assignment".into(),
                Bytes::from(assignment.to_owned()),
            ),
        ];
        record
    }

    #[test]
    fn kafka_events_name_objects_by_partition_offsets_and_assignment() {
        let (stream, offset) = stream_of(&record(1234, "1200-1795948920000-0000beef"));
        assert_eq!(offset, Some(1234));
        let stem = object_stem(&stream, Some((1234, 1300)), 5, &[0; 32]);
        assert_eq!(
            stem,
            "sensors-3-00000000000000001234-1300-1200-1795948920000-0000beef"
        );
        let named = kafka_object(&format!("{stem}.jsonl.gz"), "sensors", 3).unwrap();
        assert_eq!((named.first, named.last), (1234, 1300));
        let Stream::Kafka { assignment, .. } = stream else {
            panic!("{stream:?}")
        };
        assert_eq!(named.assignment, assignment);
        assert_eq!(
            kafka_object(&format!("{stem}.parquet"), "sensors", 30),
            None
        );
        assert_eq!(
            kafka_object("sensors-3-1234-1300-1200-1-0000beef.parquet", "sensors", 3),
            None
        );
        assert_eq!(
            kafka_object("sensors-3-00000000000000001234.parquet", "sensors", 3),
            None,
            "a name without an assignment"
        );

        // Another assignment of the partition is another stream, and sorts after the
        // earlier one if it begins further on or later.
        let (reassigned, _) = stream_of(&record(1234, "1200-1795948990000-00000001"));
        assert_ne!(
            reassigned,
            stream_of(&record(1234, "1200-1795948920000-0000beef")).0
        );
        let order = |a: &str, b: &str| {
            let parse = |text: &str| Assignment::parse(text).unwrap();
            parse(a).cmp(&parse(b))
        };
        assert!(order("1200-1795948990000-00000001", "1200-1795948920000-ffffffff").is_gt());
        assert!(order("1300-1795948920000-00000000", "1200-1795948990000-ffffffff").is_gt());

        let (other, none) = stream_of(&event("{}", 5));
        assert_eq!(other, Stream::Other);
        assert_eq!(
            object_stem(&other, none.map(|o| (o, o)), 5, &[0xab; 32]),
            "5-abababababababab"
        );
        let mut unassigned = record(1234, "");
        unassigned.headers.pop();
        assert_eq!(
            stream_of(&unassigned),
            (Stream::Other, None),
            "no assignment, no position"
        );
    }
}
