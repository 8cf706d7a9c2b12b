//! `GET /v1/dead-letters?stage=S&q=TEXT&limit=N`: the dead letters the host keeps in
//! memory for the admin page's browser (the newest 100 of each stage, payloads cut to
//! 4 KiB: `pipeline::dead_letter_log`), newest first. `stage` keeps one stage's, `q`
//! those whose reason or payload text contains it (any case). Admin only.

use axum::Json;
use axum::extract::Query;
use serde::Deserialize;

use crate::pipeline::dead_letter_log::{self, LoggedDeadLetter};

/// Letters answered without a `limit`, and the most answered with one.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
pub struct DeadLetterQuery {
    stage: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
}

pub async fn list(Query(query): Query<DeadLetterQuery>) -> Json<Vec<LoggedDeadLetter>> {
    let found = dead_letter_log::search(
        query.stage.as_deref(),
        query.q.as_deref(),
        query.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT),
    );
    Json(found.iter().map(|letter| (**letter).clone()).collect())
}
