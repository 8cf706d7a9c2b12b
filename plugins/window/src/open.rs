//! The open windows, held whole in the instance between calls and kept in the stage's
//! state as a log ([`crate::log`]): a call folds its events into the windows here, and
//! at its end writes the windows it changed (and those it closed) as one log entry.
//!
//! The copy here mirrors the state, which other calls may change behind it: another
//! instance of the stage (a pool, `parallelism`), or a call of this instance whose writes
//! the host discarded (a failed call, a batch whose outputs were not taken, a commit
//! refused). So every call that writes the state also writes [`WRITER`], naming the
//! instance and the call, in the same transaction; a call trusts the copy only when the
//! state's `WRITER` names this instance's latest writing call, which holds exactly when
//! that call's writes were committed and no call has committed since. Otherwise the
//! copy is read again from the state: every log entry, in order, and the windows a
//! store written before the log kept one entry each (`w/{end}/{key}`), which move into
//! the log as they change or all at once at the next compaction.
//!
//! The log is compacted when it holds more than twice the open windows' size: the call
//! writes every open window into fresh entries and deletes the old ones, in the same
//! transaction, so that the log stays within a small multiple of the open windows.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::log::{self, Chunks, LOG, RECORD_OVERHEAD, Record};
use crate::window::{self, Bucket, Key, Store, WINDOWS};

/// State key of the last call that wrote the stage's state: its instance and its number.
pub const WRITER: &str = "writer";

/// A log this small is never compacted: rewriting the open windows would cost more than
/// it saves.
pub(crate) const COMPACTION_FLOOR: usize = 256 << 10;

/// Largest log entry written, below the stage's `state_value_bytes`: a redb value this
/// size is still written in one piece.
const ENTRY_BYTES: usize = 256 << 10;

pub struct OpenWindows {
    /// This instance among those writing the stage's state (random: instances do not
    /// know each other, and one restarted after a trap must not pass for its ancestor).
    instance: u64,
    /// The writing calls of this instance so far.
    calls: u64,
    /// Open windows by end, then by key JSON: where in `slots` each is.
    by_end: BTreeMap<i64, HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>>,
    slots: Vec<Option<Slot>>,
    /// Slots freed by closed windows, for the next new ones.
    free: Vec<usize>,
    /// Slots of windows changed in the current call, in the order first changed.
    dirty: Vec<usize>,
    /// Windows closed in the current call: (end, key JSON), and whether the state
    /// holds them under a key of their own (`w/...`) rather than in the log.
    closed: Vec<(i64, Box<str>, bool)>,
    /// State keys of the log's entries, in order.
    entries: Vec<String>,
    /// The log's size, keys and values.
    log_bytes: usize,
    /// The size of the open windows' records: what a compacted log holds.
    live_bytes: usize,
    /// The sequence number of the next entry.
    next_sequence: u64,
    /// Windows still held under a key of their own, from before the log.
    legacy: usize,
    /// Largest entry to write (the stage's `state_value_bytes`, at most [`ENTRY_BYTES`]).
    entry_bytes: usize,
    /// Past this, a compaction would not fit in one call's writes
    /// (`state_write_bytes_per_call`): the log grows instead.
    write_bytes_per_call: usize,
}

struct Slot {
    end: i64,
    bucket: Bucket,
    dirty: bool,
    /// Held under `w/{end}/{key}` (a store from before the log), not yet in the log.
    legacy: bool,
    /// The size of its latest record, its share of `live_bytes`.
    record_bytes: usize,
}

impl OpenWindows {
    pub fn new(value_bytes: usize, write_bytes_per_call: usize) -> Self {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u8(0);
        OpenWindows::with_instance(random.finish(), value_bytes, write_bytes_per_call)
    }

    pub fn with_instance(instance: u64, value_bytes: usize, write_bytes_per_call: usize) -> Self {
        OpenWindows {
            instance,
            calls: 0,
            by_end: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            entries: Vec::new(),
            log_bytes: 0,
            live_bytes: 0,
            next_sequence: 0,
            legacy: 0,
            entry_bytes: value_bytes.min(ENTRY_BYTES),
            write_bytes_per_call,
        }
    }

    fn marker(&self) -> [u8; 16] {
        let mut marker = [0; 16];
        marker[..8].copy_from_slice(&self.instance.to_le_bytes());
        marker[8..].copy_from_slice(&self.calls.to_le_bytes());
        marker
    }

