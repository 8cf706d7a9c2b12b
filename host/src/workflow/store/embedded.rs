//! Runs in a redb database in the host's data directory (`jobs.redb`): every change is
//! one durable transaction. Final runs and active ones are kept in two tables, so that
//! the scheduler's tick reads only the few active ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use redb::{Database, ReadableTable, TableDefinition};

use super::{JobState, RUNS_KEPT, RunRecord, Status, StoreError};

/// `job \0 slot end (20 digits)` → run (JSON): ordered by slot within a job.
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// The same keys, for runs not yet final.
const ACTIVE: TableDefinition<&str, ()> = TableDefinition::new("active");
/// `job` → its scheduling state (JSON).
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

pub struct EmbeddedStore {
    db: Database,
    place: String,
}

fn key(job: &str, slot_end_ms: i64) -> String {
    // Slots before 1970 do not occur; negative ones sort first all the same.
    format!("{job}\0{:020}", slot_end_ms.max(0))
}

/// The stores open in this process, by path: redb opens a file once, and a reload's
/// scheduler opens the store while the previous one may still hold it.
fn open_stores() -> &'static Mutex<HashMap<PathBuf, Weak<EmbeddedStore>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<EmbeddedStore>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl EmbeddedStore {
    /// The store at `path`: the one this process has open there, else opened.
    pub fn shared(path: &Path) -> Result<Arc<EmbeddedStore>, StoreError> {
        let mut open = open_stores().lock().unwrap();
        if let Some(store) = open.get(path).and_then(Weak::upgrade) {
            return Ok(store);
        }
        let store = Arc::new(EmbeddedStore::open(path)?);
        open.insert(path.to_owned(), Arc::downgrade(&store));
        Ok(store)
    }

    fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let place = path.display().to_string();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError {
                place: place.clone(),
                message: e.to_string(),
            })?;
        }
        let db = Database::create(path).map_err(|e| StoreError {
            place: place.clone(),
            message: e.to_string(),
        })?;
        let store = EmbeddedStore { db, place };
        store.write(|txn| {
            txn.open_table(RUNS)?;
            txn.open_table(ACTIVE)?;
            txn.open_table(JOBS)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn error(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            place: self.place.clone(),
            message: message.to_string(),
        }
    }

    fn write<T>(
        &self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let value = change(&txn).map_err(|e| self.error(e.0))?;
        txn.commit().map_err(|e| self.error(e))?;
        Ok(value)
    }

    fn read<T>(
        &self,
        look: impl FnOnce(&redb::ReadTransaction) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        look(&txn).map_err(|e| self.error(e.0))
    }

    pub fn job_state(&self, job: &str) -> Result<JobState, StoreError> {
        self.read(|txn| {
            let jobs = txn.open_table(JOBS)?;
            match jobs.get(job)? {
                Some(bytes) => decode(bytes.value()),
                None => Ok(JobState::default()),
            }
        })
    }

    pub fn set_job_state(&self, job: &str, state: &JobState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).expect("a job state serializes");
        self.write(|txn| {
            txn.open_table(JOBS)?.insert(job, bytes.as_slice())?;
            Ok(())
        })
    }

    pub fn advance_cursor(&self, job: &str, cursor_ms: i64) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS)?;
            let mut state: JobState = match jobs.get(job)? {
                Some(bytes) => decode(bytes.value())?,
                None => JobState::default(),
            };
            state.cursor_ms = state.cursor_ms.max(Some(cursor_ms));
            let bytes = serde_json::to_vec(&state).expect("a job state serializes");
            jobs.insert(job, bytes.as_slice())?;
            Ok(())
        })
    }

    pub fn insert(&self, run: &RunRecord) -> Result<bool, StoreError> {
        self.write(|txn| {
            let key = key(&run.job, run.slot_end_ms);
            if txn.open_table(RUNS)?.get(key.as_str())?.is_some() {
                return Ok(false);
            }
            store(txn, run)?;
            forget_old(txn, &run.job)?;
            Ok(true)
        })
    }

    pub fn put(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(|txn| store(txn, run))
    }

    pub fn replace(&self, run: &RunRecord, was: &RunRecord) -> Result<bool, StoreError> {
        self.write(|txn| {
            let stored = fetch(txn, &key(&run.job, run.slot_end_ms))?;
            if !stored.is_some_and(|stored| stored.is_still(was)) {
                return Ok(false);
            }
            store(txn, run)?;
            Ok(true)
        })
    }

    pub fn claim(
        &self,
        job: &str,
        slot_end_ms: i64,
        host: &str,
        now_ms: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.write(|txn| {
            let Some(mut run) = fetch(txn, &key(job, slot_end_ms))? else {
                return Ok(None);
            };
            if !run.is_due(now_ms) {
                return Ok(None);
            }
            run.start_attempt(host, now_ms);
            store(txn, &run)?;
            Ok(Some(run))
        })
    }

    pub fn get(&self, job: &str, slot_end_ms: i64) -> Result<Option<RunRecord>, StoreError> {
        self.read(|txn| {
            let runs = txn.open_table(RUNS)?;
            runs.get(key(job, slot_end_ms).as_str())?
                .map(|bytes| decode(bytes.value()))
                .transpose()
        })
    }

    pub fn remove(&self, job: &str, slot_end_ms: i64) -> Result<(), StoreError> {
        self.write(|txn| {
            let key = key(job, slot_end_ms);
            txn.open_table(RUNS)?.remove(key.as_str())?;
            txn.open_table(ACTIVE)?.remove(key.as_str())?;
            Ok(())
        })
    }

    pub fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|txn| {
            let runs = txn.open_table(RUNS)?;
            let (from, to) = (format!("{job}\0"), format!("{job}\u{1}"));
            runs.range(from.as_str()..to.as_str())?
                .rev()
                .take(limit)
                .map(|entry| decode(entry?.1.value()))
                .collect()
        })
    }

    pub fn active(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|txn| {
            let active = txn.open_table(ACTIVE)?;
            let runs = txn.open_table(RUNS)?;
            let mut found = Vec::new();
            for entry in active.iter()? {
                let (key, _) = entry?;
                if let Some(bytes) = runs.get(key.value())? {
                    found.push(decode(bytes.value())?);
                }
            }
            Ok(found)
        })
    }

    pub fn release_orphans(&self, host: &str) -> Result<Vec<RunRecord>, StoreError> {
        let mut released = Vec::new();
        for mut run in self.active()? {
            if run.status == Status::Running && run.host.as_deref() == Some(host) {
                run.hand_back();
                self.put(&run)?;
                released.push(run);
            }
        }
        Ok(released)
    }
}

