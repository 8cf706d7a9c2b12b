//! Serving tables in PostgreSQL: `sluice_serving_<table> (key text primary key,
//! updated_ms bigint, vals jsonb)`, `vals` the key's values newest first by event time
//! and `updated_ms` the newest event time. A batch is one transaction of upserts; each
//! upsert merges its value into the stored list as the embedded backend does (by event
//! time, a tie before the older write, the newest `keep`) inside the one statement that
//! locks the key's row, so hosts writing one table concurrently agree on it.
//!
//! The connection (libpq's key=value or URL form, TLS as its `sslmode` says: [`tls`])
//! is made at first use and made again after it breaks.

pub mod tls;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::Value;
use tls::{Connector, TlsConfigError};

/// tokio-postgres says what failed in its error and why in the error's sources.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `tls`: what the connection asks of TLS ([`Connector::describe`]).
    #[error("cannot connect to PostgreSQL ({tls}): {}", chain(.error))]
    Connect {
        tls: String,
        error: tokio_postgres::Error,
    },
    #[error("PostgreSQL: {}", chain(.0))]
    Postgres(tokio_postgres::Error),
    /// A row whose `vals` is not a list of values: an error, never served as empty.
    #[error("the stored values of key `{key}`: {source}")]
    Undecodable {
        key: String,
        source: serde_json::Error,
    },
}

impl From<tokio_postgres::Error> for PgError {
    fn from(error: tokio_postgres::Error) -> Self {
        PgError::Postgres(error)
    }
}

/// `error` and its sources, `: ` between them; a certificate from an unknown CA says so.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    let mut unknown_issuer = false;
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        // rustls's error is inside the I/O error the TLS stream failed with.
        let tls = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>());
        unknown_issuer |= matches!(
            tls,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        );
        source = cause.source();
    }
    if unknown_issuer {
        text.push_str(" (the server's certificate is not from a CA in `sslrootcert`)");
    }
    text
}

impl Connector {
    /// A client of the database, its connection driven by a task of its own that logs,
    /// as `user`'s, how it ended; a closed client ([`Client::is_closed`]) is connected
    /// again by its user.
    pub async fn connect(&self, user: String) -> Result<Client, PgError> {
        let (client, connection) =
            self.config
                .connect(self.tls.clone())
                .await
                .map_err(|error| PgError::Connect {
                    tls: self.describe(),
                    error,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!("{user}: PostgreSQL connection ended: {}", chain(&error));
            }
        });
        Ok(client)
    }
}

pub struct PgTable {
    name: String,
    sql_table: String,
    connector: Connector,
    keep: usize,
    client: Mutex<Option<Client>>,
}

impl PgTable {
    /// A table in the database `connection` names: parsed, and its CA file read, here;
    /// nothing connects until the first write or read.
    pub fn new(name: &str, connection: &str, keep: usize) -> Result<PgTable, TlsConfigError> {
        Ok(PgTable {
            name: name.to_owned(),
            // The name is checked to be letters, digits, `_` and `-` by the sink.
            sql_table: format!("\"sluice_serving_{name}\""),
            connector: Connector::new(connection)?,
            keep,
            client: Mutex::new(None),
        })
    }

    /// A connected client, the table created if missing.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, PgError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let client = self
                .connector
                .connect(format!("serving table `{}`", self.name))
                .await?;
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
