//! The serving API over the tables `serving` sinks write:
//! - `GET /v1/tables/{table}/keys/{key}`: the key's values, newest first;
//! - `GET /v1/tables/{table}/keys?prefix=P&limit=N`: keys under a prefix (at most
//!   1,000), each with its newest value;
//! - `GET /v1/tables/{table}/events`: Server-Sent Events, one `update` per value stored
//!   from then on (a `lagged` event tells a reader too slow how many it missed);
//! - `GET /v1/openapi.json`: the OpenAPI document of these routes.
//!
//! - `PUT /v1/tables/{table}/keys/{key}` (a JSON body): store a value, with one of the
//!   table's `write_tokens` (a table without them takes no writes over the API).
//!
//! A table with `read_tokens` answers reads only with one of them (compared in constant
//! time): 401 without a token, 403 with another; one without is public (its config says
//! `public = true`). An event stream past the table's `max_subscribers` is answered 503.
//! Errors are JSON.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::connect::token::{self, BearerToken, Presented};
use crate::tables::Table;

const MAX_LIMIT: usize = 1000;

pub fn routes() -> Router {
    Router::new()
        .route("/v1/tables/{table}/keys/{key}", get(one).put(write))
        .route("/v1/tables/{table}/keys", get(prefix))
        .route("/v1/tables/{table}/events", get(events))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
}

/// The API's OpenAPI document.
const OPENAPI: &str = include_str!("openapi.json");

async fn events(Path(name): Path<String>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let table = match readable(&name, &headers) {
        Ok(table) => table,
        Err(response) => return response,
    };
    let Some(subscription) = table.subscribe() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("table `{name}` has as many event-stream readers as it takes; retry later"),
        );
    };
    let stream = futures::stream::unfold(subscription, |mut subscription| async move {
        let updates = &mut subscription.updates;
        let event = match updates.recv().await {
            Ok(update) => {
                let (key, value) = update.as_ref();
                Event::default()
                    .event("update")
                    .data(serde_json::json!({ "key": key, "value": value }).to_string())
            }
            Err(RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), subscription))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The table, if it exists and the request may read it.
fn readable(name: &str, headers: &HeaderMap) -> Result<std::sync::Arc<Table>, Response> {
    let table = table(name)?;
    if table.access.read_tokens.is_empty() {
        return Ok(table);
    }
    allowed(name, headers, &table.access.read_tokens, "read")?;
    Ok(table)
}

fn table(name: &str) -> Result<std::sync::Arc<Table>, Response> {
    crate::tables::tables()
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no table `{name}`")))
}

/// Whether the request bears one of `tokens`.
fn allowed(
    name: &str,
    headers: &HeaderMap,
    tokens: &[[u8; 32]],
    what: &str,
) -> Result<(), Response> {
    let Some(presented) = Presented::from_headers(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            format!("table `{name}` needs a {what} token"),
        ));
    };
    let expected: Vec<BearerToken> = tokens
        .iter()
        .copied()
        .map(BearerToken::from_digest)
        .collect();
    match token::find(&presented, expected.iter().map(|token| ((), token))) {
        Some(()) => Ok(()),
        None => Err(error(
            StatusCode::FORBIDDEN,
            format!("this token may not {what} table `{name}`"),
        )),
    }
}

async fn write(
    Path((name, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let table = match table(&name) {
        Ok(table) => table,
        Err(response) => return response,
    };
    if table.access.write_tokens.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            format!("table `{name}` takes no writes over the API"),
        );
    }
    if let Err(response) = allowed(&name, &headers, &table.access.write_tokens, "write") {
        return response;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be JSON");
    };
    let stored = crate::tables::Value {
        value,
        timestamp_ms: crate::event::now_ms(),
        expires_ms: None,
    };
    match table.put(vec![(key, stored)]).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string()),
    }
}

async fn one(Path((name, key)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let table = match readable(&name, &headers) {
        Ok(table) => table,
        Err(response) => return response,
    };
    match table.get(&key, crate::event::now_ms()).await {
        Ok(Some(values)) => {
            Json(serde_json::json!({ "key": key, "values": values })).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no key `{key}` in table `{name}`"),
        ),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string()),
    }
}

#[derive(Deserialize)]
struct PrefixQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: Option<usize>,
}

async fn prefix(
    Path(name): Path<String>,
    query: Result<Query<PrefixQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "`prefix` is text and `limit` a number",
        );
    };
    let table = match readable(&name, &headers) {
        Ok(table) => table,
        Err(response) => return response,
    };
    let limit = query.limit.unwrap_or(100).min(MAX_LIMIT);
    match table
        .scan(&query.prefix, limit, crate::event::now_ms())
        .await
    {
        Ok(entries) => {
            let keys: Vec<_> = entries
                .into_iter()
                .map(|(key, value)| serde_json::json!({ "key": key, "value": value }))
                .collect();
            Json(serde_json::json!({ "keys": keys })).into_response()
        }
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;

    /// Every operation of the document, with its effective security requirements.
    fn operations(doc: &serde_json::Value) -> Vec<(String, &serde_json::Value, bool)> {
        let global = doc["security"].as_array().unwrap();
        let takes_token = |security: &Vec<serde_json::Value>| {
            security
                .iter()
                .any(|requirement| !requirement.as_object().unwrap().is_empty())
        };
        let mut found = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let security = operation["security"].as_array().unwrap_or(global);
                found.push((
                    format!("{} {path}", method.to_uppercase()),
                    operation,
                    takes_token(security),
                ));
            }
        }
        found
    }

    #[test]
    fn every_operation_lists_the_listeners_503_and_the_token_refusals() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let unavailable = &doc["components"]["responses"]["Unavailable"];
        assert!(unavailable["headers"]["Retry-After"].is_object());
        let operations = operations(&doc);
        assert!(
            operations
                .iter()
                .any(|(name, ..)| name == "GET /v1/tables/{table}/events"),
            "the event stream, answered 503 past `max_subscribers`, is described"
        );
        for (name, operation, takes_token) in operations {
            let responses = &operation["responses"];
            let refused = &responses["503"];
            // `/ready` answers 503 while starting too, so it describes both in its own words.
            let described = refused["$ref"] == "#/components/responses/Unavailable"
                || (name == "GET /ready" && refused["content"]["application/json"].is_object());
            assert!(described, "{name} does not describe the listener's 503");
            if takes_token {
                for status in ["401", "403"] {
                    assert!(
                        responses[status].is_object(),
                        "{name} takes a token but has no {status}"
                    );
                }
            }
        }
    }
}
