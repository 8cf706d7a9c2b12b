//! `type = "serving"` sink: the latest event (or the last `keep`) per key, the key taken
//! from a payload field, in a table the host's API serves (`/v1/tables/...`). A batch
//! is one durable transaction, acknowledged once committed; an event without the key
//! field goes to the sink's `dead_letter` route.
//!
//! A table is read with one of its `read_tokens`; one without is served to anyone who
//! reaches the API, and only when its config says so (`public = true`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::pipeline::{Batch, DeadLetter, SinkError};
use crate::tables::{Table, Value};
use crate::component::{BuildContext, BuildError, Declaration, Problem, Role};
use crate::connect::token::BearerToken;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingSinkConfig {
    /// The table's name in the API.
    pub table: String,
    /// The (dotted) payload field whose text is the key.
    pub key: String,
    /// Values kept per key, newest first.
    #[serde(default = "one")]
    pub keep: usize,
    /// Payload field holding the event time (epoch ms or RFC 3339) that orders a key's
    /// values; without it (or when unreadable), the event's timestamp. A reading a
    /// replay scores again then has the time of its live copy, and replaces it.
    #[serde(default)]
    pub time_field: Option<String>,
    #[serde(
        rename = "ttl_secs",
        default,
        with = "serde_with::As::<Option<serde_with::DurationSeconds<u64>>>"
    )]
    pub ttl: Option<Duration>,
    /// Bearer tokens that may read the table.
    #[serde(default)]
    pub read_tokens: Vec<BearerToken>,
    /// Without `read_tokens`: anyone who reaches the API reads the table.
    #[serde(default)]
    pub public: bool,
    /// Bearer tokens that may write values over the API; none: no API writes.
    #[serde(default)]
    pub write_tokens: Vec<BearerToken>,
    /// Event-stream (`/events`) readers at once; past it, 503.
    #[serde(default = "default_max_subscribers")]
    pub max_subscribers: usize,
    /// The database file of the embedded backend (relative: inside `data_dir`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Keep the table in PostgreSQL instead (libpq key=value or URL form:
    /// `"host=db port=5432 user=sluice dbname=serving password=${PGPASSWORD}
    /// sslmode=verify-full sslrootcert=/etc/sluice/pg-ca.pem"`).
    #[serde(default)]
    pub postgres: Option<String>,
}

/// PostgreSQL's identifier limit (63 bytes) less the `sluice_serving_` prefix.
const MAX_POSTGRES_TABLE_BYTES: usize = 63 - "sluice_serving_".len();

fn one() -> usize {
    1
}

fn default_max_subscribers() -> usize {
    crate::tables::DEFAULT_MAX_SUBSCRIBERS
}

impl super::SinkConfig for ServingSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        let mut problems = Vec::new();
        if self.read_tokens.is_empty() && !self.public {
            problems.push(Problem {
                message: format!("table `{}` has no `read_tokens`", self.table),
                hint: "give it `read_tokens = [\"${READ_TOKEN}\"]`, or `public = true` to serve it to anyone who reaches the API".into(),
            });
        }
        if self.public && !self.read_tokens.is_empty() {
            problems.push(Problem {
                message: format!("table `{}` is `public` and has `read_tokens`", self.table),
                hint: "a public table is read without a token: remove one of them".into(),
            });
        }
        // The connection string parses and its CA file reads (`validate` says so).
        #[cfg(feature = "postgres")]
        if let Some(connection) = &self.postgres
            && let Err(error) = crate::tables::postgres::tls::Connector::new(connection)
        {
            problems.push(Problem {
                message: format!("table `{}`: `postgres`: {error}", self.table),
                hint: "see docs/serving.md, \"PostgreSQL over TLS\"".into(),
            });
        }
        Declaration {
            rejects: true,
            problems,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        let stage = context.stage;
        let valid_name = !self.table.is_empty()
            && self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !valid_name {
            return Err(BuildError::stage(stage, format!(
                "`table` `{}` must be letters, digits, `_` and `-`", self.table
            )));
        }
        // PostgreSQL cuts names at 63 bytes: two longer tables would share one.
        if self.postgres.is_some() && self.table.len() > MAX_POSTGRES_TABLE_BYTES {
            return Err(BuildError::stage(stage, format!(
                "`table` `{}` is {} bytes; PostgreSQL keeps {MAX_POSTGRES_TABLE_BYTES} of a table name after `sluice_serving_`",
                self.table,
                self.table.len()
            )));
        }
        let backend = if self.postgres.is_some() { "postgres" } else { "embedded" };
        if context.role == Role::Job
            && let Some(table) = crate::tables::tables().lock().unwrap().get(&self.table)
        {
            // The host serves this table: write into it (one database file opens once,
            // and the API keeps serving it with the host's tokens and `keep`).
            if table.backend() != backend {
                return Err(BuildError::stage(stage, format!(
                    "table `{}` is {backend} here, but the host serves it from its {} backend",
                    self.table,
                    table.backend()
                )));
            }
            return Ok(Box::new(self.sink(table.clone())));
        }
        // A table of this name left by a pipeline that ran before (a reload) holds its
        // database open; this one replaces it.
        if context.role == Role::Host {
            crate::tables::tables().lock().unwrap().remove(&self.table);
        }
        let digests = |tokens: &[BearerToken]| tokens.iter().map(BearerToken::digest).collect();
        let access = crate::tables::Access {
            read_tokens: digests(&self.read_tokens),
            write_tokens: digests(&self.write_tokens),
            max_subscribers: self.max_subscribers,
        };
        let table = match &self.postgres {
            Some(_) if self.path.is_some() => {
                return Err(BuildError::stage(stage, "`path` and `postgres` are two backends: choose one"));
            }
            #[cfg(feature = "postgres")]
            Some(connection) => Table::postgres(&self.table, connection, self.keep, access)
                .map_err(|error| BuildError::stage(stage, error))?,
            #[cfg(not(feature = "postgres"))]
            Some(_) => {
                return Err(BuildError::stage(stage, "`postgres` needs sluice built with the `postgres` feature"));
            }
            None => {
                let path = self
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("serving/{}.redb", self.table)));
                Table::open(&self.table, &context.data_path(&path), self.keep, access)
                    .map_err(|error| BuildError::stage(stage, error))?
            }
        };
        // A job's own table is not served: the API serves the host's config.
        if context.role == Role::Host {
            crate::tables::tables()
                .lock()
                .unwrap()
                .insert(self.table.clone(), table.clone());
        }
        Ok(Box::new(self.sink(table)))
    }
}

