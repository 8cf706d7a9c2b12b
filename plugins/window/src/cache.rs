//! Open windows held in the instance between calls, so that a batch reads from the
//! state only the windows this instance has not seen, and writes back each window it
//! changed once, at the end of the call (write-behind).
//!
//! The cache mirrors the stage's state, which other calls may change behind it: another
//! instance of the stage (a pool, `parallelism`), or a call of this instance whose writes
//! the host discarded (a failed call, a batch whose outputs were not taken, a commit
//! refused). So every call that writes the state also writes [`WRITER`], naming the
//! instance and the call, in the same transaction; a call trusts the cache only when
//! the state's `WRITER` names this instance's latest writing call, which holds exactly
//! when that call's writes were committed and no call has committed since. Otherwise
//! the cache starts over, empty, and windows are read from the state again.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::window::{Bucket, Store};

/// State key of the last call that wrote the stage's state: its instance and its number.
pub const WRITER: &str = "writer";

/// What a cached window costs beyond its encoding (the map entry, its key, the bucket).
const ENTRY_OVERHEAD: usize = 160;

pub struct Cache {
    /// This instance among those writing the stage's state (random: instances do not
    /// know each other, and one restarted after a trap must not pass for its ancestor).
    instance: u64,
    /// The writing calls of this instance so far.
    calls: u64,
    windows: HashMap<String, Cached, BuildHasherDefault<Fnv>>,
    /// State keys of windows changed in the current call, in the order first changed.
    dirty: Vec<String>,
    /// About how much memory the cached windows take.
    bytes: usize,
    /// Past this many bytes after a call, the cache starts over: the state, not the
    /// instance's memory, is where windows are kept.
    budget: usize,
}

struct Cached {
    bucket: Bucket,
    dirty: bool,
    /// Its share of [`Cache::bytes`].
    bytes: usize,
}

impl Cache {
    pub fn new(budget: usize) -> Self {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u8(0);
        Cache::with_instance(random.finish(), budget)
    }

    pub fn with_instance(instance: u64, budget: usize) -> Self {
        Cache {
            instance,
            calls: 0,
            windows: HashMap::default(),
            dirty: Vec::new(),
            bytes: 0,
            budget,
        }
    }

    fn marker(&self) -> [u8; 16] {
        let mut marker = [0; 16];
        marker[..8].copy_from_slice(&self.instance.to_le_bytes());
        marker[8..].copy_from_slice(&self.calls.to_le_bytes());
        marker
    }

    /// Start a call: keep the cache only if the state is still what this instance's
    /// last writing call left.
    pub fn begin(&mut self, store: &impl Store) {
        debug_assert!(self.dirty.is_empty(), "a call ended without writing back");
        let mirrored = self.calls > 0
            && store
                .get(WRITER)
                .is_some_and(|writer| writer == self.marker());
        if !mirrored {
            self.windows.clear();
            self.bytes = 0;
        }
    }

    /// The window under `state_key`, read from the state (or made with `new`) when the
    /// cache does not hold it, and marked changed in this call.
    pub fn window_mut(
        &mut self,
        store: &impl Store,
        state_key: &str,
        new: impl FnOnce() -> Bucket,
    ) -> &mut Bucket {
        if !self.windows.contains_key(state_key) {
            let bucket = store
                .get(state_key)
                .and_then(|bytes| Bucket::decode(&bytes))
                .unwrap_or_else(new);
            let cached = Cached {
                bucket,
                dirty: false,
                bytes: 0,
            };
            self.windows.insert(state_key.to_owned(), cached);
        }
        let cached = self
            .windows
            .get_mut(state_key)
            .expect("inserted when missing");
        if !cached.dirty {
            cached.dirty = true;
            self.dirty.push(state_key.to_owned());
        }
        &mut cached.bucket
    }

    /// A window the state no longer holds (closed).
    pub fn forget(&mut self, state_key: &str) {
        if let Some(cached) = self.windows.remove(state_key) {
            self.bytes -= cached.bytes;
        }
    }

    /// End a call that wrote the state (`wrote`) or changed windows: write every
    /// changed window back, and name this call as the state's writer.
    pub fn end(&mut self, store: &mut impl Store, wrote: bool) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut encoded = Vec::new();
        for state_key in &dirty {
            let cached = self
                .windows
                .get_mut(state_key.as_str())
                .expect("a changed window stays cached until the call ends");
            encoded.clear();
            cached.bucket.encode_into(&mut encoded);
            let bytes = ENTRY_OVERHEAD + state_key.len() + encoded.len();
            self.bytes = self.bytes - cached.bytes + bytes;
            cached.bytes = bytes;
            cached.dirty = false;
            store.put(state_key, &encoded);
        }
        if wrote || !dirty.is_empty() {
            self.calls += 1;
            store.put(WRITER, &self.marker());
        }
        if self.bytes > self.budget {
            self.windows.clear();
            self.bytes = 0;
        }
        // Keep the list's room for the next call.
        self.dirty = dirty;
        self.dirty.clear();
    }
}

/// FNV-1a over the state key, 64 bits at a time, then mixed. The cache's keys are the plugin's own
/// (`w/{end}/{key}`), so the flooding that SipHash guards against does not apply, and
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
