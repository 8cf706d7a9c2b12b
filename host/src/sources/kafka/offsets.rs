//! Which offsets may be committed: per partition, the events handed to the pipeline in
//! offset order, each marked when every sink downstream has acknowledged it. The commit
//! point only moves past a contiguous run of acknowledged offsets, so batches that
//! finish out of order never commit an offset whose predecessors are still in flight.
//!
//! Partitions come and go with rebalances. Each assignment gets a new generation, and an
//! acknowledgement from an older generation (an event of a partition that was revoked
//! and came back) is ignored: the partition's new owner has already re-read it. Each
//! assignment also has a name its events carry (`kafka.assignment`, see
//! [`Offsets::reading`]).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A partition of a topic.
pub type PartitionKey = (Arc<str>, i32);

#[derive(Default)]
pub struct Offsets {
    state: Mutex<State>,
    /// Signalled when a partition's in-flight events drain.
    drained: Condvar,
    /// Counts assignments and revocations: what [`Offsets::reading`] returned for a
    /// partition holds while this has not moved, so the source asks once per partition,
    /// not per event.
    changes: AtomicU64,
}

#[derive(Default)]
struct State {
    partitions: HashMap<PartitionKey, Partition>,
    next_generation: u64,
}

struct Partition {
    generation: u64,
    /// Events in the pipeline, in offset order, with whether they are acknowledged.
    in_flight: VecDeque<(i64, bool)>,
    /// The next offset to consume after everything acknowledged (what a commit stores).
    acknowledged: Option<i64>,
    /// What the last commit stored.
    committed: Option<i64>,
    /// When the partition was assigned (epoch ms), and a random tag: with the first
    /// offset read they name the assignment.
    assigned_ms: i64,
    tag: u32,
    name: Option<Bytes>,
}

impl State {
    fn track(&mut self, key: &PartitionKey, generation: u64, offset: i64) -> bool {
        match self.partitions.get_mut(key) {
            Some(partition) if partition.generation == generation => {
                partition.in_flight.push_back((offset, false));
                true
            }
            _ => false,
        }
    }
}

impl Offsets {
    /// The consumer was given these partitions: track each under a new generation.
    pub fn assign(&self, partitions: impl IntoIterator<Item = PartitionKey>) {
        let mut state = self.state.lock().unwrap();
        self.changes.fetch_add(1, Ordering::AcqRel);
        for key in partitions {
            state.next_generation += 1;
            let generation = state.next_generation;
            state.partitions.insert(
                key,
                Partition {
                    generation,
                    in_flight: VecDeque::new(),
                    acknowledged: None,
                    committed: None,
                    assigned_ms: crate::event::now_ms(),
                    // Random per process and call (std's hasher keys).
                    tag: std::collections::hash_map::RandomState::new().hash_one(generation) as u32,
                    name: None,
                },
            );
        }
    }

    /// `offset` of a partition is read: the partition's current generation, if it is
    /// assigned, and the name of this assignment, `{first offset read}-{assigned at,
    /// epoch ms}-{random tag, 8 hex}`. The object store sink orders a partition's
    /// owners by it: a later owner begins reading at or past the offsets committed
    /// before it, so it sorts after an earlier one.
    pub fn reading(&self, key: &PartitionKey, offset: i64) -> Option<(u64, Bytes)> {
        let mut state = self.state.lock().unwrap();
        let partition = state.partitions.get_mut(key)?;
        let name = partition.name.get_or_insert_with(|| {
            Bytes::from(format!(
                "{offset}-{}-{:08x}",
                partition.assigned_ms, partition.tag
            ))
        });
        Some((partition.generation, name.clone()))
    }

    /// Record that these events (`offset` of a partition, read under `generation`) enter
    /// the pipeline, under one lock for the batch. False for an event whose partition was
    /// revoked (or reassigned) since it was read: that event must not be sent.
    pub fn track_all<'a>(
        &self,
        reads: impl IntoIterator<Item = (&'a PartitionKey, u64, i64)>,
    ) -> Vec<bool> {
        let mut state = self.state.lock().unwrap();
        reads
            .into_iter()
            .map(|(key, generation, offset)| state.track(key, generation, offset))
            .collect()
    }

    /// Where [`Offsets::reading`]'s answers stand: they hold until this changes.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Every sink has `offset` of a partition (of `generation`).
    pub fn acknowledge(&self, key: &PartitionKey, generation: u64, offset: i64) {
        let mut state = self.state.lock().unwrap();
        let Some(partition) = state.partitions.get_mut(key) else {
            return;
        };
        if partition.generation != generation {
            return;
        }
        if let Ok(at) = partition
            .in_flight
            .binary_search_by_key(&offset, |(offset, _)| *offset)
        {
            partition.in_flight[at].1 = true;
        }
        while let Some(&(offset, true)) = partition.in_flight.front() {
            partition.in_flight.pop_front();
            partition.acknowledged = Some(offset + 1);
        }
        if partition.in_flight.is_empty() {
            self.drained.notify_all();
        }
    }

