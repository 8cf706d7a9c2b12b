//! The central host's side of the fleet, on its API port:
//! - `GET /fleet/v1/release`: the manifest of the release the calling device's group
//!   runs, its exact bytes; `ETag` the release's id (`If-None-Match` answers 304) and
//!   `X-Sluice-Signature` its ed25519 signature (base64) when it is signed. The agent
//!   reports what it runs in request headers (`X-Sluice-Applied`, `X-Sluice-Buffered`,
//!   `X-Sluice-Error`);
//! - `GET /fleet/v1/release/{id}/{file}`: a file of that release (`config.toml`,
//!   `plugins/<sha256>.wasm`, `artifacts/...`), served from memory;
//! - `GET /fleet/v1/devices` ([`admin_routes`]): every device's last contact, applied
//!   release, buffer depth and last error; `GET /fleet/v1/rollouts` every group's
//!   rollout, and `POST /fleet/v1/rollouts/{group}/pause|resume|abort`; the API guards
//!   them with its admin token.
//!
//! Nothing is compiled on request: machine code is made with the release, for the
//! targets it declares. Devices authenticate with a client certificate that names them
//! (mutual TLS) or their bearer token, compared in constant time
//! ([`FleetState::identify`]); either reaches only the device's own group's releases.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

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
        .route("/fleet/v1/release", get(release))
        .route("/fleet/v1/release/{id}/{*file}", get(release_file))
        .with_state(state)
}

/// The routes for the fleet's operators, which the API guards with its admin token.
pub fn admin_routes(state: Arc<FleetState>) -> Router {
    Router::new()
        .route("/fleet/v1/devices", get(devices))
        .route("/fleet/v1/rollouts", get(rollouts))
        .route("/fleet/v1/rollouts/{group}/{action}", post(operate))
        .with_state(state)
}

async fn rollouts(State(fleet): State<Arc<FleetState>>) -> Response {
    Json(fleet.rollouts()).into_response()
}

/// `POST /fleet/v1/rollouts/{group}/pause|resume|abort`.
async fn operate(
    State(fleet): State<Arc<FleetState>>,
    UrlPath((group, action)): UrlPath<(String, String)>,
) -> Response {
    match fleet.operate(&group, &action) {
        Ok(rollout) => Json(rollout).into_response(),
        Err(problem) => error(StatusCode::CONFLICT, problem),
    }
}

async fn release(
    State(fleet): State<Arc<FleetState>>,
    Caller(device): Caller,
    headers: HeaderMap,
) -> Response {
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
        entry.buffered_entries = text("x-sluice-buffered").and_then(|n| n.parse().ok());
        entry.error = text("x-sluice-error");
        // An error is about the release the device was offered last.
        entry.refused = entry.error.as_ref().and(entry.offered.clone());
    }
    let served = match fleet.offer(&device) {
        Ok(served) => served,
        Err(failure) => {
            tracing::error!(device, "fleet: cannot serve a release: {failure}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string());
        }
    };
    if let Some(entry) = fleet.status.lock().unwrap().get_mut(&device) {
        entry.offered = Some(served.id.clone());
    }
    let etag = format!("\"{}\"", served.id);
    let mut response_headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    };
    set("etag", etag.clone());
    set("content-type", "application/json".to_owned());
    set(
        "x-sluice-poll-secs",
        fleet.config.poll_secs.max(1).to_string(),
    );
    if let Some(signature) = &served.signed.signature {
        use base64::Engine as _;
        set(
            "x-sluice-signature",
            base64::engine::general_purpose::STANDARD.encode(signature),
        );
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    (
        StatusCode::OK,
        response_headers,
        served.signed.bytes.clone(),
    )
        .into_response()
}

async fn release_file(
    State(fleet): State<Arc<FleetState>>,
    Caller(device): Caller,
    UrlPath((id, file)): UrlPath<(String, String)>,
) -> Response {
    let group = &fleet.config.devices[&device].group;
    // Another group's release is as unknown to this device as one that does not exist.
    let Some(served) = fleet.releases.by_id(group, &id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no release {id} for this device"),
        );
    };
    match served.files.get(&file) {
        Some(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes.clone(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("release {id} has no file `{file}`"),
        ),
    }
}

async fn devices(State(fleet): State<Arc<FleetState>>) -> Response {
    let status = fleet.status.lock().unwrap().clone();
    Json(status).into_response()
}
