//! Serving tables in PostgreSQL: `sluice_serving_<table> (key text primary key,
//! updated_ms bigint, vals jsonb)`, `vals` the key's values newest first by event time
//! and `updated_ms` the newest event time. A batch is one transaction of upserts; each
//! upsert merges its value into the stored list as the embedded backend does (by event
//! time, a tie before the older write, the newest `keep`) inside the one statement that
//! locks the key's row, so hosts writing one table concurrently agree on it.
//!
//! The connection (libpq key=value form, without TLS) is made at first use and made
//! again after it breaks.

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::Value;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// A row whose `vals` is not a list of values: an error, never served as empty.
    #[error("the stored values of key `{key}`: {source}")]
    Undecodable {
        key: String,
        source: serde_json::Error,
    },
}

pub struct PgTable {
    sql_table: String,
    connection: String,
    keep: usize,
    client: Mutex<Option<Client>>,
}

impl PgTable {
    pub fn new(name: &str, connection: &str, keep: usize) -> PgTable {
        PgTable {
            // The name is checked to be letters, digits, `_` and `-` by the sink.
            sql_table: format!("\"sluice_serving_{name}\""),
            connection: connection.to_owned(),
            keep,
            client: Mutex::new(None),
        }
    }

    /// A connected client, the table created if missing.
    async fn client(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, tokio_postgres::Error> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.connection, NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!("serving: PostgreSQL connection ended: {error}");
                }
            });
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, updated_ms bigint NOT NULL, vals jsonb NOT NULL)",
                    self.sql_table
                ))
                .await?;
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// The upsert of one value: the stored list and the new value, ordered by event
    /// time (newest first, the new value before stored ones of the same time, stored
    /// ones in their order), cut at `keep`.
    fn upsert_statement(&self) -> String {
        format!(
            "INSERT INTO {table} AS t (key, updated_ms, vals) VALUES ($1, $2, jsonb_build_array($3::jsonb)) \
             ON CONFLICT (key) DO UPDATE SET updated_ms = GREATEST(t.updated_ms, EXCLUDED.updated_ms), \
             vals = (SELECT jsonb_agg(kept.value ORDER BY kept.at DESC, kept.incoming DESC, kept.position) \
               FROM (SELECT merged.* FROM ( \
                   SELECT EXCLUDED.vals->0 AS value, EXCLUDED.updated_ms AS at, true AS incoming, 0::bigint AS position \
                   UNION ALL \
                   SELECT stored.value, (stored.value->>'timestamp_ms')::bigint, false, stored.position \
                   FROM jsonb_array_elements(t.vals) WITH ORDINALITY AS stored(value, position) \
                 ) merged ORDER BY merged.at DESC, merged.incoming DESC, merged.position LIMIT {keep}) kept)",
            table = self.sql_table,
            keep = self.keep
        )
    }

    pub async fn put(&self, values: &[(String, Value)]) -> Result<(), PgError> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected above");
        let transaction = client.transaction().await?;
        let upsert = transaction.prepare(&self.upsert_statement()).await?;
        // Rows locked in key order: two hosts' batches over the same keys cannot
        // deadlock. The sort is stable, so a key's values keep their order.
        let mut in_key_order: Vec<&(String, Value)> = values.iter().collect();
        in_key_order.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in in_key_order {
            let json = serde_json::to_value(value).expect("values serialize");
            transaction
                .execute(&upsert, &[key, &value.timestamp_ms, &json])
                .await?;
        }
        Ok(transaction.commit().await?)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<Value>>, PgError> {
        let guard = self.client().await?;
        let client = guard.as_ref().expect("connected above");
        let row = client
            .query_opt(
                &format!("SELECT vals FROM {} WHERE key = $1", self.sql_table),
                &[&key],
            )
            .await?;
        row.map(|row| decode(key, row.get(0))).transpose()
    }

    pub async fn scan(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Value>)>, PgError> {
        let guard = self.client().await?;
        let client = guard.as_ref().expect("connected above");
        let rows = client
            .query(
                &format!(
                    "SELECT key, vals FROM {} WHERE starts_with(key, $1) ORDER BY key LIMIT $2",
                    self.sql_table
                ),
                &[&prefix, &(limit as i64)],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                let key: String = row.get(0);
                let values = decode(&key, row.get(1))?;
                Ok((key, values))
            })
            .collect()
    }
}

fn decode(key: &str, stored: serde_json::Value) -> Result<Vec<Value>, PgError> {
    serde_json::from_value(stored).map_err(|source| PgError::Undecodable {
        key: key.to_owned(),
        source,
    })
}
