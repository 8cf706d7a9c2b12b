//! Serving tables: the latest event (or last N) per key, kept durably where
//! applications read them over the host's API ([`crate::serve`]). A `serving` sink
//! writes a table; the API reads every table the running pipeline has.
//!
//! The embedded backend is redb, one database file per table: crash-safe, and a
//! restart serves what was written before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
/// Updates a slow stream reader may fall behind before it is told it missed some.
const UPDATES_BUFFERED: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("serving table `{table}`: {message}")]
pub struct ServingError {
    pub table: String,
    pub message: String,
}

/// One stored value: the event's payload (as JSON when it is JSON) and its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub value: serde_json::Value,
    pub timestamp_ms: i64,
    /// Past this time the value is no longer served (`ttl_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

pub struct Table {
    pub name: String,
    db: Database,
    /// Every stored value, as it is committed, for the API's event stream.
    updates: tokio::sync::broadcast::Sender<Arc<(String, Value)>>,
    /// Values kept per key, newest first.
    keep: usize,
    /// Bearer tokens that may read this table; none: anyone on the API port.
    pub read_tokens: Vec<String>,
}

impl Table {
    pub fn open(
        name: &str,
        path: &Path,
        keep: usize,
        read_tokens: Vec<String>,
    ) -> Result<Arc<Table>, ServingError> {
        let error = |message: String| ServingError {
            table: name.to_owned(),
            message,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| error(format!("{}: {e}", parent.display())))?;
        }
        let db = Database::create(path).map_err(|e| error(format!("{}: {e}", path.display())))?;
        Ok(Arc::new(Table {
            name: name.to_owned(),
            db,
            updates: tokio::sync::broadcast::channel(UPDATES_BUFFERED).0,
            keep: keep.max(1),
            read_tokens,
        }))
    }

    fn error(&self, message: impl std::fmt::Display) -> ServingError {
        ServingError {
            table: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// Store `values` (key, value) in one durable transaction, each at the front of
    /// its key's list.
    pub fn put(&self, values: Vec<(String, Value)>) -> Result<(), ServingError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(LATEST).map_err(|e| self.error(e))?;
            for (key, value) in &values {
                let (key, value) = (key.clone(), value.clone());
                let mut list: Vec<Value> =
                    match table.get(key.as_str()).map_err(|e| self.error(e))? {
                        Some(stored) => serde_json::from_slice(stored.value()).unwrap_or_default(),
                        None => Vec::new(),
                    };
                list.insert(0, value);
                list.truncate(self.keep);
                let bytes = serde_json::to_vec(&list).expect("values serialize");
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))?;
        if self.updates.receiver_count() > 0 {
            for update in values {
                let _ = self.updates.send(Arc::new(update));
            }
        }
        Ok(())
    }

    /// Values as they are stored from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<(String, Value)>> {
        self.updates.subscribe()
    }

    /// The values of `key`, newest first, without expired ones.
    pub fn get(&self, key: &str, now_ms: i64) -> Result<Option<Vec<Value>>, ServingError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match txn.open_table(LATEST) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let Some(stored) = table.get(key).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let list: Vec<Value> = serde_json::from_slice(stored.value()).map_err(|e| self.error(e))?;
        let live: Vec<Value> = list
            .into_iter()
            .filter(|v| v.expires_ms.is_none_or(|at| at > now_ms))
            .collect();
        Ok((!live.is_empty()).then_some(live))
    }

    /// Up to `limit` keys starting with `prefix`, in key order, with their newest value.
    pub fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<(String, Value)>, ServingError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match txn.open_table(LATEST) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(e)),
        };
        let mut found = Vec::new();
        for entry in table.range(prefix..).map_err(|e| self.error(e))? {
            let (key, stored) = entry.map_err(|e| self.error(e))?;
            if !key.value().starts_with(prefix) || found.len() == limit {
                break;
            }
            let list: Vec<Value> = serde_json::from_slice(stored.value()).unwrap_or_default();
            if let Some(newest) = list
                .into_iter()
                .find(|v| v.expires_ms.is_none_or(|at| at > now_ms))
            {
                found.push((key.value().to_owned(), newest));
            }
        }
        Ok(found)
    }
}

/// The tables of the pipeline running in this process, by name: the API serves what
/// the sinks write, without the pipeline knowing sinks beyond their trait.
pub fn tables() -> &'static Mutex<BTreeMap<String, Arc<Table>>> {
    static TABLES: OnceLock<Mutex<BTreeMap<String, Arc<Table>>>> = OnceLock::new();
    TABLES.get_or_init(Default::default)
}
