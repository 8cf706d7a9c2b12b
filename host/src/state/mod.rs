//! Per-stage durable key-value state behind the WIT `state` interface.
//!
//! One redb database holds every stage's state, keyed `stage \0 key`. Plugins never
//! write to it directly: an instance collects the writes of one call in a
//! [`Transaction`] and the runtime commits it only when the call succeeded, so a failed
//! batch (trap, timeout) leaves the state as it was.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

#[derive(Debug, thiserror::Error)]
#[error("plugin state store: {0}")]
pub struct StateError(String);

fn err(error: impl std::fmt::Display) -> StateError {
    StateError(error.to_string())
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
        let db =
            Database::create(path).map_err(|e| StateError(format!("{}: {e}", path.display())))?;
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

    fn get(&self, stage: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        Ok(table
            .get(Self::full_key(stage, key).as_str())
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        stage: &str,
        prefix: &str,
        limit: usize,
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
        for entry in table.range(start.as_str()..).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            let key = key.value();
            if !key.starts_with(start.as_str()) || found.len() == limit {
                break;
            }
            found.push((key[stage_prefix_len..].to_owned(), value.value().to_vec()));
        }
        Ok(found)
    }

    fn apply(
        &self,
        stage: &str,
        writes: &BTreeMap<String, Option<Vec<u8>>>,
    ) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(TABLE).map_err(err)?;
            for (key, value) in writes {
                let key = Self::full_key(stage, key);
                match value {
                    Some(value) => table.insert(key.as_str(), value.as_slice()).map(drop),
                    None => table.remove(key.as_str()).map(drop),
                }
                .map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }
}

/// The uncommitted writes of one plugin call, layered over the stage's committed state.
pub struct Transaction {
    store: Arc<StateStore>,
    stage: Arc<str>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl Transaction {
    pub fn new(store: Arc<StateStore>, stage: Arc<str>) -> Self {
        Transaction {
            store,
            stage,
            writes: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.store.get(&self.stage, key),
        }
    }

    pub fn put(&mut self, key: String, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: String) {
        self.writes.insert(key, None);
    }

    /// Committed entries merged with this call's pending writes, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        // Deleted keys may hide committed ones: read enough committed entries to fill `limit`.
        let deletes = self.writes.values().filter(|v| v.is_none()).count();
        let mut merged: BTreeMap<String, Vec<u8>> = self
            .store
            .scan(&self.stage, prefix, limit.saturating_add(deletes))?
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

    /// Make this call's writes durable.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.writes);
        self.store.apply(&self.stage, &writes)
    }

    /// Forget this call's writes.
    pub fn rollback(&mut self) {
        self.writes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        txn.commit().unwrap();
        let other_stage = Transaction::new(store.clone(), Arc::from("x"));
        assert_eq!(
            other_stage.get("seen/a").unwrap(),
            None,
            "stages do not share state"
        );
        let mut next = Transaction::new(store, Arc::from("dedup"));
        next.delete("seen/a".into());
        next.put("seen/c".into(), b"4".to_vec());
        let keys: Vec<String> = next
            .scan_prefix("seen/", 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["seen/b", "seen/c"]);
    }
}
