//! The API's one auth layer for its operator surfaces: `[api] admin_token` (or a client
//! certificate naming one of `[api] admin_certificates`) guards the admin page and its
//! overview, the fleet's device list and `/metrics`, which `[api] metrics_token` may
//! also read (Prometheus scrapes with it, and can do nothing else). Without an admin token these are open, which the config allows on a loopback
//! address only (or with `insecure = true`).

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ApiConfig;
use crate::connect::certs::PeerNames;
use crate::connect::token::{self, BearerToken, Presented};

/// The tokens of the running config (a reload replaces them).
#[derive(Clone, Default)]
pub struct AdminAccess {
    admin: Option<BearerToken>,
    metrics: Option<BearerToken>,
    /// Names a client certificate may carry to be an admin.
    certificates: Vec<String>,
}

impl AdminAccess {
    pub fn new(config: &ApiConfig) -> AdminAccess {
        AdminAccess {
            admin: config.admin_token.clone(),
            metrics: config.metrics_token.clone(),
            certificates: config.admin_certificates.clone(),
        }
    }

    /// Whether the admin routes need credentials at all.
    fn guarded(&self) -> bool {
        self.admin.is_some() || !self.certificates.is_empty()
    }

    /// Whether the request's client certificate names an admin.
    fn certified(&self, request: &Request) -> bool {
        let names = request.extensions().get::<PeerNames>();
        names.is_some_and(|names| names.find(&self.certificates).is_some())
    }
}

pub type SharedAccess = Arc<RwLock<AdminAccess>>;

/// Middleware of the admin routes: the admin token, when one is set.
pub async fn admin_only(
    State(access): State<SharedAccess>,
    request: Request,
    next: Next,
) -> Response {
    let (admin, certified, guarded) = {
        let access = access.read().unwrap();
        (
            access.admin.clone(),
            access.certified(&request),
            access.guarded(),
        )
    };
    if certified {
        return next.run(request).await;
    }
    match check(admin.as_slice(), guarded, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// Middleware of `/metrics`: the admin or the metrics token, when either is set.
pub async fn metrics_readers(
    State(access): State<SharedAccess>,
    request: Request,
    next: Next,
) -> Response {
    let (expected, certified, guarded): (Vec<BearerToken>, bool, bool) = {
        let access = access.read().unwrap();
        let tokens = access.admin.iter().chain(&access.metrics).cloned();
        let guarded = access.guarded() || access.metrics.is_some();
        (tokens.collect(), access.certified(&request), guarded)
    };
    if certified {
        return next.run(request).await;
    }
    match check(&expected, guarded, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// Whether the request bears one of `expected` (open when not `guarded`): 401 without
/// a token (asking a browser for it as a Basic password), 403 with another.
fn check(expected: &[BearerToken], guarded: bool, headers: &HeaderMap) -> Result<(), Response> {
    if !guarded {
        return Ok(());
    }
    let refuse = |status: StatusCode, message: &str| {
        let body = axum::Json(serde_json::json!({ "error": message }));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenges = response.headers_mut();
            challenges.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
            challenges.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sluice\""),
            );
        }
        response
    };
    let Some(presented) = Presented::from_headers(headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the API's admin token is needed: `Authorization: Bearer <token>`",
        ));
    };
    match token::find(&presented, expected.iter().map(|token| ((), token))) {
        Some(()) => Ok(()),
        None => Err(refuse(
            StatusCode::FORBIDDEN,
            "this token may not use this route",
        )),
    }
}