/// A redb or decoding failure inside a transaction.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| Failure(format!("a stored run does not decode: {e}")))
}

fn fetch(txn: &redb::WriteTransaction, key: &str) -> Result<Option<RunRecord>, Failure> {
    let runs = txn.open_table(RUNS)?;
    let stored = runs.get(key)?;
    stored.map(|bytes| decode(bytes.value())).transpose()
}

fn store(txn: &redb::WriteTransaction, run: &RunRecord) -> Result<(), Failure> {
    let key = key(&run.job, run.slot_end_ms);
    let bytes = serde_json::to_vec(run).expect("a run serializes");
    txn.open_table(RUNS)?
        .insert(key.as_str(), bytes.as_slice())?;
    let mut active = txn.open_table(ACTIVE)?;
    if run.status.is_final() {
        active.remove(key.as_str())?;
    } else {
        active.insert(key.as_str(), ())?;
    }
    Ok(())
}

/// Forget `job`'s oldest final runs beyond [`RUNS_KEPT`].
fn forget_old(txn: &redb::WriteTransaction, job: &str) -> Result<(), Failure> {
    let mut runs = txn.open_table(RUNS)?;
    let active = txn.open_table(ACTIVE)?;
    let (from, to) = (format!("{job}\0"), format!("{job}\u{1}"));
    let keys: Vec<String> = runs
        .range(from.as_str()..to.as_str())?
        .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
        .collect::<Result<_, _>>()?;
    let excess = keys.len().saturating_sub(RUNS_KEPT);
    for key in keys.iter().take(excess) {
        if active.get(key.as_str())?.is_none() {
            runs.remove(key.as_str())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Slot;
    use crate::workflow::store::Trigger;

    fn run(job: &str, end: i64) -> RunRecord {
        RunRecord::new(
            job,
            Slot {
                start_ms: end - 10,
                end_ms: end,
            },
            Status::Waiting,
            Trigger::Schedule,
        )
    }

    #[test]
    fn a_slot_is_claimed_once_and_kept_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        let store = EmbeddedStore::shared(&path).unwrap();
        assert!(Arc::ptr_eq(&store, &EmbeddedStore::shared(&path).unwrap()));
        assert!(store.insert(&run("a", 100)).unwrap());
        assert!(!store.insert(&run("a", 100)).unwrap(), "a slot has one run");
        let claimed = store.claim("a", 100, "h1", 5).unwrap().expect("due");
        assert_eq!((claimed.status, claimed.attempts), (Status::Running, 1));
        assert!(store.claim("a", 100, "h2", 5).unwrap().is_none());
        drop(store);
        let store = EmbeddedStore::shared(&path).unwrap();
        assert_eq!(store.active().unwrap().len(), 1);
        let released = store.release_orphans("h1").unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(
            store.get("a", 100).unwrap().unwrap().status,
            Status::Waiting
        );
    }

    #[test]
    fn runs_list_newest_first_and_old_final_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("jobs.redb")).unwrap();
        for end in 1..=(RUNS_KEPT as i64 + 5) {
            let mut record = run("a", end * 10);
            record.status = Status::Succeeded;
            store.insert(&record).unwrap();
        }
        store.insert(&run("ab", 7)).unwrap();
        let runs = store.runs("a", 3).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.slot_end_ms).collect::<Vec<_>>(),
            [5050, 5040, 5030]
        );
        assert_eq!(store.runs("a", usize::MAX).unwrap().len(), RUNS_KEPT);
        assert_eq!(store.runs("ab", 10).unwrap().len(), 1, "`ab` is not `a`'s");
        assert_eq!(store.active().unwrap().len(), 1);
    }
}