    /// Offsets acknowledged since the last commit, for the partitions `which` selects;
    /// they count as committed from now on.
    pub fn take_commits(&self, which: impl Fn(&PartitionKey) -> bool) -> Vec<(PartitionKey, i64)> {
        let mut state = self.state.lock().unwrap();
        state
            .partitions
            .iter_mut()
            .filter(|(key, _)| which(key))
            .filter_map(|(key, partition)| {
                let next = partition.acknowledged?;
                (partition.committed != Some(next)).then(|| {
                    partition.committed = Some(next);
                    (key.clone(), next)
                })
            })
            .collect()
    }

    /// Wait until the given partitions have nothing in flight, or `timeout` passes.
    /// Returns how many events are still in flight.
    pub fn wait_drained(&self, which: impl Fn(&PartitionKey) -> bool, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            let in_flight: usize = state
                .partitions
                .iter()
                .filter(|(key, _)| which(key))
                .map(|(_, partition)| partition.in_flight.len())
                .sum();
            let now = Instant::now();
            if in_flight == 0 || now >= deadline {
                return in_flight;
            }
            state = self.drained.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Forget revoked partitions; acknowledgements still to come for them are ignored.
    pub fn revoke(&self, which: impl Fn(&PartitionKey) -> bool) {
        let mut state = self.state.lock().unwrap();
        self.changes.fetch_add(1, Ordering::AcqRel);
        state.partitions.retain(|key, _| !which(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> PartitionKey {
        (Arc::from("t"), partition)
    }

    #[test]
    fn commits_only_past_a_contiguous_acknowledged_run() {
        let offsets = Offsets::default();
        offsets.assign([key(0)]);
        let generation = offsets.reading(&key(0), 1).unwrap().0;
        for offset in 10..15 {
            assert!(offsets.track_all([(&key(0), generation, offset)])[0]);
        }
        // 12 and 13 finish first: nothing can be committed while 10 is in flight.
        offsets.acknowledge(&key(0), generation, 12);
        offsets.acknowledge(&key(0), generation, 13);
        assert!(offsets.take_commits(|_| true).is_empty());
        offsets.acknowledge(&key(0), generation, 10);
        assert_eq!(offsets.take_commits(|_| true), [(key(0), 11)]);
        offsets.acknowledge(&key(0), generation, 11);
        assert_eq!(offsets.take_commits(|_| true), [(key(0), 14)]);
        assert!(offsets.take_commits(|_| true).is_empty(), "committed once");
        offsets.acknowledge(&key(0), generation, 14);
        assert_eq!(offsets.take_commits(|_| true), [(key(0), 15)]);
    }

    #[test]
    fn a_revoked_partition_ignores_late_acknowledgements_and_refuses_new_events() {
        let offsets = Offsets::default();
        offsets.assign([key(0), key(1)]);
        let (old, old_name) = offsets.reading(&key(0), 5).unwrap();
        assert!(offsets.track_all([(&key(0), old, 5)])[0]);
        offsets.revoke(|key| key.1 == 0);
        assert!(!offsets.track_all([(&key(0), old, 6)])[0], "revoked: not sent");
        offsets.assign([key(0)]);
        let (new, new_name) = offsets.reading(&key(0), 9).unwrap();
        assert_ne!(old, new);
        assert!(
            old_name.starts_with(b"5-") && new_name.starts_with(b"9-"),
            "{new_name:?}"
        );
        assert_eq!(
            offsets.reading(&key(0), 10).unwrap().1,
            new_name,
            "named once"
        );
        offsets.acknowledge(&key(0), old, 5);
        assert!(offsets.take_commits(|_| true).is_empty());
    }

    #[test]
    fn every_assignment_and_revocation_moves_the_change_count() {
        let offsets = Offsets::default();
        let before = offsets.changes();
        offsets.assign([key(0)]);
        let assigned = offsets.changes();
        assert_ne!(before, assigned);
        let (generation, _) = offsets.reading(&key(0), 1).unwrap();
        assert_eq!(offsets.track_all([(&key(0), generation, 1), (&key(1), generation, 1)]), [true, false]);
        assert_eq!(offsets.changes(), assigned, "reading and tracking change nothing");
        offsets.revoke(|_| true);
        assert_ne!(offsets.changes(), assigned);
    }

    #[test]
    fn waiting_for_a_drain_ends_when_the_last_event_is_acknowledged() {
        let offsets = Arc::new(Offsets::default());
        offsets.assign([key(0)]);
        let generation = offsets.reading(&key(0), 1).unwrap().0;
        assert!(offsets.track_all([(&key(0), generation, 1)])[0]);
        let acknowledger = {
            let offsets = offsets.clone();
            std::thread::spawn(move || offsets.acknowledge(&key(0), generation, 1))
        };
        let left = offsets.wait_drained(|_| true, Duration::from_secs(10));
        acknowledger.join().unwrap();
        assert_eq!(left, 0);
        assert_eq!(offsets.wait_drained(|_| true, Duration::ZERO), 0);
    }
}
