//! Runs in PostgreSQL, shared by the central hosts that name the same database in
//! `[scheduler] postgres`: `sluice_job_runs` (a run as JSON, keyed by job and slot end,
//! its status a column of its own for the active runs' index) and `sluice_job_state`
//! (each job's cursor and pause switch), created if missing.
//!
//! Two hosts schedule the same slots: recording one is an insert the primary key makes
//! idempotent, and a run changes status only in a transaction holding its row, after
//! checking it is still as the host read it. An attempt holds a session-level advisory
//! lock on its run (job and slot) from its claim to its end: the database drops it with
//! the session of a host that dies, so a `running` run whose lock another host can take
//! has lost its host, and is handed back to run again. A claim takes the lock first, so
//! that no host claims a run another one is handing back.
//!
//! One connection carries the queries and the locks; it is made at first use and again
//! after it breaks, then takes again the locks of the attempts still going here.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::types::Json;

use super::{JobState, RUNS_KEPT, RunRecord, StoreError};
use crate::tables::postgres::tls::Connector;
use crate::tables::postgres::{PgError, chain};

/// Created by the first host, under a lock: two hosts starting together would otherwise
/// race in `CREATE TABLE IF NOT EXISTS`.
const SCHEMA: &str = "
    BEGIN;
    SELECT pg_advisory_xact_lock(hashtext('sluice_job_runs schema'));
    CREATE TABLE IF NOT EXISTS sluice_job_runs (
        job text NOT NULL,
        slot_end_ms bigint NOT NULL,
        record jsonb NOT NULL,
        status text GENERATED ALWAYS AS (record->>'status') STORED,
        PRIMARY KEY (job, slot_end_ms)
    );
    CREATE INDEX IF NOT EXISTS sluice_job_runs_active ON sluice_job_runs (job, slot_end_ms)
        WHERE status IN ('waiting', 'running', 'retrying');
    CREATE TABLE IF NOT EXISTS sluice_job_state (
        job text PRIMARY KEY,
        cursor_ms bigint,
        paused boolean NOT NULL DEFAULT false
    );
    COMMIT;";

/// The advisory lock of the run of job `$1` and slot `$2`. The key is PostgreSQL's own
/// hash, the same in every host whatever its build; two runs sharing one (a 64-bit
/// collision) would only wait for each other.
const RUN_LOCK: &str = "hashtextextended('sluice job run ' || $1::text, $2::bigint)";

const ACTIVE: &str = "status IN ('waiting', 'running', 'retrying')";

/// How long after connecting no run is taken for orphaned: after the database restarted,
/// every host's locks are gone until its next tick connects again and takes them back.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// A connect that waits longer is an error, retried at the scheduler's next tick.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PgStore {
    connector: Connector,
    session: tokio::sync::Mutex<Option<Session>>,
    /// The runs whose lock an attempt of this process holds, by job and slot end.
    held: Mutex<HashSet<(String, i64)>>,
}

struct Session {
    client: Client,
    since: Instant,
}

fn error(message: impl std::fmt::Display) -> StoreError {
    StoreError {
        place: "[scheduler] postgres".into(),
        message: message.to_string(),
    }
}

fn pg(error: tokio_postgres::Error) -> StoreError {
    self::error(PgError::Postgres(error))
}