    /// Start a call: keep the windows held here only if the state is still what this
    /// instance's last writing call left, else read them from the state.
    pub fn begin(&mut self, store: &impl Store) {
        debug_assert!(
            self.dirty.is_empty() && self.closed.is_empty(),
            "a call ended without writing back"
        );
        let mirrored = self.calls > 0
            && store
                .get(WRITER)
                .is_some_and(|writer| writer == self.marker());
        if !mirrored {
            self.reload(store);
        }
    }

    fn reload(&mut self, store: &impl Store) {
        self.by_end.clear();
        self.slots.clear();
        self.free.clear();
        self.entries.clear();
        self.log_bytes = 0;
        self.live_bytes = 0;
        self.next_sequence = 0;
        self.legacy = 0;
        for (state_key, bytes) in store.scan(WINDOWS, u32::MAX) {
            // A window the plugin cannot read back is dropped rather than kept forever.
            if let (Some(end), Some(bucket)) = (window::end_of(&state_key), Bucket::decode(&bytes))
            {
                self.put(end, bucket, RECORD_OVERHEAD + bytes.len(), true);
            }
        }
        for (state_key, entry) in store.scan(LOG, u32::MAX) {
            if let Some(sequence) = log::sequence_of(&state_key) {
                self.next_sequence = self.next_sequence.max(sequence + 1);
            }
            self.log_bytes += state_key.len() + entry.len();
            self.entries.push(state_key);
            for record in log::records(&entry).unwrap_or_default() {
                match record {
                    Record::Window { end, bucket } => {
                        if let Some(decoded) = Bucket::decode(bucket) {
                            self.put(end, decoded, RECORD_OVERHEAD + bucket.len(), false);
                        }
                    }
                    Record::Closed { end, key } => {
                        self.remove(end, key);
                    }
                }
            }
        }
    }

    /// Hold `bucket` as the window ending at `end` (replacing what was held), as read
    /// from the state.
    fn put(&mut self, end: i64, bucket: Bucket, record_bytes: usize, legacy: bool) {
        let slot = Slot {
            end,
            dirty: false,
            legacy,
            record_bytes,
            bucket,
        };
        let keys = self.by_end.entry(end).or_default();
        if let Some(&index) = keys.get(slot.bucket.key.json()) {
            let old = self.slots[index]
                .replace(slot)
                .expect("indexed slots hold a window");
            self.live_bytes -= old.record_bytes;
            self.legacy -= old.legacy as usize;
        } else {
            let index = allocate(&mut self.slots, &mut self.free);
            keys.insert(slot.bucket.key.json().into(), index);
            self.slots[index] = Some(slot);
        }
        self.live_bytes += record_bytes;
        self.legacy += legacy as usize;
    }

    /// Stop holding the window of key JSON `key` ending at `end`; it, if it was held.
    fn remove(&mut self, end: i64, key: &str) -> Option<Slot> {
        let keys = self.by_end.get_mut(&end)?;
        let index = keys.remove(key)?;
        if keys.is_empty() {
            self.by_end.remove(&end);
        }
        let slot = self.slots[index]
            .take()
            .expect("indexed slots hold a window");
        self.free.push(index);
        self.live_bytes -= slot.record_bytes;
        self.legacy -= slot.legacy as usize;
        Some(slot)
    }

