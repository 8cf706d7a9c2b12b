//! The host's HTTP API: Prometheus `/metrics`, liveness `/health` and readiness
//! `/ready` (every stage started), the serving tables (`/v1/tables`, [`tables`]), the
//! admin page (`/admin`, [`admin`]) and the fleet's routes when the config has a
//! `[fleet]` ([`crate::fleet::serve`]).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub mod admin;
mod tables;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests that embed the pipeline);
        // then this handle renders an empty page, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[derive(Clone)]
struct ApiState {
    ready: Arc<AtomicBool>,
}

/// Serve the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    fleet: Option<Arc<crate::fleet::serve::FleetState>>,
    overview: Arc<admin::Overview>,
) -> std::io::Result<()> {
    prometheus();
    let mut router = Router::new()
        .route("/metrics", get(|| async { prometheus().render() }))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(readiness))
        .with_state(ApiState { ready })
        .merge(tables::routes());
    if let Some(fleet) = fleet {
        #[cfg(feature = "mqtt")]
        fleet.listen_heartbeats(shutdown.clone());
        router = router.merge(crate::fleet::serve::routes(fleet));
    }
    router = router.merge(admin::routes(overview));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readiness(State(state): State<ApiState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
