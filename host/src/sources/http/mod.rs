//! `type = "http"` source: `POST` NDJSON (one JSON value per line) or a JSON array to
//! `path`. The response waits until every sink downstream has durably taken the events:
//! `200` means delivered. `401` without the bearer token, `413` over `max_body_bytes`,
//! `429` when the pipeline pushes back (retry later), `400` for a body that is not JSON,
//! `503` when the pipeline could not deliver. Nothing is dropped silently.
//!
//! The listener's keys (`listen`, `tls`, `insecure`, timeouts and caps) are those of
//! every HTTP listener ([`crate::connect::listener`]): on an address other than loopback
//! it needs `tls` and a `token`, or `insecure = true`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, now_ms};
use crate::pipeline::{Ack, Batch, Outputs, StageError};
use crate::component::{BuildContext, BuildError, Declaration, Listening};
use crate::connect::SettingsError;
use crate::connect::listener::{Listener, listener_config};
use crate::connect::token::{BearerToken, Presented};

listener_config! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HttpSourceConfig {
        #[serde(default = "default_path")]
        pub path: String,
        /// Required `Authorization: Bearer <token>`, when set.
        #[serde(default)]
        pub token: Option<BearerToken>,
        #[serde(default = "default_max_body")]
        pub max_body_bytes: usize,
        /// How long a request waits for delivery before answering 503.
        #[serde(
            rename = "delivery_timeout_ms",
            default = "default_delivery_timeout",
            with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
        )]
        pub delivery_timeout: Duration,
    }
}

fn default_path() -> String {
    "/ingest".to_owned()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

impl super::SourceConfig for HttpSourceConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            listens: vec![Listening {
                settings: self.listener(),
                span: self.listen.span(),
                authenticated: self.token.is_some(),
                auth_key: "token",
            }],
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        let name = context.stage;
        if !self.path.starts_with('/') {
            return Err(BuildError::stage(
                name,
                format!("`path` must start with `/`, got `{}`", self.path),
            ));
        }
        // Bound now, so that a taken port or a bad certificate stops the start; served
        // once the pipeline runs.
        let listener = Listener::bind(&format!("stage `{name}`"), &self.listener(), self.token.is_some())
            .map_err(|error| SettingsError::new(name, error))?;
        Ok(Box::new(HttpSource {
            stage: Arc::from(name),
            listener,
            path: self.path.clone(),
            token: self.token.clone(),
            max_body_bytes: self.max_body_bytes,
            delivery_timeout: self.delivery_timeout,
        }))
    }
}

pub struct HttpSource {
    stage: Arc<str>,
    listener: Listener,
    path: String,
    token: Option<BearerToken>,
    max_body_bytes: usize,
    delivery_timeout: Duration,
}

struct Shared {
    stage: Arc<str>,
    outputs: Outputs,
    token: Option<BearerToken>,
    delivery_timeout: Duration,
}

impl super::Source for HttpSource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let shared = Arc::new(Shared {
                stage: self.stage.clone(),
                outputs,
                token: self.token,
                delivery_timeout: self.delivery_timeout,
            });
            let router = Router::new()
                .route(&self.path, post(ingest))
                .layer(DefaultBodyLimit::max(self.max_body_bytes))
                .with_state(shared);
            let tls = self.listener.settings().tls.is_some();
            tracing::info!(stage = %self.stage, address = %self.listener.local_addr(), path = self.path, tls, "HTTP ingest listening");
            self.listener.serve(router, shutdown).await;
            Ok(())
        }
        .boxed()
    }
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn ingest(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &shared.token
        && !Presented::from_headers(&headers).is_some_and(|presented| token.matches(&presented))
    {
        return reply(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let payloads = match split_payloads(&body) {
        Ok(payloads) if payloads.is_empty() => {
            return reply(StatusCode::BAD_REQUEST, "the body holds no events");
        }
        Ok(payloads) => payloads,
        Err(message) => return reply(StatusCode::BAD_REQUEST, message),
    };
    let count = payloads.len();
    let (delivered, outcome) = oneshot::channel();
    let ack = Ack::new(move || {
        let _ = delivered.send(());
    });
    let origin = shared.stage.clone();
    let now = now_ms();
    let mut batch = Batch::with_capacity(count);
    for payload in payloads {
        batch.push(
            Event {
                key: None,
                payload,
                headers: Vec::new(),
                timestamp_ms: now,
                origin: origin.clone(),
            },
            ack.clone(),
        );
    }
    ack.handed_on();
    if let Err(refused) = shared.outputs.try_send(batch) {
        // Not accepted: the client retries; these events must not acknowledge anything.
        refused.fail();
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            "the pipeline is busy; retry later",
        );
    }
    shared.outputs.metrics().events_in.increment(count as u64);
    match tokio::time::timeout(shared.delivery_timeout, outcome).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "accepted": count })),
        )
            .into_response(),
        Ok(Err(_)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline could not deliver the events; retry",
        ),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery timed out; the events may still arrive, retry is safe",
        ),
    }
}

/// A JSON array becomes one event per element; anything else is NDJSON. Public for the
/// fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn split_payloads(body: &Bytes) -> Result<Vec<Bytes>, String> {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(body).map_err(|error| format!("invalid JSON array: {error}"))?;
        return Ok(items
            .into_iter()
            .map(|item| body.slice_ref(item.get().as_bytes()))
            .collect());
    }
    let mut payloads = Vec::new();
    for (number, line) in body.split(|b| *b == b'\n').enumerate() {
        let text = line.trim_ascii();
        if !text.is_empty() {
            serde_json::from_slice::<serde::de::IgnoredAny>(text)
                .map_err(|error| format!("line {}: invalid JSON: {error}", number + 1))?;
            payloads.push(body.slice_ref(text));
        }
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arrays_and_ndjson() {
        let array = split_payloads(&Bytes::from_static(b" [{\"a\":1}, 2]")).unwrap();
        assert_eq!(
            array,
            [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"2")]
        );
        let lines = split_payloads(&Bytes::from_static(b"{\"a\":1}\n\n {\"b\":2} \n")).unwrap();
        assert_eq!(
            lines,
            [
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"{\"b\":2}")
            ]
        );
        assert_eq!(
            split_payloads(&Bytes::from_static(b"{}\nnope"))
                .unwrap_err()
                .split(':')
                .next(),
            Some("line 2")
        );
    }
}