    /// The window of key JSON `key` (as [`Key::canonical`] gives it) ending at `end`,
    /// made with `new` when not open, and marked changed in this call.
    pub fn window_mut(
        &mut self,
        end: i64,
        key: &str,
        new: impl FnOnce(Key) -> Bucket,
    ) -> &mut Bucket {
        let keys = self.by_end.entry(end).or_default();
        let index = match keys.get(key) {
            Some(&index) => index,
            None => {
                let index = allocate(&mut self.slots, &mut self.free);
                keys.insert(key.into(), index);
                let key = Key::parse(key).expect("a canonical key is JSON");
                self.slots[index] = Some(Slot {
                    end,
                    bucket: new(key),
                    dirty: false,
                    legacy: false,
                    record_bytes: 0,
                });
                index
            }
        };
        let slot = self.slots[index]
            .as_mut()
            .expect("indexed slots hold a window");
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(index);
        }
        &mut slot.bucket
    }

    /// Close up to `max` windows ending at or before `closed_before` (every window with
    /// `all`), earliest end first and by key within an end; they leave the state when
    /// the call ends.
    pub fn close(&mut self, closed_before: i64, all: bool, max: u32) -> Vec<(i64, Bucket)> {
        let mut closed = Vec::new();
        while closed.len() < max as usize {
            let Some((&end, keys)) = self.by_end.first_key_value() else {
                break;
            };
            if end > closed_before && !all {
                break;
            }
            let mut due: Vec<(&str, Box<str>)> = keys
                .iter()
                .map(|(json, &index)| {
                    let slot = self.slots[index]
                        .as_ref()
                        .expect("indexed slots hold a window");
                    (slot.bucket.key.text(), json.clone())
                })
                .collect();
            due.sort_unstable();
            due.truncate(max as usize - closed.len());
            let due: Vec<Box<str>> = due.into_iter().map(|(_, json)| json).collect();
            for json in due {
                let slot = self.remove(end, &json).expect("listed as open");
                self.closed.push((end, json, slot.legacy));
                closed.push((end, slot.bucket));
            }
        }
        // A window changed and closed in one call is only closed.
        let slots = &self.slots;
        self.dirty.retain(|&index| slots[index].is_some());
        closed
    }

    /// End a call that wrote the state (`wrote`) or changed windows: write the changed
    /// and closed windows to the log (or compact it), and name this call as the
    /// state's writer.
    pub fn end(&mut self, store: &mut impl Store, wrote: bool) {
        let changed = !self.dirty.is_empty() || !self.closed.is_empty();
        let compact = self.log_bytes > 2 * self.live_bytes + COMPACTION_FLOOR
            && 2 * self.live_bytes < self.write_bytes_per_call;
        let mut legacy_key = String::new();
        let mut chunks = Chunks::new(self.entry_bytes);
        if compact {
            for entry in std::mem::take(&mut self.entries) {
                store.delete(&entry);
            }
            self.log_bytes = 0;
            for slot in self.slots.iter_mut().flatten() {
                slot.write(&mut chunks, &mut self.live_bytes, &mut legacy_key, store);
            }
            self.legacy = 0;
        } else {
            for &index in &self.dirty {
                let slot = self.slots[index]
                    .as_mut()
                    .expect("changed windows are open");
                if slot.write(&mut chunks, &mut self.live_bytes, &mut legacy_key, store) {
                    self.legacy -= 1;
                }
            }
        }
        for (end, json, legacy) in self.closed.drain(..) {
            if legacy {
                let key = Key::parse(&json).expect("a held key is JSON");
                window::write_window_key(&mut legacy_key, end, key.text());
                store.delete(&legacy_key);
            } else if !compact {
                chunks.closed(end, &json);
            }
        }
        self.dirty.clear();
        for entry in chunks.finish() {
            let state_key = log::entry_key(self.next_sequence, self.instance);
            self.next_sequence += 1;
            store.put(&state_key, &entry);
            self.log_bytes += state_key.len() + entry.len();
            self.entries.push(state_key);
        }
        if wrote || changed || compact {
            self.calls += 1;
            store.put(WRITER, &self.marker());
        }
    }
}

impl Slot {
    /// Write the window's record into the log's `chunks`, keeping `live_bytes` (the
    /// open windows' record sizes) in step, and delete its entry from before the log if
    /// it had one: whether it had.
    fn write(
        &mut self,
        chunks: &mut Chunks,
        live_bytes: &mut usize,
        legacy_key: &mut String,
        store: &mut impl Store,
    ) -> bool {
        let record_bytes = chunks.window(self.end, |out| self.bucket.encode_into(out));
        *live_bytes = *live_bytes - self.record_bytes + record_bytes;
        self.record_bytes = record_bytes;
        self.dirty = false;
        let legacy = std::mem::take(&mut self.legacy);
        if legacy {
            window::write_window_key(legacy_key, self.end, self.bucket.key.text());
            store.delete(legacy_key);
        }
        legacy
    }
}

/// A free slot: one a closed window left, or a new one.
fn allocate(slots: &mut Vec<Option<Slot>>, free: &mut Vec<usize>) -> usize {
    free.pop().unwrap_or_else(|| {
        slots.push(None);
        slots.len() - 1
    })
}

/// FNV-1a over a key's JSON, 64 bits at a time, then mixed. The keys come from the
/// stage's own events (device names), which the pipeline already trusts, and
/// SipHash in Wasm cost as much as the rest of a lookup.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            hash =
                (hash ^ u64::from_le_bytes(word.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        for &byte in words.remainder() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        // A multiply carries low bits up only: mix (murmur3's finalizer), so that the
        // table's index, from the low bits, and its control bits, from the top, both
        // depend on every byte.
        let mut hash = self.0;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}