impl PgStore {
    /// The store in the database `connection` names (parsed, and its CA file read,
    /// here); nothing connects until the first use.
    pub fn new(connection: &str) -> Result<PgStore, StoreError> {
        let mut connector = Connector::new(connection).map_err(error)?;
        if connector.config.get_connect_timeout().is_none() {
            connector.config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(PgStore {
            connector,
            session: tokio::sync::Mutex::new(None),
            held: Mutex::default(),
        })
    }

    /// The session, connected (again) if it is not.
    async fn session(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Session>>, StoreError> {
        let mut guard = self.session.lock().await;
        if guard
            .as_ref()
            .is_none_or(|session| session.client.is_closed())
        {
            *guard = None;
            let client = self
                .connector
                .connect("job runs".into())
                .await
                .map_err(error)?;
            client.batch_execute(SCHEMA).await.map_err(pg)?;
            let held: Vec<(String, i64)> = self.held.lock().unwrap().iter().cloned().collect();
            for (job, slot) in held {
                if !try_lock(&client, &job, slot).await? {
                    tracing::warn!(
                        job,
                        slot = %crate::jobs::Slot::format(slot),
                        "jobs: the database lost this host's lock on a run going on; another host may take the run over"
                    );
                }
            }
            *guard = Some(Session {
                client,
                since: Instant::now(),
            });
        }
        Ok(guard)
    }

    pub async fn job_state(&self, job: &str) -> Result<JobState, StoreError> {
        let session = self.session().await?;
        let row = client(&session)
            .query_opt(
                "SELECT cursor_ms, paused FROM sluice_job_state WHERE job = $1",
                &[&job],
            )
            .await
            .map_err(pg)?;
        Ok(row.map_or_else(JobState::default, |row| JobState {
            cursor_ms: row.get(0),
            paused: row.get(1),
        }))
    }

    pub async fn set_job_state(&self, job: &str, state: &JobState) -> Result<(), StoreError> {
        let session = self.session().await?;
        client(&session)
            .execute(
                "INSERT INTO sluice_job_state (job, cursor_ms, paused) VALUES ($1, $2, $3) \
                 ON CONFLICT (job) DO UPDATE SET cursor_ms = EXCLUDED.cursor_ms, paused = EXCLUDED.paused",
                &[&job, &state.cursor_ms, &state.paused],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub async fn advance_cursor(&self, job: &str, cursor_ms: i64) -> Result<(), StoreError> {
        let session = self.session().await?;
        client(&session)
            .execute(
                "INSERT INTO sluice_job_state AS s (job, cursor_ms) VALUES ($1, $2) \
                 ON CONFLICT (job) DO UPDATE SET cursor_ms = GREATEST(s.cursor_ms, EXCLUDED.cursor_ms)",
                &[&job, &cursor_ms],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub async fn insert(&self, run: &RunRecord) -> Result<bool, StoreError> {
        let session = self.session().await?;
        let client = client(&session);
        let inserted = client
            .execute(
                "INSERT INTO sluice_job_runs (job, slot_end_ms, record) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&run.job, &run.slot_end_ms, &Json(run)],
            )
            .await
            .map_err(pg)?
            == 1;
        if inserted {
            // Forget the job's oldest final runs beyond RUNS_KEPT.
            client
                .execute(
                    &format!(
                        "DELETE FROM sluice_job_runs WHERE job = $1 AND NOT ({ACTIVE}) \
                         AND slot_end_ms < ALL (SELECT slot_end_ms FROM sluice_job_runs \
                           WHERE job = $1 ORDER BY slot_end_ms DESC LIMIT {RUNS_KEPT})"
                    ),
                    &[&run.job],
                )
                .await
                .map_err(pg)?;
        }
        Ok(inserted)
    }

    pub async fn put(&self, run: &RunRecord) -> Result<(), StoreError> {
        let session = self.session().await?;
        client(&session)
            .execute(
                "INSERT INTO sluice_job_runs (job, slot_end_ms, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (job, slot_end_ms) DO UPDATE SET record = EXCLUDED.record",
                &[&run.job, &run.slot_end_ms, &Json(run)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub async fn replace(&self, run: &RunRecord, was: &RunRecord) -> Result<bool, StoreError> {
        let mut session = self.session().await?;
        let changed = change(&mut session, &run.job, run.slot_end_ms, |stored| {
            let still = stored.is_still(was);
            if still {
                *stored = run.clone();
            }
            still
        })
        .await?;
        Ok(changed.is_some())
    }

    pub async fn claim(
        &self,
        job: &str,
        slot_end_ms: i64,
        host: &str,
        now_ms: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        let mut session = self.session().await?;
        if !try_lock(client(&session), job, slot_end_ms).await? {
            // Another host runs it, or is handing it back.
            return Ok(None);
        }
        let claimed = change(&mut session, job, slot_end_ms, |run| {
            let due = run.is_due(now_ms);
            if due {
                run.start_attempt(host, now_ms);
            }
            due
        })
        .await;
        match &claimed {
            Ok(Some(_)) => {
                self.held
                    .lock()
                    .unwrap()
                    .insert((job.to_owned(), slot_end_ms));
            }
            _ => unlock(client(&session), job, slot_end_ms).await,
        }
        claimed
    }

    pub async fn finish(&self, run: &RunRecord, claimed: &RunRecord) -> Result<bool, StoreError> {
        let kept = self.replace(run, claimed).await;
        // A session that broke since the claim holds no lock to release.
        if let Ok(session) = self.session().await {
            unlock(client(&session), &run.job, run.slot_end_ms).await;
        }
        self.held
            .lock()
            .unwrap()
            .remove(&(run.job.clone(), run.slot_end_ms));
        kept
    }

    pub async fn get(&self, job: &str, slot_end_ms: i64) -> Result<Option<RunRecord>, StoreError> {
        let session = self.session().await?;
        let row = client(&session)
            .query_opt(
                "SELECT record FROM sluice_job_runs WHERE job = $1 AND slot_end_ms = $2",
                &[&job, &slot_end_ms],
            )
            .await
            .map_err(pg)?;
        row.map(|row| decode(&row)).transpose()
    }

    pub async fn remove(&self, job: &str, slot_end_ms: i64) -> Result<(), StoreError> {
        let session = self.session().await?;
        client(&session)
            .execute(
                "DELETE FROM sluice_job_runs WHERE job = $1 AND slot_end_ms = $2",
                &[&job, &slot_end_ms],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub async fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let session = self.session().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client(&session)
            .query(
                "SELECT record FROM sluice_job_runs WHERE job = $1 ORDER BY slot_end_ms DESC LIMIT $2",
                &[&job, &limit],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(decode).collect()
    }

    pub async fn active(&self) -> Result<Vec<RunRecord>, StoreError> {
        let session = self.session().await?;
        active(client(&session), "").await
    }

    pub async fn release_orphans(&self, _host: &str) -> Result<Vec<RunRecord>, StoreError> {
        let mut session = self.session().await?;
        if session
            .as_ref()
            .is_some_and(|session| session.since.elapsed() < ORPHAN_GRACE)
        {
            return Ok(Vec::new());
        }
        let running = active(client(&session), "AND status = 'running'").await?;
        let mut released = Vec::new();
        for seen in running {
            let key = (seen.job.clone(), seen.slot_end_ms);
            // This session's own locks: taking one again would succeed.
            if self.held.lock().unwrap().contains(&key)
                || !try_lock(client(&session), &seen.job, seen.slot_end_ms).await?
            {
                continue;
            }
            let handed_back = change(&mut session, &seen.job, seen.slot_end_ms, |run| {
                let orphaned = run.is_still(&seen);
                if orphaned {
                    run.hand_back();
                }
                orphaned
            })
            .await;
            unlock(client(&session), &seen.job, seen.slot_end_ms).await;
            released.extend(handed_back?);
        }
        Ok(released)
    }
}

fn client(session: &Option<Session>) -> &Client {
    &session
        .as_ref()
        .expect("connected by `PgStore::session`")
        .client
}

fn decode(row: &tokio_postgres::Row) -> Result<RunRecord, StoreError> {
    row.try_get::<_, Json<RunRecord>>(0)
        .map(|json| json.0)
        .map_err(|e| error(format!("a stored run does not decode: {}", chain(&e))))
}

/// The active runs (`filter` narrowing them), by job and slot.
async fn active(client: &Client, filter: &str) -> Result<Vec<RunRecord>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT record FROM sluice_job_runs WHERE {ACTIVE} {filter} \
                 ORDER BY job COLLATE \"C\", slot_end_ms"
            ),
            &[],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(decode).collect()
}

/// Change the run of `job` and `slot_end_ms` as `update` says (when it returns `true`),
/// in a transaction holding its row; the run as changed, `None` if unchanged or missing.
async fn change(
    session: &mut Option<Session>,
    job: &str,
    slot_end_ms: i64,
    update: impl FnOnce(&mut RunRecord) -> bool,
) -> Result<Option<RunRecord>, StoreError> {
    let client = &mut session
        .as_mut()
        .expect("connected by `PgStore::session`")
        .client;
    let transaction = client.transaction().await.map_err(pg)?;
    let row = transaction
        .query_opt(
            "SELECT record FROM sluice_job_runs WHERE job = $1 AND slot_end_ms = $2 FOR UPDATE",
            &[&job, &slot_end_ms],
        )
        .await
        .map_err(pg)?;
    let Some(mut run) = row.map(|row| decode(&row)).transpose()? else {
        return Ok(None);
    };
    if !update(&mut run) {
        return Ok(None);
    }
    transaction
        .execute(
            "UPDATE sluice_job_runs SET record = $3 WHERE job = $1 AND slot_end_ms = $2",
            &[&job, &slot_end_ms, &Json(&run)],
        )
        .await
        .map_err(pg)?;
    transaction.commit().await.map_err(pg)?;
    Ok(Some(run))
}

/// Take the run's lock for this session, if no other session holds it.
async fn try_lock(client: &Client, job: &str, slot_end_ms: i64) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({RUN_LOCK})"),
            &[&job, &slot_end_ms],
        )
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

/// Release the run's lock (once: a session takes a lock as many times as it releases
/// it). A failure leaves it to the session's end, and is only logged.
async fn unlock(client: &Client, job: &str, slot_end_ms: i64) {
    let unlocked = client
        .query_one(
            &format!("SELECT pg_advisory_unlock({RUN_LOCK})"),
            &[&job, &slot_end_ms],
        )
        .await;
    if let Err(e) = unlocked {
        tracing::warn!(job, "jobs: releasing a run's lock: {}", chain(&e));
    }
}
