//! The central host's side of the fleet, on its API port:
//! - `GET /fleet/v1/config`: the calling device's bundle config, `ETag` its version
//!   (`If-None-Match` answers 304). The agent reports what it runs in request headers
//!   (`X-Sluice-Applied`, `X-Sluice-Buffered`, `X-Sluice-Error`);
//! - `GET /fleet/v1/plugins/{sha256}`: a plugin of the device's own group, by content;
//! - `GET /fleet/v1/plugins/{sha256}/precompiled?target=T&fuel=B`: that plugin compiled
//!   for the device's target triple (and fuel metering), compiled once per host run;
//! - `GET /fleet/v1/devices` ([`admin_routes`]): every device's last contact, applied
//!   version, buffer depth and last error; the API guards it with its admin token.
//!
//! Devices authenticate with a client certificate that names them (mutual TLS) or their
//! bearer token, compared in constant time ([`FleetState::identify`]); either reaches
//! only the device's own group's config and plugins.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::registry::FleetState;
use crate::connect::certs::PeerNames;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The device calling, as [`FleetState::identify`] names it; refused with 401 or 403.
struct Caller(String);

impl FromRequestParts<Arc<FleetState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        fleet: &Arc<FleetState>,
    ) -> Result<Caller, Response> {
        let peer = parts.extensions.get::<PeerNames>();
        match fleet.identify(&parts.headers, peer) {
            Ok(device) => Ok(Caller(device)),
            Err(refusal) => {
                tracing::debug!(status = %refusal.status, "fleet: refused a request: {}", refusal.message);
                Err(error(refusal.status, refusal.message))
            }
        }
    }
}

/// The routes devices call, each identifying the device.
pub fn routes(state: Arc<FleetState>) -> Router {
    Router::new()
        .route("/fleet/v1/config", get(config))
        .route("/fleet/v1/plugins/{sha256}", get(plugin))
        .route("/fleet/v1/plugins/{sha256}/precompiled", get(precompiled))
        .with_state(state)
}

/// The routes for the fleet's operators, which the API guards with its admin token.
pub fn admin_routes(state: Arc<FleetState>) -> Router {
    Router::new()
        .route("/fleet/v1/devices", get(devices))
        .with_state(state)
}

async fn config(
    State(fleet): State<Arc<FleetState>>,
    Caller(device): Caller,
    headers: HeaderMap,
) -> Response {
    let group = fleet.config.devices[&device].group.clone();
    let bundle = match fleet.config.bundle(&fleet.base, &group) {
        Ok(bundle) => bundle,
        Err(failure) => {
            tracing::error!(device, "cannot serve the fleet config: {failure}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string());
        }
    };
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    {
        let mut status = fleet.status.lock().unwrap();
        let entry = status.entry(device.clone()).or_default();
        entry.last_seen_ms = Some(crate::event::now_ms());
        entry.applied = text("x-sluice-applied");
        entry.offered = Some(bundle.version.clone());
        entry.buffered_entries = text("x-sluice-buffered").and_then(|n| n.parse().ok());
        entry.error = text("x-sluice-error");
    }
    let etag = format!("\"{}\"", bundle.version);
    let headers_out = [
        (header::ETAG, etag.clone()),
        (header::CONTENT_TYPE, "application/toml".to_owned()),
        (
            header::HeaderName::from_static("x-sluice-poll-secs"),
            fleet.config.poll_secs.to_string(),
        ),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, headers_out).into_response();
    }
    (StatusCode::OK, headers_out, bundle.config).into_response()
}

async fn plugin(
    State(fleet): State<Arc<FleetState>>,
    Caller(device): Caller,
    UrlPath(sha256): UrlPath<String>,
) -> Response {
    match fleet.plugin_bytes(&device, &sha256).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct PrecompileQuery {
    target: String,
    #[serde(default)]
    fuel: bool,
}

async fn precompiled(
    State(fleet): State<Arc<FleetState>>,
    Caller(device): Caller,
    UrlPath(sha256): UrlPath<String>,
    Query(query): Query<PrecompileQuery>,
) -> Response {
    let wasm = match fleet.plugin_bytes(&device, &sha256).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    match fleet.precompile(sha256, wasm, query).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(response) => response,
    }
}

impl FleetState {
    /// The bytes of plugin `sha256`, if `device`'s group runs it.
    async fn plugin_bytes(&self, device: &str, sha256: &str) -> Result<Vec<u8>, Response> {
        let group = &self.config.devices[device].group;
        let file = self
            .config
            .bundle(&self.base, group)
            .ok()
            .and_then(|bundle| bundle.plugins.get(sha256).cloned());
        // Another group's plugin is as unknown to this device as one that does not exist.
        let Some(file) = file else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no plugin {sha256} for this device"),
            ));
        };
        tokio::fs::read(&file)
            .await
            .map_err(|failure| error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string()))
    }

    #[cfg(feature = "cross-compile")]
    async fn precompile(
        self: &Arc<Self>,
        sha256: String,
        wasm: Vec<u8>,
        query: PrecompileQuery,
    ) -> Result<bytes::Bytes, Response> {
        let key = (sha256, query.target, query.fuel);
        let cell = self
            .precompiled
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let (target, fuel) = (key.1.clone(), key.2);
            let compiled = tokio::task::spawn_blocking(move || {
                crate::runtime::precompiled::precompile(&wasm, &target, fuel)
            })
            .await
            .map_err(|panic| error(StatusCode::INTERNAL_SERVER_ERROR, panic.to_string()))?
            .map_err(|why| error(StatusCode::UNPROCESSABLE_ENTITY, why.to_string()))?;
            tracing::info!(
                plugin = key.0,
                target = key.1,
                fuel = key.2,
                bytes = compiled.len(),
                "fleet: precompiled a plugin for devices"
            );
            Ok(bytes::Bytes::from(compiled))
        })
        .await
        .cloned()
    }

    #[cfg(not(feature = "cross-compile"))]
    async fn precompile(
        self: &Arc<Self>,
        _sha256: String,
        _wasm: Vec<u8>,
        query: PrecompileQuery,
    ) -> Result<bytes::Bytes, Response> {
        let fuel = if query.fuel { " with fuel" } else { "" };
        Err(error(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "this central host cannot precompile plugins for {}{fuel} (built without the `cross-compile` feature)",
                query.target
            ),
        ))
    }
}

async fn devices(State(fleet): State<Arc<FleetState>>) -> Response {
    let status = fleet.status.lock().unwrap().clone();
    Json(status).into_response()
}
