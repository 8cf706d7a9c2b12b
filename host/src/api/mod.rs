//! The host's HTTP API: Prometheus `/metrics`, liveness `/health` and readiness
//! `/ready` (a pipeline runs), the serving tables (`/v1/tables`, [`tables`]), the admin
//! page (`/admin`, [`admin`]) and the fleet's routes when the config has a `[fleet]`
//! ([`crate::fleet::routes`]).
//!
//! The listener outlives pipelines: the supervisor binds it once and, on every reload,
//! swaps the routes that depend on the config ([`ApiServer::set_routes`]), so that a
//! reload neither drops connections nor races a new bind against the old socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

pub mod admin;
mod tables;

#[derive(Debug, thiserror::Error)]
#[error("API on {listen}: {source}")]
pub struct ApiError {
    pub listen: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A listening API: the routes every config has, and a slot for a config's own.
pub struct ApiServer {
    listen: SocketAddr,
    routes: Arc<RwLock<Router>>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    /// Bind `listen` and serve; not ready, and without a config's routes, until told.
    pub fn bind(listen: SocketAddr) -> Result<ApiServer, ApiError> {
        let error = |source| ApiError { listen, source };
        let listener = std::net::TcpListener::bind(listen).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(error)?;
        let ready = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(RwLock::new(Router::new()));
        let current = routes.clone();
        let router = Router::new()
            .route("/metrics", get(|| async { crate::counters::render() }))
            .route("/health", get(|| async { "ok\n" }))
            .route("/ready", get(readiness))
            .with_state(ready.clone())
            .fallback(move |request: Request| {
                let mut routes = current.read().unwrap().clone();
                async move { routes.call(request).await }
            });
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        tracing::info!(address = %listen, "API: /metrics, /health, /ready, /admin, /v1/tables");
        Ok(ApiServer {
            listen,
            routes,
            ready,
            stop,
            task,
        })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Serve a config's routes: the admin page over `overview`, the tables, the fleet.
    pub fn set_routes(
        &self,
        overview: Arc<admin::Overview>,
        fleet: Option<Arc<crate::fleet::registry::FleetState>>,
    ) {
        let mut router = tables::routes().merge(admin::routes(overview));
        if let Some(fleet) = fleet {
            router = router.merge(crate::fleet::routes::routes(fleet));
        }
        *self.routes.write().unwrap() = router;
    }

    /// What `/ready` answers: whether a pipeline runs.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Stop accepting, finish the requests in flight, and release the port.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(listen = %self.listen, "API: {error}"),
            Err(panic) => tracing::error!(listen = %self.listen, "API panicked: {panic}"),
        }
    }
}

async fn readiness(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
