//! Readings stored through this sink, for the tests of what reads its objects back (the
//! replay source, the replay and compact jobs).

use super::ObjectStoreSinkConfig;
use crate::event::Event;
use crate::pipeline::{Ack, Batch};
use crate::sinks::Sink;

/// 2026-11-29T10:42:00Z: reading `seq` is taken `seq` minutes later.
pub const AT: i64 = 1_795_948_920_000;
pub const MINUTE: i64 = 60_000;

/// Reading `seq`: of device `d{seq % 3}`, at `AT + seq` minutes.
pub fn reading(seq: i64) -> String {
    format!(
        r#"{{"device_id":"d{}","seq":{seq},"temperature":{}.5,"ts":{}}}"#,
        seq % 3,
        seq,
        AT + seq * MINUTE
    )
}

/// Store readings `0..count` under `dir` in `format`, 7 to an object, in `dt=/hour=`
/// partitions: 40 readings make 3 objects in hour 10 (18 readings) and 4 in hour 11.
pub async fn store(dir: &std::path::Path, format: &str, count: i64) {
    let config: ObjectStoreSinkConfig = toml::from_str(&format!(
        r#"
url = "file://{}"
format = "{format}"
partition = "dt={{date}}/hour={{hour}}"
time_field = "ts"
max_events = 7
"#,
        dir.display()
    ))
    .unwrap();
    let mut sink = Box::new(config.open("lake").unwrap());
    sink.start();
    // One event per batch: objects roll at exactly `max_events`.
    for seq in 0..count {
        let mut batch = Batch::default();
        batch.push(Event::new(reading(seq), "telemetry"), Ack::none());
        sink.write(batch).await.map_err(|(_, error)| error).unwrap();
    }
    assert!(sink.take_rejected().is_empty());
    sink.close().await.unwrap();
}
