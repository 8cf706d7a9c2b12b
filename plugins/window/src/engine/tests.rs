use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::log::LOG;
use crate::open::COMPACTION_FLOOR;
use crate::window::WINDOWS;

#[derive(Default, Clone)]
struct Memory(BTreeMap<String, Vec<u8>>);

impl Store for Memory {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
    fn put(&mut self, key: &str, value: &[u8]) {
        self.0.insert(key.to_owned(), value.to_vec());
    }
    fn delete(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn scan(&self, prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
        self.0
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit as usize)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

fn engine(watermark: Watermark, lateness_ms: i64) -> Engine {
    Engine {
        windows: Windows {
            size_ms: 1000,
            hop_ms: 1000,
        },
        lateness_ms,
        watermark,
        key_field: Some("device".into()),
        aggregates: ["count", "sum", "mean"]
            .iter()
            .map(|a| Aggregate::parse(a).unwrap())
            .collect(),
        flush_on_stop: false,
        open: OpenWindows::with_instance(1, 1 << 20, 16 << 20),
    }
}

fn reading(time: i64, device: &str, value: f64) -> Reading<'static> {
    Reading {
        time,
        key: Cow::Owned(json!(device).to_string()),
        value,
    }
}

impl Engine {
    /// Fold a whole call's readings.
    fn fold(&mut self, store: &mut impl Store, readings: &[Reading], now_ms: i64) -> Vec<Verdict> {
        let mut folding = self.folding(store, now_ms);
        let verdicts = readings
            .iter()
            .map(|reading| folding.fold(reading))
            .collect();
        folding.finish(store);
        verdicts
    }
}

#[test]
fn windows_close_on_the_wall_clock_while_no_event_arrives() {
    let mut engine = engine(Watermark::WallClock, 200);
    let mut store = Memory::default();
    let verdicts = engine.fold(
        &mut store,
        &[
            reading(10_100, "a", 1.0),
            reading(10_900, "a", 3.0),
            reading(11_050, "b", 5.0),
        ],
        10_900,
    );
    assert_eq!(verdicts, vec![Verdict::Folded; 3]);
    assert!(
        engine.close_due(&mut store, 11_100, false, 100).is_empty(),
        "within lateness"
    );
    let closed = engine.close_due(&mut store, 11_200, false, 100);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].payload,
        json!({"device": "a", "window_start": 10_000, "window_end": 11_000, "count": 2, "sum": 4.0, "mean": 2.0})
    );
    let closed = engine.close_due(&mut store, 12_500, false, 100);
    assert_eq!(closed[0].payload["device"], "b");
    assert!(
        store.scan(WINDOWS, 10).is_empty(),
        "closed windows leave the state"
    );
}

/// Count and sum of every window, closed at the end.
fn totals(engine: &mut Engine, store: &mut Memory) -> Vec<(String, i64, Value, Value)> {
    engine.flush_on_stop = true;
    engine
        .close_due(store, 0, true, 1000)
        .into_iter()
        .map(|closed| {
            let payload = closed.payload;
            let count = payload["count"].clone();
            (
                closed.key.text().to_owned(),
                closed.window_end,
                count,
                payload["sum"].clone(),
            )
        })
        .collect()
}

/// Counts the reads and writes that reach the store.
#[derive(Default)]
struct Counting {
    store: Memory,
    reads: std::cell::Cell<usize>,
    writes: usize,
}

impl Store for Counting {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        self.store.get(key)
    }
    fn put(&mut self, key: &str, value: &[u8]) {
        self.writes += 1;
        self.store.put(key, value)
    }
    fn delete(&mut self, key: &str) {
        self.writes += 1;
        self.store.delete(key)
    }
    fn scan(&self, prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
        self.reads.set(self.reads.get() + 1);
        self.store.scan(prefix, limit)
    }
}

#[test]
fn a_batch_writes_one_log_entry_however_many_windows_it_changed() {
    let mut engine = engine(Watermark::Events, 0);
    let mut store = Counting::default();
    let batch: Vec<Reading> = (0..100)
        .map(|n| reading(5_000 + n, &format!("k{n}"), 1.0))
        .collect();
    engine.fold(&mut store, &batch, 0);
    // The first call of an instance reads the state whole (the two scans) and `wm`;
    // it writes its entry, `wm` and `writer`.
    assert_eq!((store.reads.get(), store.writes), (3, 3));
    engine.fold(&mut store, &batch, 0);
    assert_eq!(
        (store.reads.get(), store.writes),
        (5, 5),
        "the second call reads `writer` and `wm` only, and writes its entry and `writer`"
    );
    assert_eq!(store.store.scan(LOG, 10).len(), 2);
    assert_eq!(totals(&mut engine, &mut store.store).len(), 100);
}

