//! The running `http` sink: requests in event order, one event or one JSON array of
//! events each, acknowledged on a 2xx.
//!
//! What an answer means:
//! - **2xx**: delivered;
//! - **408, 429, 5xx**, a refused connection, a timeout: the receiver may take it later.
//!   The write hands the request's events and every later one back to the stage's loop,
//!   which waits (`Retry-After` if the answer had one, else a backoff with jitter, see
//!   [`super::retry`]) and writes them again: nothing overtakes a failed event;
//! - **anything else** (400, 401, 404, 413, a redirect, which is never followed: it would
//!   turn a POST into a GET or carry the token elsewhere): retrying sends the same request
//!   to the same answer, so the events become dead letters, the status and the start of
//!   the answer's body in the reason.
//!
//! Reasons and logs name the receiver by its origin (`https://hooks.slack.com`) only: a
//! webhook's path or query is often its secret. The dead-letter record's `stage` says
//! which sink (and so which `url`) it was.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::body::{self, BodyTemplate};
use super::retry::{self, Next, Schedule};
use crate::event::Event;
use crate::pipeline::{Ack, Batch, DeadLetter, SinkError};

/// How much of a refusal's body goes into the dead letter's reason.
const REASON_BODY_BYTES: usize = 1024;

pub struct HttpSink {
    pub(super) client: reqwest::Client,
    pub(super) method: reqwest::Method,
    pub(super) url: reqwest::Url,
    pub(super) body: Option<BodyTemplate>,
    /// Events per request in batch mode (a JSON array); `None`: one event per request,
    /// its body alone.
    pub(super) batch: Option<usize>,
    pub(super) schedule: Schedule,
    /// The wait the last failed write asks the stage's loop for.
    pub(super) delay: Option<Duration>,
    pub(super) rejected: Vec<DeadLetter>,
}

/// A request that did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("HTTP {status} from {origin}: {body}")]
    Status {
        status: u16,
        origin: String,
        /// The start of the answer's body.
        body: String,
    },
    #[error("{method} {origin}: {cause}")]
    Request {
        method: reqwest::Method,
        origin: String,
        /// The client's error with its causes (a refused connection, a timeout, TLS).
        cause: String,
    },
}

/// What one request came to, short of delivery.
enum Failure {
    /// The receiver may take it later; `retry_after` is the wait it asked for.
    Transient {
        error: SendError,
        retry_after: Option<Duration>,
    },
    /// The receiver will never take it as it is.
    Refused(SendError),
}

/// The events of one request, each with its token.
type Chunk = Vec<(Event, Ack)>;

impl HttpSink {
    /// The receiver as reasons name it: scheme, host and port.
    fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// One event's body, or why it has none.
    fn render(&self, event: &Event) -> Result<Bytes, body::RenderError> {
        match &self.body {
            Some(template) => template.render(event).map(Bytes::from),
            None => {
                if self.batch.is_some() {
                    body::one_json_value(&event.payload)?;
                }
                Ok(event.payload.clone())
            }
        }
    }

    /// The next request's events and body, taken from `rest`; an event without a body
    /// becomes a dead letter on the way. `None` when `rest` is used up.
    fn next_request(
        &mut self,
        rest: &mut impl Iterator<Item = (Event, Ack)>,
    ) -> Option<(Chunk, Bytes)> {
        let per_request = self.batch.unwrap_or(1);
        let mut chunk = Vec::with_capacity(per_request);
        let mut bodies = Vec::with_capacity(per_request);
        while chunk.len() < per_request
            && let Some((event, ack)) = rest.next()
        {
            match self.render(&event) {
                Ok(body) => {
                    bodies.push(body);
                    chunk.push((event, ack));
                }
                Err(error) => self.reject(event, ack, error.to_string()),
            }
        }
        let body = match self.batch {
            Some(_) => Bytes::from(body::json_array(bodies.iter().map(|body| &body[..]))),
            None => bodies.pop()?,
        };
        (!chunk.is_empty()).then_some((chunk, body))
    }

    fn reject(&mut self, event: Event, ack: Ack, reason: String) {
        self.rejected.push(DeadLetter { event, ack, reason });
    }

    async fn send(&self, body: Bytes) -> Result<(), Failure> {
        let origin = self.origin();
        let request = self.client.request(self.method.clone(), self.url.clone());
        let response = request.body(body).send().await.map_err(|error| {
            // reqwest's message names the whole URL, path and query included.
            let error = error.without_url();
            Failure::Transient {
                error: SendError::Request {
                    method: self.method.clone(),
                    origin: origin.clone(),
                    cause: crate::connect::Causes(&error).to_string(),
                },
                retry_after: None,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry::retry_after(value, SystemTime::now()));
        let error = SendError::Status {
            status: status.as_u16(),
            origin,
            body: body_start(response).await,
        };
        Err(if is_transient(status) {
            Failure::Transient { error, retry_after }
        } else {
            Failure::Refused(error)
        })
    }
}

/// Whether the same request may succeed later.
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// The first [`REASON_BODY_BYTES`] of an answer's body, as text; never reads more.
async fn body_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() <= REASON_BODY_BYTES
        && let Ok(Some(chunk)) = response.chunk().await
    {
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return "(no body)".to_owned();
    }
    crate::event::preview(&bytes, REASON_BODY_BYTES)
}

impl crate::sinks::Sink for HttpSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            self.delay = None;
            let Batch { events, acks } = batch;
            let mut rest = events.into_iter().zip(acks);
            while let Some((chunk, body)) = self.next_request(&mut rest) {
                let failure = match self.send(body).await {
                    Ok(()) => {
                        self.schedule.answered();
                        chunk.into_iter().for_each(|(_, ack)| ack.delivered());
                        continue;
                    }
                    Err(failure) => failure,
                };
                let reason = match failure {
                    Failure::Refused(error) => {
                        self.schedule.answered();
                        error.to_string()
                    }
                    Failure::Transient { error, retry_after } => {
                        match self.schedule.failed(Instant::now(), retry_after) {
                            Next::RetryIn(wait) => {
                                self.delay = Some(wait);
                                // This request and everything after it, in order.
                                let mut unsent = Batch::default();
                                for (event, ack) in chunk.into_iter().chain(rest) {
                                    unsent.push(event, ack);
                                }
                                return Err((unsent, error.into()));
                            }
                            Next::GiveUp {
                                attempts,
                                failing_for,
                            } => format!(
                                "the receiver has failed for {}s ({attempts} attempts); the last: {error}",
                                failing_for.as_secs()
                            ),
                        }
                    }
                };
                for (event, ack) in chunk {
                    self.reject(event, ack, reason.clone());
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    fn retry_delay(&self) -> Option<Duration> {
        self.delay
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        // Every write settles its events before it returns: nothing is outstanding.
        async { Ok(()) }.boxed()
    }
}
