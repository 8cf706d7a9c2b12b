//! `GET /v1/tap/{stage}?route=R&limit=N&rate=R` (admin only): a live sample of the events
//! leaving a stage, streamed as JSON lines (`application/x-ndjson`) for `sluice tap`. Each
//! line is an event record, or a status line `{"tap":{"sent":N,"dropped":M}}`: at most
//! once a second while the counts change, and once at the end. The stream ends after
//! `limit` records, or when the reader leaves (dropping its subscription) or the host stops.
//!
//! What may be tapped is what the config's graph has: a stage's default output (a
//! sink's: what it stored), its named routes, and its dead letters where it has them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::config::{Config, DEAD_LETTER};
use crate::event::Event;
use crate::event_record::EventRecord;
use crate::pipeline::tap::{self, DEFAULT_RATE, MAX_RATE, Tap};

/// How often the stream reports its counts while they change.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Each stage's tappable routes: its named routes, and `dead_letter` where it has one.
pub struct Outlets {
    routes: HashMap<String, Vec<String>>,
}

impl Outlets {
    pub fn new(config: &Config) -> Arc<Outlets> {
        let routes = config
            .graph()
            .nodes
            .into_iter()
            .map(|node| {
                let mut routes = node.routes;
                if node.dead_letter {
                    routes.push(DEAD_LETTER.to_owned());
                }
                (node.name, routes)
            })
            .collect();
        Arc::new(Outlets { routes })
    }

    /// Why `stage`'s `route` cannot be tapped, if it cannot.
    fn check(&self, stage: &str, route: Option<&str>) -> Result<(), String> {
        let Some(routes) = self.routes.get(stage) else {
            return Err(format!("the pipeline has no stage `{stage}`"));
        };
        match route {
            Some(route) if !routes.iter().any(|known| known == route) => {
                let known = match routes.is_empty() {
                    true => "none".to_owned(),
                    false => routes.join(", "),
                };
                Err(format!(
                    "stage `{stage}` has no route `{route}` (its routes: {known})"
                ))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
struct TapQuery {
    route: Option<String>,
    limit: Option<u64>,
    rate: Option<u32>,
}

pub fn routes(outlets: Arc<Outlets>) -> Router {
    Router::new().route(
        "/v1/tap/{stage}",
        get(
            move |Path(stage): Path<String>,
                  query: Result<Query<TapQuery>, axum::extract::rejection::QueryRejection>| {
                let outlets = outlets.clone();
                async move {
                    match query {
                        Ok(Query(query)) => open(&outlets, &stage, query),
                        Err(rejection) => error(StatusCode::BAD_REQUEST, rejection.body_text()),
                    }
                }
            },
        ),
    )
}

fn open(outlets: &Outlets, stage: &str, query: TapQuery) -> Response {
    let rate = query.rate.unwrap_or(DEFAULT_RATE);
    if rate == 0 || rate > MAX_RATE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("rate must be 1 to {MAX_RATE} events per second, not {rate}"),
        );
    }
    if let Err(message) = outlets.check(stage, query.route.as_deref()) {
        return error(StatusCode::NOT_FOUND, message);
    }
    tracing::info!(
        stage,
        route = query.route.as_deref(),
        rate,
        limit = query.limit,
        "tap opened"
    );
    let stream = Stream {
        tap: tap::subscribe(stage, query.route.as_deref(), rate),
        limit: query.limit,
        sent: 0,
        reported: None,
        ticker: tokio::time::interval(STATUS_EVERY),
        ended: false,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), stream))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// One reader's stream: its subscription (dropped with the stream when the reader
/// leaves) and what it has been told.
struct Stream {
    tap: Tap,
    limit: Option<u64>,
    sent: u64,
    /// The counts in the last status line.
    reported: Option<(u64, u64)>,
    ticker: tokio::time::Interval,
    ended: bool,
}

impl Stream {
    /// The records of the events queued (as many as are there, up to the limit), a status line
    /// when the counts changed and a second has passed, or the last status line.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            if self.limit_reached() {
                self.ended = true;
                return Some(self.status());
            }
            tokio::select! {
                event = self.tap.recv() => {
                    let Some(event) = event else {
                        self.ended = true;
                        return Some(self.status());
                    };
                    let mut chunk = BytesMut::new();
                    self.push_record(&mut chunk, &event);
                    while !self.limit_reached() && let Some(event) = self.tap.try_recv() {
                        self.push_record(&mut chunk, &event);
                    }
                    return Some(chunk.freeze());
                }
                _ = self.ticker.tick() => {
                    if self.reported != Some(self.counts()) {
                        return Some(self.status());
                    }
                }
            }
        }
    }

    fn push_record(&mut self, chunk: &mut BytesMut, event: &Event) {
        let record = EventRecord::of(self.tap.stage(), self.tap.route(), event);
        chunk.extend_from_slice(record.to_line().as_bytes());
        chunk.extend_from_slice(b"\n");
        self.sent += 1;
    }

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|limit| self.sent >= limit)
    }

    fn counts(&self) -> (u64, u64) {
        (self.sent, self.tap.dropped())
    }

    fn status(&mut self) -> Bytes {
        let (sent, dropped) = self.counts();
        self.reported = Some((sent, dropped));
        let line = serde_json::json!({ "tap": { "sent": sent, "dropped": dropped } });
        Bytes::from(format!("{line}\n"))
    }
}