#[test]
fn windows_read_back_from_the_log_are_the_ones_held_and_closed_ones_stay_closed() {
    let mut engine = engine(Watermark::Events, 0);
    // Small entries: a call's records spread over several.
    engine.open = OpenWindows::with_instance(1, 200, 16 << 20);
    let mut store = Memory::default();
    let batch: Vec<Reading> = (0..20)
        .map(|n| reading(5_000 + n * 40, ["a", "b", "c"][n as usize % 3], n as f64))
        .collect();
    engine.fold(&mut store, &batch, 0);
    assert!(store.scan(LOG, 100).len() > 1, "split at the value limit");
    engine.fold(&mut store, &[reading(6_500, "a", 1.0)], 0);
    assert_eq!(engine.close_due(&mut store, 0, false, 100).len(), 3);
    // Another instance reads the log: the three closed windows stay closed.
    let mut restarted = Engine {
        open: OpenWindows::with_instance(2, 200, 16 << 20),
        ..self::engine(Watermark::Events, 0)
    };
    assert_eq!(
        totals(&mut restarted, &mut store),
        [("a".to_owned(), 7_000, json!(1), json!(1.0))]
    );
}

#[test]
fn the_log_is_compacted_to_the_open_windows_in_the_call_that_passes_its_bound() {
    let mut engine = engine(Watermark::Events, 0);
    let mut store = Memory::default();
    let mut sums = BTreeMap::new();
    for call in 0..2_000i64 {
        let batch: Vec<Reading> = (0..10)
            .map(|n| reading(5_000 + n, &format!("k{n}"), call as f64))
            .collect();
        engine.fold(&mut store, &batch, 0);
        for n in 0..10 {
            *sums.entry(format!("k{n}")).or_insert(0.0) += call as f64;
        }
    }
    let log_bytes: usize = store
        .scan(LOG, u32::MAX)
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    assert!(
        log_bytes < 2 * COMPACTION_FLOOR,
        "{log_bytes} bytes of log for 10 windows"
    );
    let mut reread = Engine {
        open: OpenWindows::with_instance(2, 1 << 20, 16 << 20),
        ..self::engine(Watermark::Events, 0)
    };
    let expected: Vec<_> = sums
        .into_iter()
        .map(|(key, sum)| (key, 6_000, json!(2_000), json!(sum)))
        .collect();
    assert_eq!(totals(&mut reread, &mut store), expected);
}

#[test]
fn a_store_written_with_one_entry_per_window_is_read_and_moved_into_the_log() {
    let mut store = Memory::default();
    // As the layout before the log wrote them: `w/{end}/{key}`, one bucket each.
    let mut state_key = String::new();
    for (key, sum) in [("a", 1.0), ("b", 2.0)] {
        let mut bucket = Bucket::new(Key::from_value(&json!(key)), false);
        bucket.add(5_500, sum);
        let mut encoded = Vec::new();
        bucket.encode_into(&mut encoded);
        window::write_window_key(&mut state_key, 6_000, key);
        store.put(&state_key, &encoded);
    }
    store.put(WATERMARK, &5_500i64.to_le_bytes());
    let mut engine = engine(Watermark::Events, 0);
    engine.fold(&mut store, &[reading(5_600, "a", 10.0)], 0);
    assert_eq!(
        store.scan(WINDOWS, 10).len(),
        1,
        "the changed window moved into the log"
    );
    let mut reread = Engine {
        open: OpenWindows::with_instance(2, 1 << 20, 16 << 20),
        ..self::engine(Watermark::Events, 0)
    };
    assert_eq!(
        totals(&mut reread, &mut store),
        [
            ("a".to_owned(), 6_000, json!(2), json!(11.0)),
            ("b".to_owned(), 6_000, json!(1), json!(2.0))
        ]
    );
    assert!(
        store.scan(WINDOWS, 10).is_empty(),
        "closed, it left the state"
    );
}

#[test]
fn windows_cached_by_a_call_whose_writes_were_discarded_are_read_again() {
    let mut engine = engine(Watermark::Events, 0);
    let mut store = Memory::default();
    engine.fold(&mut store, &[reading(5_000, "a", 1.0)], 0);
    // The host discards a call's writes (a failed call, outputs not taken): the
    // engine folded into its cache all the same.
    engine.fold(&mut store.clone(), &[reading(5_100, "a", 10.0)], 0);
    engine.fold(&mut store, &[reading(5_200, "a", 100.0)], 0);
    assert_eq!(
        totals(&mut engine, &mut store),
        [("a".to_owned(), 6_000, json!(2), json!(101.0))]
    );
}

