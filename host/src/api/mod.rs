//! The host's HTTP API: Prometheus `/metrics`, liveness `/health` and readiness
//! `/ready` (a pipeline runs), the serving tables (`/v1/tables`, [`tables`]), the admin
//! page (`/admin`, [`admin`]), live samples of a stage's events (`/v1/tap`, [`tap`])
//! and the fleet's routes when the config has a `[fleet]` ([`crate::fleet::routes`]).
//! The operator surfaces are guarded by one auth layer
//! ([`auth`]); the listener (TLS, timeouts, caps) is every listener's
//! ([`crate::connect::listener`]).
//!
//! The listener outlives pipelines: the supervisor binds it once and, on every reload,
//! swaps the routes and tokens that depend on the config ([`ApiServer::set_routes`]), so
//! that a reload neither drops connections nor races a new bind against the old socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::config::ApiConfig;
use crate::connect::listener::{Listener, ListenerError, ListenerSettings};

pub mod admin;
pub mod auth;
mod tables;
pub mod tap;

#[derive(Debug, thiserror::Error)]
#[error("API: {0}")]
pub struct ApiError(#[from] pub ListenerError);

/// A listening API: the routes every config has, and a slot for a config's own.
pub struct ApiServer {
    settings: ListenerSettings,
    routes: Arc<RwLock<Router>>,
    access: auth::SharedAccess,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Bind `[api]` and serve; not ready, and without a config's routes, until told.
    pub fn bind(config: &ApiConfig) -> Result<ApiServer, ApiError> {
        let settings = config.listener();
        let listener = Listener::bind("API", &settings, config.authenticates())?;
        let address = listener.local_addr();
        let ready = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(RwLock::new(Router::new()));
        let access = auth::SharedAccess::new(RwLock::new(auth::AdminAccess::new(config)));
        let current = routes.clone();
        let metrics = Router::new()
            .route("/metrics", get(|| async { crate::counters::render() }))
            .route_layer(from_fn_with_state(access.clone(), auth::metrics_readers));
        let router = Router::new()
            .route("/health", get(|| async { "ok\n" }))
            .route("/ready", get(readiness))
            .with_state(ready.clone())
            .merge(metrics)
            .fallback(move |request: Request| {
                let mut routes = current.read().unwrap().clone();
                async move { routes.call(request).await }
            });
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.serve(router, stop.clone()));
        tracing::info!(%address, tls = settings.tls.is_some(), "API: /metrics, /health, /ready, /admin, /v1/tables");
        Ok(ApiServer {
            settings,
            routes,
            access,
            ready,
            stop,
            task,
        })
    }

    /// Where and how it listens: a config asking for the same keeps this listener.
    pub fn settings(&self) -> &ListenerSettings {
        &self.settings
    }

    /// Serve a config's routes and tokens: the admin page over `overview`, taps on
    /// `outlets`, the tables, the fleet, and `operators` (more routes for admins only:
    /// the jobs).
    pub fn set_routes(
        &self,
        config: &ApiConfig,
        overview: Arc<admin::Overview>,
        outlets: Arc<tap::Outlets>,
        fleet: Option<Arc<crate::fleet::registry::FleetState>>,
        operators: Router,
    ) {
        *self.access.write().unwrap() = auth::AdminAccess::new(config);
        let mut operators = admin::routes(overview)
            .merge(tap::routes(outlets))
            .merge(operators);
        let mut router = tables::routes();
        if let Some(fleet) = fleet {
            operators = operators.merge(crate::fleet::routes::admin_routes(fleet.clone()));
            router = router.merge(crate::fleet::routes::routes(fleet));
        }
        let operators =
            operators.route_layer(from_fn_with_state(self.access.clone(), auth::admin_only));
        *self.routes.write().unwrap() = router.merge(operators);
    }

    /// What `/ready` answers: whether a pipeline runs.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Stop accepting, finish the requests in flight, and release the port.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(panic) = self.task.await {
            tracing::error!(listen = %self.settings.listen, "API panicked: {panic}");
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
