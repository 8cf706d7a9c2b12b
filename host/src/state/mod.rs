//! Per-stage durable key-value state behind the WIT `state` interface.
//!
//! One redb database holds every stage's state, keyed `stage \0 key`. Plugins never
//! write to it directly: an instance collects the writes of one call in a
//! [`Transaction`] and the runtime commits it only when the call succeeded, so a failed
//! batch (trap, timeout) leaves the state as it was.
//!
//! Each stage's stored bytes (keys plus values) are kept as a running total in a second
//! table, updated in the same redb transaction as the writes, so that a commit can be
//! refused *before* it lands when it would take the stage past its quota: a full stage
//! gets an error, the disk never fills. Stores written before the totals existed are
//! measured once, on a stage's first commit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Bytes stored per stage: the sum of its keys' and values' lengths in `TABLE`.
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("state_usage");

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("plugin state store: {0}")]
    Store(String),
    /// The commit would take the stage's stored bytes to `stored`, past `limit`.
    #[error("the stage would store {stored} bytes, over its {limit}-byte quota")]
    Full { stored: u64, limit: u64 },
    /// A scan found more than `limit` bytes of matching entries.
    #[error("a scan found more than {limit} bytes")]
    ScanTooLarge { limit: u64 },
}

fn err(error: impl std::fmt::Display) -> StateError {
    StateError::Store(error.to_string())
}

/// The state of every stage of one host.
pub struct StateStore {
    db: Database,
}

impl StateStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<Arc<Self>, StateError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let db = Database::create(path)
            .map_err(|e| StateError::Store(format!("{}: {e}", path.display())))?;
        Ok(Arc::new(StateStore { db }))
    }

    /// A store that lives in memory only (`sluice plugin test`, unit tests).
    pub fn in_memory() -> Arc<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory redb database always opens");
        Arc::new(StateStore { db })
    }

    fn full_key(stage: &str, key: &str) -> String {
        format!("{stage}\0{key}")
    }

    /// A consistent view of the store, for the reads of one call.
    fn snapshot(&self) -> Result<redb::ReadTransaction, StateError> {
        self.db.begin_read().map_err(err)
    }

    fn get(
        snapshot: &redb::ReadTransaction,
        stage: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let table = match snapshot.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        Ok(table
            .get(Self::full_key(stage, key).as_str())
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    /// Up to `limit` entries under `prefix`; fails past `max_bytes` of keys and values,
    /// before copying more.
    fn scan(
        &self,
        stage: &str,
        prefix: &str,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let start = Self::full_key(stage, prefix);
        let stage_prefix_len = stage.len() + 1;
        let mut found = Vec::new();
        let mut bytes = 0u64;
        for entry in table.range(start.as_str()..).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            let key = key.value();
            if !key.starts_with(start.as_str()) || found.len() == limit {
                break;
            }
            let key = &key[stage_prefix_len..];
            bytes += (key.len() + value.value().len()) as u64;
            if bytes > max_bytes {
                return Err(StateError::ScanTooLarge { limit: max_bytes });
            }
            found.push((key.to_owned(), value.value().to_vec()));
        }
        Ok(found)
    }

    /// Stored bytes of `stage`, counted entry by entry (for stores older than the totals).
    fn measure(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        stage: &str,
    ) -> Result<u64, StateError> {
        let start = Self::full_key(stage, "");
        let end = format!("{stage}\u{1}");
        let mut total = 0u64;
        for entry in table.range(start.as_str()..end.as_str()).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            total += (key.value().len() - start.len() + value.value().len()) as u64;
        }
        Ok(total)
    }

    /// Apply one call's writes, unless they would take the stage past `limit` stored
    /// bytes. A commit that does not grow the stage always succeeds, so that a stage
    /// over a lowered quota can still delete.
    fn apply(
        &self,
        stage: &str,
        writes: &BTreeMap<String, Option<Vec<u8>>>,
        limit: u64,
    ) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        let outcome = (|| {
            let mut table = txn.open_table(TABLE).map_err(err)?;
            let mut usage = txn.open_table(USAGE).map_err(err)?;
            let before = match usage.get(stage).map_err(err)? {
                Some(total) => total.value(),
                None => Self::measure(&table, stage)?,
            };
            let mut stored = before;
            // One buffer for every key of the commit: `stage \0` stays, the key changes.
            let mut full = Self::full_key(stage, "");
            let stage_prefix_len = full.len();
            for (key, value) in writes {
                full.truncate(stage_prefix_len);
                full.push_str(key);
                let old = match value {
                    Some(value) => table.insert(full.as_str(), value.as_slice()),
                    None => table.remove(full.as_str()),
                }
                .map_err(err)?
                .map(|old| old.value().len());
                if let Some(old) = old {
                    stored = stored.saturating_sub((key.len() + old) as u64);
                }
                if let Some(value) = value {
                    stored += (key.len() + value.len()) as u64;
                }
            }
            if stored > limit && stored > before {
                return Err(StateError::Full { stored, limit });
            }
            usage.insert(stage, stored).map_err(err)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => txn.commit().map_err(err),
            Err(error) => {
                txn.abort().map_err(err)?;
                Err(error)
            }
        }
    }
}