impl ServingSinkConfig {
    fn sink(&self, table: Arc<Table>) -> ServingSink {
        ServingSink {
            table,
            key: self.key.clone(),
            time_field: self.time_field.clone(),
            ttl: self.ttl,
            rejected: Vec::new(),
        }
    }
}

pub struct ServingSink {
    table: Arc<Table>,
    key: String,
    time_field: Option<String>,
    ttl: Option<Duration>,
    rejected: Vec<DeadLetter>,
}

/// The time in the `field` of `value`: epoch milliseconds, or (with the object-store
/// feature, which brings the time parser) RFC 3339.
fn time_of(value: &serde_json::Value, field: &str) -> Option<i64> {
    let time = crate::template::field(Some(value), field)?;
    #[cfg(feature = "object-store")]
    return crate::storage::time_ms(time);
    #[cfg(not(feature = "object-store"))]
    time.as_i64()
}

/// The text of the key field of `value`.
fn key_of(value: &serde_json::Value, path: &str) -> Option<String> {
    match crate::template::field(Some(value), path)? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl super::Sink for ServingSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            let mut values = Vec::with_capacity(batch.len());
            let mut refused = Vec::new();
            let mut stored = vec![true; batch.len()];
            for (index, (event, ack)) in batch.events.iter().zip(&batch.acks).enumerate() {
                // One parse: the key comes from the value stored.
                let value = serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
                });
                let Some(key) = key_of(&value, &self.key) else {
                    stored[index] = false;
                    refused.push(DeadLetter {
                        event: event.clone(),
                        ack: ack.clone(),
                        reason: format!("no `{}` to key the serving table on", self.key),
                    });
                    continue;
                };
                let timestamp_ms = self
                    .time_field
                    .as_deref()
                    .and_then(|field| time_of(&value, field))
                    .unwrap_or(event.timestamp_ms);
                values.push((
                    key,
                    Value {
                        value,
                        timestamp_ms,
                        expires_ms: self.ttl.map(|ttl| crate::event::now_ms() + ttl.as_millis() as i64),
                    },
                ));
            }
            match self.table.put(values).await {
                Ok(()) => {
                    // A refused event's copy is with its dead letter.
                    self.rejected.extend(refused);
                    for (ack, stored) in batch.acks.into_iter().zip(stored) {
                        if stored { ack.delivered() } else { ack.handed_on() }
                    }
                    Ok(())
                }
                Err(error) => {
                    // The retry refuses them again.
                    refused.into_iter().for_each(|letter| letter.ack.handed_on());
                    Err((batch, error.into()))
                }
            }
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::pipeline::Ack;
    use crate::sinks::Sink;
    use crate::tables::Access;

    /// One reading `{"device_id":"d0","ts":TS,"score":SCORE}` that arrived at `arrived`.
    fn reading(ts: i64, score: f64, arrived: i64) -> Batch {
        let mut batch = Batch::default();
        let payload = format!(r#"{{"device_id":"d0","ts":{ts},"score":{score}}}"#);
        let event = Event {
            timestamp_ms: arrived,
            ..Event::new(payload, "score")
        };
        batch.push(event, Ack::none());
        batch
    }

    /// The scores `d0` holds after the live reading and then its re-scored copy (stamped
    /// with its `ts`, as a replay stamps it) went through a sink of `config`.
    async fn after_rescore(config: &str) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let config: ServingSinkConfig = toml::from_str(config).unwrap();
        let table = Table::open("rescored", &dir.path().join("t.redb"), 1, Access::default())
            .unwrap();
        let mut sink = config.sink(table.clone());
        // Read at 1000, arrived 40 ms later; scored again by a replay, which stamps it 1000.
        for batch in [reading(1_000, 0.1, 1_040), reading(1_000, 0.7, 1_000)] {
            assert!(sink.write(batch).await.is_ok());
        }
        let values = table.get("d0", 0).await.unwrap().unwrap();
        values.iter().map(|v| v.value["score"].clone()).collect()
    }

    #[tokio::test]
    async fn with_a_time_field_a_reading_scored_again_replaces_its_live_copy() {
        let keyed = "table = \"rescored\"\nkey = \"device_id\"\npublic = true";
        assert_eq!(
            after_rescore(&format!("{keyed}\ntime_field = \"ts\"")).await,
            [0.7],
            "one time: the later write goes first"
        );
        assert_eq!(
            after_rescore(keyed).await,
            [0.1],
            "by arrival, the live copy is newer than the replayed one"
        );
    }
}
