//! Serving tables: the latest event (or last N) per key, kept durably where
//! applications read them over the host's API ([`crate::api`]). A `serving` sink
//! writes a table; the API reads every table the running pipeline has.
//!
//! Two backends: embedded (redb, one database file per table: crash-safe, a restart
//! serves what was written before it) and PostgreSQL ([`postgres`], so that several
//! hosts write and serve one table). Either way a key holds its newest `keep` values by
//! event time, newest first: an event that comes late takes its place by time (kept if
//! it is among the newest `keep`), and of two with one time the later write goes first.

#[cfg(feature = "postgres")]
pub mod postgres;

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
    backend: Backend,
    /// Every stored value, as it is committed, for the API's event stream.
    updates: tokio::sync::broadcast::Sender<Arc<(String, Value)>>,
    /// Values kept per key, newest first.
    keep: usize,
    pub access: Access,
    /// The event stream's free places.
    subscribers: Arc<tokio::sync::Semaphore>,
}

/// Who may read and write a table over the API, and how many may follow its updates.
/// Tokens are kept as their SHA-256 digests (`connect::token::BearerToken`'s form).
#[derive(Debug, Clone)]
pub struct Access {
    /// Tokens that may read; none: anyone who reaches the API (`public = true`).
    pub read_tokens: Vec<[u8; 32]>,
    /// Tokens that may write; none: no writes over the API.
    pub write_tokens: Vec<[u8; 32]>,
    /// Event-stream readers at once; past it the API answers 503.
    pub max_subscribers: usize,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            read_tokens: Vec::new(),
            write_tokens: Vec::new(),
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
        }
    }
}

pub const DEFAULT_MAX_SUBSCRIBERS: usize = 256;

/// A reader of a table's updates, holding one of its `max_subscribers` places.
pub struct Subscription {
    pub updates: tokio::sync::broadcast::Receiver<Arc<(String, Value)>>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

enum Backend {
    Embedded(Database),
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres::PgTable>),
}

