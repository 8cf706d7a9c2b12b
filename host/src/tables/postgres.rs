//! Serving tables in PostgreSQL: `sluice_serving_<table> (key text primary key,
//! updated_ms bigint, vals jsonb)`, `vals` the key's values newest first. A batch is one
//! transaction of upserts; an upsert replaces a key's newest value only with a newer
//! (or equally new) event, so hosts writing one table concurrently agree on it.
//!
//! The connection (libpq key=value form, without TLS) is made at first use and made
//! again after it breaks.

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::Value;

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

    pub async fn put(&self, values: &[(String, Value)]) -> Result<(), tokio_postgres::Error> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected above");
        let transaction = client.transaction().await?;
        let upsert = transaction
            .prepare(&format!(
                "INSERT INTO {table} AS t (key, updated_ms, vals) VALUES ($1, $2, jsonb_build_array($3::jsonb)) \
                 ON CONFLICT (key) DO UPDATE SET updated_ms = EXCLUDED.updated_ms, \
                 vals = jsonb_path_query_array(EXCLUDED.vals || t.vals, '$[0 to {last}]') \
                 WHERE t.updated_ms <= EXCLUDED.updated_ms",
                table = self.sql_table,
                last = self.keep - 1
            ))
            .await?;
        for (key, value) in values {
            let json = serde_json::to_value(value).expect("values serialize");
            transaction
                .execute(&upsert, &[key, &value.timestamp_ms, &json])
                .await?;
        }
        transaction.commit().await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<Value>>, tokio_postgres::Error> {
        let guard = self.client().await?;
        let client = guard.as_ref().expect("connected above");
        let row = client
            .query_opt(
                &format!("SELECT vals FROM {} WHERE key = $1", self.sql_table),
                &[&key],
            )
            .await?;
        Ok(row.and_then(|row| serde_json::from_value(row.get::<_, serde_json::Value>(0)).ok()))
    }

    pub async fn scan(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Value>)>, tokio_postgres::Error> {
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
        Ok(rows
            .into_iter()
            .map(|row| {
                let values =
                    serde_json::from_value(row.get::<_, serde_json::Value>(1)).unwrap_or_default();
                (row.get::<_, String>(0), values)
            })
            .collect())
    }
}