#[test]
fn windows_cached_by_one_instance_are_read_again_after_another_wrote() {
    let mut first = engine(Watermark::Events, 0);
    let mut second = Engine {
        open: OpenWindows::with_instance(2, 1 << 20, 16 << 20),
        ..self::engine(Watermark::Events, 0)
    };
    let mut store = Memory::default();
    for (n, from_first) in [true, false, true, true].into_iter().enumerate() {
        let instance = if from_first { &mut first } else { &mut second };
        instance.fold(&mut store, &[reading(5_000 + n as i64, "a", 1.0)], 0);
    }
    assert_eq!(
        totals(&mut second, &mut store),
        [("a".to_owned(), 6_000, json!(4), json!(4.0))]
    );
}

#[test]
fn a_tick_whose_deletions_were_discarded_leaves_no_stale_window_behind() {
    let mut engine = engine(Watermark::Events, 0);
    let mut store = Memory::default();
    engine.fold(
        &mut store,
        &[reading(5_000, "a", 1.0), reading(6_000, "b", 2.0)],
        0,
    );
    // The tick's results were not taken: its deletion of [5000, 6000) is dropped.
    assert_eq!(engine.close_due(&mut store.clone(), 0, false, 100).len(), 1);
    engine.fold(&mut store, &[reading(6_500, "b", 3.0)], 0);
    // An instance started afresh (after a trap) reads the windows from the state.
    engine.open = OpenWindows::with_instance(1, 1 << 20, 16 << 20);
    engine.fold(&mut store, &[reading(6_600, "b", 4.0)], 0);
    engine.fold(&mut store, &[reading(6_700, "b", 5.0)], 0);
    assert_eq!(
        totals(&mut engine, &mut store),
        [
            ("a".to_owned(), 6_000, json!(1), json!(1.0)),
            ("b".to_owned(), 7_000, json!(4), json!(14.0))
        ]
    );
}

#[test]
fn late_events_are_judged_by_the_watermark_and_out_of_order_ones_within_lateness_count() {
    let mut engine = engine(Watermark::Events, 500);
    let mut store = Memory::default();
    engine.fold(
        &mut store,
        &[reading(5_000, "a", 1.0), reading(6_400, "a", 1.0)],
        0,
    );
    // 4_999 belongs to [4000, 5000), closed since the watermark is 6_400 - 500.
    // 5_600 is out of order but its window [5000, 6000) is still open.
    let verdicts = engine.fold(
        &mut store,
        &[reading(4_999, "a", 9.0), reading(5_600, "a", 2.0)],
        0,
    );
    assert_eq!(
        verdicts,
        vec![
            Verdict::Late {
                window_end: 5_000,
                watermark: 5_900
            },
            Verdict::Folded
        ]
    );
    let closed = engine.close_due(&mut store, 0, false, 100);
    assert_eq!(closed.len(), 0, "the wall clock does not count");
    engine.fold(&mut store, &[reading(6_600, "a", 1.0)], 0);
    let closed = engine.close_due(&mut store, 0, false, 100);
    assert_eq!(closed[0].payload["count"], 2);
    assert_eq!(closed[0].payload["sum"], 3.0);
}

#[test]
fn stopping_keeps_open_windows_unless_asked_to_flush() {
    let mut engine = engine(Watermark::Events, 0);
    let mut store = Memory::default();
    engine.fold(&mut store, &[reading(5_000, "a", 1.0)], 0);
    assert!(engine.close_due(&mut store, 0, true, 100).is_empty());
    engine.flush_on_stop = true;
    assert_eq!(engine.close_due(&mut store, 0, true, 100).len(), 1);
}

#[test]
fn a_tick_closes_at_most_its_limit_earliest_first() {
    let mut engine = engine(Watermark::Events, 0);
    let mut store = Memory::default();
    let readings: Vec<Reading> = (0..10).map(|n| reading(n * 1000, "a", 1.0)).collect();
    engine.fold(&mut store, &readings, 0);
    engine.fold(&mut store, &[reading(20_000, "a", 1.0)], 0);
    let first = engine.close_due(&mut store, 0, false, 4);
    assert_eq!(
        first.iter().map(|c| c.window_end).collect::<Vec<_>>(),
        [1000, 2000, 3000, 4000]
    );
    assert_eq!(engine.close_due(&mut store, 0, false, 100).len(), 6);
}

#[test]
fn downsampling_passes_the_first_event_of_each_key_and_interval() {
    let mut store = Memory::default();
    let readings = [
        reading(1_000, "a", 0.0),
        reading(1_500, "a", 0.0),
        reading(1_600, "b", 0.0),
        reading(2_100, "a", 0.0),
    ];
    assert_eq!(
        downsample(&mut store, &readings, 1000),
        [
            Verdict::Forward,
            Verdict::Drop,
            Verdict::Forward,
            Verdict::Forward
        ]
    );
    // The state remembers across batches (and restarts).
    assert_eq!(
        downsample(&mut store, &[reading(2_900, "a", 0.0)], 1000),
        [Verdict::Drop]
    );
}