impl Table {
    pub fn open(
        name: &str,
        path: &Path,
        keep: usize,
        access: Access,
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
            backend: Backend::Embedded(db),
            updates: tokio::sync::broadcast::channel(UPDATES_BUFFERED).0,
            keep: keep.max(1),
            subscribers: Arc::new(tokio::sync::Semaphore::new(access.max_subscribers)),
            access,
        }))
    }

    /// A table kept in PostgreSQL (`connection` in libpq's key=value or URL form, TLS as
    /// its `sslmode` says); an unusable connection string or CA file is an error here,
    /// but nothing connects until the first write or read.
    #[cfg(feature = "postgres")]
    pub fn postgres(
        name: &str,
        connection: &str,
        keep: usize,
        access: Access,
    ) -> Result<Arc<Table>, ServingError> {
        let pg =
            postgres::PgTable::new(name, connection, keep.max(1)).map_err(|e| ServingError {
                table: name.to_owned(),
                message: format!("`postgres`: {e}"),
            })?;
        Ok(Arc::new(Table {
            name: name.to_owned(),
            backend: Backend::Postgres(Box::new(pg)),
            keep: keep.max(1),
            subscribers: Arc::new(tokio::sync::Semaphore::new(access.max_subscribers)),
            access,
            updates: tokio::sync::broadcast::channel(UPDATES_BUFFERED).0,
        }))
    }

    /// Store `values` (key, value), each in its key's list by event time, in one
    /// durable transaction; then tell the event stream.
    pub async fn put(self: &Arc<Self>, values: Vec<(String, Value)>) -> Result<(), ServingError> {
        match &self.backend {
            Backend::Embedded(_) => {
                let table = self.clone();
                let to_store = values.clone();
                tokio::task::spawn_blocking(move || table.put_embedded(to_store))
                    .await
                    .map_err(|e| self.error(e))??;
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.put(&values).await.map_err(|e| self.error(e))?,
        }
        if self.updates.receiver_count() > 0 {
            for update in values {
                let _ = self.updates.send(Arc::new(update));
            }
        }
        Ok(())
    }

    /// The values of `key`, newest first, without expired ones.
    pub async fn get(
        self: &Arc<Self>,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<Value>>, ServingError> {
        let list = match &self.backend {
            Backend::Embedded(_) => {
                let (table, key) = (self.clone(), key.to_owned());
                tokio::task::spawn_blocking(move || table.get_embedded(&key))
                    .await
                    .map_err(|e| self.error(e))??
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.get(key).await.map_err(|e| self.error(e))?,
        };
        let live: Vec<Value> = list
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.expires_ms.is_none_or(|at| at > now_ms))
            .collect();
        Ok((!live.is_empty()).then_some(live))
    }

    /// Up to `limit` keys starting with `prefix`, in key order, with their newest value.
    pub async fn scan(
        self: &Arc<Self>,
        prefix: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<(String, Value)>, ServingError> {
        let lists = match &self.backend {
            Backend::Embedded(_) => {
                let (table, prefix) = (self.clone(), prefix.to_owned());
                tokio::task::spawn_blocking(move || table.scan_embedded(&prefix, limit))
                    .await
                    .map_err(|e| self.error(e))??
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.scan(prefix, limit).await.map_err(|e| self.error(e))?,
        };
        Ok(lists
            .into_iter()
            .filter_map(|(key, list)| {
                let newest = list
                    .into_iter()
                    .find(|v| v.expires_ms.is_none_or(|at| at > now_ms))?;
                Some((key, newest))
            })
            .collect())
    }

    /// Values as they are stored from now on; `None` when `max_subscribers` follow.
    pub fn subscribe(&self) -> Option<Subscription> {
        let place = self.subscribers.clone().try_acquire_owned().ok()?;
        Some(Subscription {
            updates: self.updates.subscribe(),
            _place: place,
        })
    }

    /// `embedded` or `postgres`, as a `serving` sink's config chooses it.
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded(_) => "embedded",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }

    fn db(&self) -> &Database {
        match &self.backend {
            Backend::Embedded(db) => db,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => unreachable!("only embedded tables use redb"),
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> ServingError {
        ServingError {
            table: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// A key's stored values; undecodable, an error naming the key.
    fn decode(&self, key: &str, stored: &[u8]) -> Result<Vec<Value>, ServingError> {
        serde_json::from_slice(stored)
            .map_err(|e| self.error(format!("the stored values of key `{key}`: {e}")))
    }

    fn put_embedded(&self, values: Vec<(String, Value)>) -> Result<(), ServingError> {
        let txn = self.db().begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(LATEST).map_err(|e| self.error(e))?;
            for (key, value) in values {
                let mut list: Vec<Value> =
                    match table.get(key.as_str()).map_err(|e| self.error(e))? {
                        // An undecodable history is an error, never silently reset.
                        Some(stored) => self.decode(&key, stored.value())?,
                        None => Vec::new(),
                    };
                insert_by_time(&mut list, value, self.keep);
                let bytes = serde_json::to_vec(&list).expect("values serialize");
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    fn get_embedded(&self, key: &str) -> Result<Option<Vec<Value>>, ServingError> {
        let txn = self.db().begin_read().map_err(|e| self.error(e))?;
        let table = match txn.open_table(LATEST) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let Some(stored) = table.get(key).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        self.decode(key, stored.value()).map(Some)
    }

    fn scan_embedded(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Value>)>, ServingError> {
        let txn = self.db().begin_read().map_err(|e| self.error(e))?;
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
            let values = self.decode(key.value(), stored.value())?;
            found.push((key.value().to_owned(), values));
        }
        Ok(found)
    }
}

/// Put `value` into `list` (newest event time first; a tie goes before the older
/// write) and keep `keep`.
fn insert_by_time(list: &mut Vec<Value>, value: Value, keep: usize) {
    let at = list
        .iter()
        .position(|stored| stored.timestamp_ms <= value.timestamp_ms)
        .unwrap_or(list.len());
    list.insert(at, value);
    list.truncate(keep);
}

/// The tables of the pipeline running in this process, by name: the API serves what
/// the sinks write, without the pipeline knowing sinks beyond their trait.
pub fn tables() -> &'static Mutex<BTreeMap<String, Arc<Table>>> {
    static TABLES: OnceLock<Mutex<BTreeMap<String, Arc<Table>>>> = OnceLock::new();
    TABLES.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_undecodable_stored_history_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::open("t", &dir.path().join("t.redb"), 3, Access::default()).unwrap();
        let value = |n: i64| Value {
            value: serde_json::json!(n),
            timestamp_ms: n,
            expires_ms: None,
        };
        table.put(vec![("k".into(), value(1))]).await.unwrap();
        // Flipped bytes where the key's history is stored.
        let txn = table.db().begin_write().unwrap();
        txn.open_table(LATEST)
            .unwrap()
            .insert("k", &b"\xff not json"[..])
            .unwrap();
        txn.commit().unwrap();
        let error = table
            .put(vec![("k".into(), value(2))])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("the stored values of key `k`"), "{error}");
        let error = table
            .get("k", 0)
            .await
            .expect_err("nor is it served as empty");
        assert!(
            error.to_string().contains("the stored values of key `k`"),
            "{error}"
        );
        let error = table.scan("k", 10, 0).await.unwrap_err();
        assert!(
            error.to_string().contains("the stored values of key `k`"),
            "{error}"
        );
    }
}
