//! The jobs over the API (admin only):
//!
//! - `GET /v1/jobs`: every job, its schedule, next firing and newest runs;
//! - `GET /v1/jobs/{job}/runs?limit=N`, `GET /v1/jobs/{job}/runs/{slot}` (with its log);
//! - `POST /v1/jobs/{job}/run?slot=T`: run a slot now (the latest firing by default);
//! - `POST /v1/jobs/{job}/retry?slot=T&downstream=true`: run a slot again (the newest
//!   failed one by default), and with `downstream` what depends on it;
//! - `POST /v1/jobs/{job}/pause`, `/resume`.
//!
//! A slot is named by its end: RFC 3339 (`2026-12-07T00:00:00Z`) or milliseconds.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{Workflow, WorkflowError};

pub fn routes(workflow: Arc<Workflow>) -> Router {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{job}/runs", get(runs))
        .route("/v1/jobs/{job}/runs/{slot}", get(run))
        .route("/v1/jobs/{job}/{action}", post(operate))
        .with_state(workflow)
}

fn answer<T: serde::Serialize>(result: Result<T, WorkflowError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => {
            let status = match &error {
                WorkflowError::UnknownJob(_) | WorkflowError::NoRun(_) => StatusCode::NOT_FOUND,
                WorkflowError::Conflict(_) => StatusCode::CONFLICT,
                WorkflowError::BadRequest(_) => StatusCode::BAD_REQUEST,
                WorkflowError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (
                status,
                Json(serde_json::json!({ "error": error.to_string() })),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn list(State(workflow): State<Arc<Workflow>>, Query(query): Query<Limit>) -> Response {
    answer(workflow.list(query.limit.unwrap_or(10).min(500)).await)
}

async fn runs(
    State(workflow): State<Arc<Workflow>>,
    UrlPath(job): UrlPath<String>,
    Query(query): Query<Limit>,
) -> Response {
    answer(
        workflow
            .runs(&job, query.limit.unwrap_or(50).min(500))
            .await,
    )
}

async fn run(
    State(workflow): State<Arc<Workflow>>,
    UrlPath((job, slot)): UrlPath<(String, String)>,
) -> Response {
    let result = match parse_slot(&slot) {
        Ok(end) => workflow.run_of(&job, end).await,
        Err(error) => Err(error),
    };
    answer(result)
}

#[derive(Deserialize)]
struct Operation {
    slot: Option<String>,
    #[serde(default)]
    downstream: bool,
}

async fn operate(
    State(workflow): State<Arc<Workflow>>,
    UrlPath((job, action)): UrlPath<(String, String)>,
    Query(query): Query<Operation>,
) -> Response {
    let slot = match query.slot.as_deref().map(parse_slot).transpose() {
        Ok(slot) => slot,
        Err(error) => return answer::<()>(Err(error)),
    };
    match action.as_str() {
        "run" => answer(workflow.trigger(&job, slot).await),
        "retry" => answer(workflow.retry(&job, slot, query.downstream).await),
        "pause" => answer(workflow.set_paused(&job, true).await),
        "resume" => answer(workflow.set_paused(&job, false).await),
        other => answer::<()>(Err(WorkflowError::BadRequest(format!(
            "no action `{other}`: run, retry, pause or resume"
        )))),
    }
}

/// A slot's end: RFC 3339 or milliseconds since the epoch.
pub fn parse_slot(text: &str) -> Result<i64, WorkflowError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| {
            WorkflowError::BadRequest(format!(
                "`{text}` is not a slot: give its end as RFC 3339 (2026-12-07T00:00:00Z) or milliseconds"
            ))
        })
}
