//! What the broker holds for one session: the QoS 1 messages routed to it and not yet
//! acknowledged by its client. A persistent session's queue is a disk [`Buffer`], so a
//! message is on disk before its publisher gets a PUBACK; a clean session's is in
//! memory, since MQTT discards it with the connection anyway.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::buffer::{Buffer, BufferError, Entry, WhenFull};

/// Disk segments of a persistent session's queue: small, since a live subscriber
/// re-reads the open segment as it grows.
const SEGMENT_BYTES: u64 = 256 << 10;

/// Messages a clean session's queue holds before it drops its oldest (counted).
const MEMORY_ENTRIES: usize = 10_000;

pub enum Queue {
    Durable(Arc<Buffer>),
    Memory(MemoryQueue),
}

impl Queue {
    pub fn durable(dir: &Path, max_bytes: u64) -> Result<Queue, BufferError> {
        Buffer::open(dir, max_bytes, SEGMENT_BYTES, WhenFull::Block).map(Queue::Durable)
    }

    pub fn memory() -> Queue {
        Queue::Memory(MemoryQueue::default())
    }

    /// Hold `entries`; a durable queue returns once they are on disk (waiting for
    /// room when full: the publisher gets no PUBACK until the subscriber catches up).
    pub async fn push(&self, entries: Vec<Entry>) -> Result<(), BufferError> {
        match self {
            Queue::Durable(buffer) => buffer.push(entries).await,
            Queue::Memory(memory) => {
                memory.push(entries);
                Ok(())
            }
        }
    }

    pub fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, Entry)>, BufferError> {
        match self {
            Queue::Durable(buffer) => buffer.read(from, max),
            Queue::Memory(memory) => Ok(memory.read(from, max)),
        }
    }

    pub fn ack(&self, seq: u64) -> Result<(), BufferError> {
        match self {
            Queue::Durable(buffer) => buffer.ack(seq),
            Queue::Memory(memory) => {
                memory.ack(seq);
                Ok(())
            }
        }
    }

    /// Where a new connection starts: the first message not acknowledged.
    pub fn restart_sending(&self) -> u64 {
        match self {
            Queue::Durable(buffer) => buffer.restart_sending(),
            Queue::Memory(memory) => memory.first_unacked(),
        }
    }

    pub fn appended(&self) -> &Notify {
        match self {
            Queue::Durable(buffer) => &buffer.appended,
            Queue::Memory(memory) => &memory.appended,
        }
    }
}

#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<MemoryInner>,
    appended: Notify,
}

#[derive(Default)]
struct MemoryInner {
    /// Held messages in sequence order; `None` once acknowledged out of order.
    entries: VecDeque<(u64, Option<Entry>)>,
    next_seq: u64,
}

impl MemoryQueue {
    fn push(&self, entries: Vec<Entry>) {
        let mut inner = self.inner.lock().unwrap();
        for entry in entries {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.entries.push_back((seq, Some(entry)));
        }
        let over = inner.entries.len().saturating_sub(MEMORY_ENTRIES);
        if over > 0 {
            inner.entries.drain(..over);
            ::metrics::counter!("sluice_broker_dropped_total", "reason" => "clean_session_queue_full")
                .increment(over as u64);
            tracing::warn!(
                dropped = over,
                "embedded broker: a clean session's queue is full; dropped its oldest messages"
            );
        }
        drop(inner);
        self.appended.notify_waiters();
    }

    fn read(&self, from: u64, max: usize) -> Vec<(u64, Entry)> {
        let inner = self.inner.lock().unwrap();
        let start = inner.entries.partition_point(|(seq, _)| *seq < from);
        inner
            .entries
            .range(start..)
            .filter_map(|(seq, entry)| Some((*seq, entry.clone()?)))
            .take(max)
            .collect()
    }

    fn ack(&self, seq: u64) {
        let mut inner = self.inner.lock().unwrap();
        if let Ok(index) = inner.entries.binary_search_by_key(&seq, |(s, _)| *s) {
            inner.entries[index].1 = None;
        }
        while matches!(inner.entries.front(), Some((_, None))) {
            inner.entries.pop_front();
        }
    }

    fn first_unacked(&self) -> u64 {
        let inner = self.inner.lock().unwrap();
        inner
            .entries
            .front()
            .map_or(inner.next_seq, |(seq, _)| *seq)
    }
}