/// The uncommitted writes of one plugin call, layered over the stage's committed state.
pub struct Transaction {
    store: Arc<StateStore>,
    /// The committed state this call reads, opened at its first read: one snapshot per
    /// call rather than one per `get`.
    snapshot: Option<redb::ReadTransaction>,
    stage: Arc<str>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Keys and values held in `writes`, the memory a call makes the host hold.
    pending_bytes: u64,
}

/// What one pending write holds in memory.
fn entry_bytes(key: &str, value: Option<usize>) -> u64 {
    (key.len() + value.unwrap_or(0)) as u64
}

impl Transaction {
    pub fn new(store: Arc<StateStore>, stage: Arc<str>) -> Self {
        Transaction {
            store,
            snapshot: None,
            stage,
            writes: BTreeMap::new(),
            pending_bytes: 0,
        }
    }

    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(pending) = self.writes.get(key) {
            return Ok(pending.clone());
        }
        let snapshot = match &mut self.snapshot {
            Some(snapshot) => snapshot,
            none => none.insert(self.store.snapshot()?),
        };
        StateStore::get(snapshot, &self.stage, key)
    }

    /// Write `value` under `key` (`None`: delete it), unless that would leave more than
    /// `limit` bytes pending: then nothing changes, and the error is the bytes it would
    /// have left. One walk of the pending writes: a call writes each of its windows,
    /// its dedup identities, once, and that walk is most of a write's cost.
    pub fn write_within(
        &mut self,
        key: String,
        value: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<(), u64> {
        use std::collections::btree_map::Entry;
        let added = entry_bytes(&key, value.as_ref().map(Vec::len));
        let (replaced, entry) = match self.writes.entry(key) {
            Entry::Occupied(entry) => (
                entry_bytes(entry.key(), entry.get().as_ref().map(Vec::len)),
                Entry::Occupied(entry),
            ),
            vacant => (0, vacant),
        };
        let pending = self.pending_bytes - replaced + added;
        if pending > limit {
            return Err(pending);
        }
        self.pending_bytes = pending;
        match entry {
            Entry::Occupied(mut entry) => {
                entry.insert(value);
            }
            Entry::Vacant(entry) => {
                entry.insert(value);
            }
        }
        Ok(())
    }

    pub fn put(&mut self, key: String, value: Vec<u8>) {
        let _ = self.write_within(key, Some(value), u64::MAX);
    }

    pub fn delete(&mut self, key: String) {
        let _ = self.write_within(key, None, u64::MAX);
    }

    /// Committed entries merged with this call's pending writes, in key order. Fails
    /// past `max_bytes` of committed entries read.
    pub fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        // Deleted keys may hide committed ones: read enough committed entries to fill `limit`.
        let deletes = self.writes.values().filter(|v| v.is_none()).count();
        let mut merged: BTreeMap<String, Vec<u8>> = self
            .store
            .scan(
                &self.stage,
                prefix,
                limit.saturating_add(deletes),
                max_bytes,
            )?
            .into_iter()
            .collect();
        for (key, value) in self
            .writes
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Make this call's writes durable, unless they would take the stage past
    /// `total_limit` stored bytes; either way the pending writes are gone afterwards.
    pub fn commit(&mut self, total_limit: u64) -> Result<(), StateError> {
        // The next call reads what is committed by then.
        self.snapshot = None;
        if self.writes.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.writes);
        self.pending_bytes = 0;
        self.store.apply(&self.stage, &writes, total_limit)
    }

    /// Move this call's writes into a transaction of their own, committed later (or
    /// dropped); this one goes on empty.
    pub fn split_off(&mut self) -> Transaction {
        self.snapshot = None;
        Transaction {
            store: self.store.clone(),
            snapshot: None,
            stage: self.stage.clone(),
            writes: std::mem::take(&mut self.writes),
            pending_bytes: std::mem::take(&mut self.pending_bytes),
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Forget this call's writes.
    pub fn rollback(&mut self) {
        self.snapshot = None;
        self.writes.clear();
        self.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_reads_one_snapshot_and_the_next_call_a_fresh_one() {
        let store = StateStore::in_memory();
        let mut reader = Transaction::new(store.clone(), Arc::from("window"));
        assert_eq!(reader.get("w/1").unwrap(), None);
        let mut writer = Transaction::new(store, Arc::from("window"));
        writer.put("w/1".into(), b"5".to_vec());
        writer.commit(u64::MAX).unwrap();
        assert_eq!(
            reader.get("w/1").unwrap(),
            None,
            "the same call, the same view"
        );
        reader.commit(u64::MAX).unwrap();
        assert_eq!(reader.get("w/1").unwrap(), Some(b"5".to_vec()));
    }

    #[test]
    fn writes_are_visible_in_the_call_and_durable_only_after_commit() {
        let store = StateStore::in_memory();
        let mut txn = Transaction::new(store.clone(), Arc::from("dedup"));
        txn.put("seen/a".into(), b"1".to_vec());
        assert_eq!(txn.get("seen/a").unwrap(), Some(b"1".to_vec()));
        txn.rollback();
        assert_eq!(txn.get("seen/a").unwrap(), None);
        txn.put("seen/a".into(), b"1".to_vec());
        txn.put("seen/b".into(), b"2".to_vec());
        txn.put("other".into(), b"3".to_vec());
        txn.commit(u64::MAX).unwrap();
        let mut other_stage = Transaction::new(store.clone(), Arc::from("x"));
        assert_eq!(
            other_stage.get("seen/a").unwrap(),
            None,
            "stages do not share state"
        );
        let mut next = Transaction::new(store, Arc::from("dedup"));
        next.delete("seen/a".into());
        next.put("seen/c".into(), b"4".to_vec());
        let keys: Vec<String> = next
            .scan_prefix("seen/", 10, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["seen/b", "seen/c"]);
    }

    #[test]
    fn a_stage_is_kept_under_its_quota_and_the_total_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = StateStore::open(&path).unwrap();
        let mut txn = Transaction::new(store.clone(), Arc::from("s"));
        txn.put("a".into(), vec![0; 600]);
        assert_eq!(
            txn.write_within("b".into(), Some(vec![0; 10]), 611),
            Err(612),
            "over the pending limit"
        );
        txn.write_within("a".into(), Some(vec![0; 10]), 11)
            .expect("a rewrite replaces");
        txn.put("a".into(), vec![0; 600]);
        txn.commit(1000).unwrap();
        txn.put("b".into(), vec![0; 600]);
        match txn.commit(1000) {
            Err(StateError::Full { stored, limit }) => assert_eq!((stored, limit), (1202, 1000)),
            other => panic!("expected a full stage, got {other:?}"),
        }
        assert_eq!(
            txn.get("b").unwrap(),
            None,
            "a refused commit leaves nothing"
        );
        drop(txn);
        drop(store);
        let store = StateStore::open(&path).unwrap();
        let mut txn = Transaction::new(store, Arc::from("s"));
        txn.put("b".into(), vec![0; 600]);
        assert!(matches!(txn.commit(1000), Err(StateError::Full { .. })));
        txn.delete("a".into());
        txn.put("b".into(), vec![0; 600]);
        txn.commit(1000).expect("room after the delete");
        assert!(matches!(
            txn.scan_prefix("", 10, 100),
            Err(StateError::ScanTooLarge { limit: 100 })
        ));
    }
}
