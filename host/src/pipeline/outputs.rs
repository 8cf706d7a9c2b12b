//! A stage's outputs: its default output, its named routes and its dead-letter route,
//! each wired to the input channels of the stages that read it.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::ack::Ack;
use super::batch::Batch;
use super::dead_letter_log::StageDeadLetterLog;
use super::flow::Flow;
use super::metrics::StageMetrics;
use super::tap::{self, TapPoint};
use crate::counters::{self, Gauge, QUEUE_DEPTH};
use crate::event::{Event, now_ms};

/// The sending end of a stage's input, with the name of that stage for its gauge.
#[derive(Clone)]
pub struct Inlet {
    pub stage: Arc<str>,
    pub sender: mpsc::Sender<Batch>,
    depth: Gauge,
}

impl Inlet {
    pub fn new(stage: Arc<str>, sender: mpsc::Sender<Batch>) -> Inlet {
        Inlet {
            depth: counters::gauge(QUEUE_DEPTH, &stage),
            stage,
            sender,
        }
    }

    async fn send(&self, batch: Batch) -> Result<(), Closed> {
        self.sender
            .send(batch)
            .await
            .map_err(|_| Closed(self.stage.clone()))?;
        let depth = self.sender.max_capacity() - self.sender.capacity();
        self.depth.set(depth as u64);
        Ok(())
    }
}

/// A downstream stage stopped while this one still had events for it.
#[derive(Debug, thiserror::Error)]
#[error("stage `{0}` stopped taking events")]
pub struct Closed(pub Arc<str>);

pub struct Outputs {
    stage: Arc<str>,
    default: Vec<Inlet>,
    routes: HashMap<String, Vec<Inlet>>,
    dead_letter: Vec<Inlet>,
    metrics: StageMetrics,
    /// Events sent per route, for the admin page's edges.
    flow: Flow,
    /// The newest dead letters, for the admin page's dead-letter browser.
    dead_letter_log: StageDeadLetterLog,
    taps: Taps,
}

/// The stage's tap points, looked up once so that a send pays only their load.
struct Taps {
    default: Arc<TapPoint>,
    routes: HashMap<String, Arc<TapPoint>>,
    dead_letter: Arc<TapPoint>,
}

impl Taps {
    fn of(stage: &str, routes: &HashMap<String, Vec<Inlet>>) -> Taps {
        Taps {
            default: tap::point(stage, None),
            routes: routes
                .keys()
                .map(|route| (route.clone(), tap::point(stage, Some(route))))
                .collect(),
            dead_letter: tap::point(stage, Some("dead_letter")),
        }
    }
}

/// An event that a stage could not handle, with why.
pub struct DeadLetter {
    pub event: Event,
    pub ack: Ack,
    pub reason: String,
}

impl Outputs {
    pub fn new(
        stage: Arc<str>,
        default: Vec<Inlet>,
        routes: HashMap<String, Vec<Inlet>>,
        dead_letter: Vec<Inlet>,
    ) -> Self {
        let metrics = StageMetrics::new(&stage);
        let flow = Flow::new(&stage, routes.keys());
        let dead_letter_log = StageDeadLetterLog::of(&stage);
        let taps = Taps::of(&stage, &routes);
        Outputs {
            taps,
            stage,
            default,
            routes,
            dead_letter,
            metrics,
            flow,
            dead_letter_log,
        }
    }

    pub fn metrics(&self) -> &StageMetrics {
        &self.metrics
    }

    /// Send `batch` to the default output.
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        if self.default.is_empty() {
            // A stage with named routes may leave its default output unread; what a
            // plugin still emits there must not vanish.
            let reason = format!(
                "stage `{}` emitted on its default output, which no stage reads",
                self.stage
            );
            let dead = batch
                .events
                .into_iter()
                .zip(batch.acks)
                .map(|(event, ack)| DeadLetter {
                    event,
                    ack,
                    reason: reason.clone(),
                })
                .collect();
            return self.dead_letter(dead).await;
        }
        self.metrics.events_out.increment(batch.len() as u64);
        self.flow.default.add(batch.len());
        self.taps.default.offer(&batch.events);
        fan_out(&self.default, batch).await
    }

    /// Send to the default output only if every reader has room right now; otherwise
    /// hand the batch back untouched (the HTTP source answers 429 then).
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        let mut permits = Vec::with_capacity(self.default.len());
        for inlet in &self.default {
            match inlet.sender.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(_) => return Err(batch),
            }
        }
        self.metrics.events_out.increment(batch.len() as u64);
        self.flow.default.add(batch.len());
        self.taps.default.offer(&batch.events);
        if let Some(last) = permits.pop() {
            for permit in permits {
                permit.send(Batch {
                    events: batch.events.clone(),
                    acks: batch.acks.clone(),
                });
            }
            last.send(batch);
        }
        Ok(())
    }

    /// Send events grouped by route: `None` is the default output. Events on a route
    /// that no stage reads become dead letters.
    pub async fn send_routed(
        &self,
        routed: Vec<(Option<Arc<str>>, Event, Ack)>,
    ) -> Result<(), Closed> {
        let mut default = Batch::default();
        let mut by_route: HashMap<Arc<str>, Batch> = HashMap::new();
        let mut dead = Vec::new();
        for (route, event, ack) in routed {
            match route {
                None => default.push(event, ack),
                Some(route) if self.routes.contains_key(&*route) => {
                    by_route.entry(route).or_default().push(event, ack)
                }
                Some(route) => dead.push(DeadLetter {
                    event,
                    ack,
                    reason: format!(
                        "stage `{}` emitted on route `{route}`, which no stage reads",
                        self.stage
                    ),
                }),
            }
        }
        if !default.is_empty() {
            self.send(default).await?;
        }
        for (route, batch) in by_route {
            self.metrics.events_out.increment(batch.len() as u64);
            self.flow.route(&route).add(batch.len());
            self.taps.routes[&*route].offer(&batch.events);
            fan_out(&self.routes[&*route], batch).await?;
        }
        self.dead_letter(dead).await
    }

    /// Send events that derive from no input (a collector's, a tick's) under one fresh
    /// token, and wait for its verdict: whether every copy downstream was delivered or
    /// dropped on purpose. A caller whose state made these events commits that state
    /// only then, so that what it emitted and what it remembers stay together.
    pub async fn send_and_settle(
        &self,
        routed: Vec<(Option<Arc<str>>, Event)>,
    ) -> Result<bool, Closed> {
        let (taken, settled) = tokio::sync::oneshot::channel::<()>();
        // Runs once the last copy is settled; dropped unrun (closing `settled`) if any
        // copy failed.
        let ack = Ack::new(move || {
            let _ = taken.send(());
        });
        let routed = routed
            .into_iter()
            .map(|(route, event)| (route, event, ack.clone()))
            .collect();
        ack.handed_on();
        self.send_routed(routed).await?;
        Ok(settled.await.is_ok())
    }

    /// Wrap each event in a dead-letter record and send it to the dead-letter route.
    pub async fn dead_letter(&self, dead: Vec<DeadLetter>) -> Result<(), Closed> {
        if dead.is_empty() {
            return Ok(());
        }
        self.metrics.dead_lettered.increment(dead.len() as u64);
        self.flow.dead_letter.add(dead.len());
        let mut batch = Batch::with_capacity(dead.len());
        for letter in dead {
            tracing::warn!(stage = %self.stage, reason = %letter.reason, payload = %letter.event.payload_preview(120), "dead letter");
            self.dead_letter_log.record(&letter.event, &letter.reason);
            batch.push(
                dead_letter_event(&self.stage, &letter.event, &letter.reason),
                letter.ack,
            );
        }
        self.taps.dead_letter.offer(&batch.events);
        fan_out(&self.dead_letter, batch).await
    }
}

/// The dead-letter record: reason, stage and the original event, as a JSON payload.
/// The original payload is kept as text when it is UTF-8, else in base64.
fn dead_letter_event(stage: &str, event: &Event, reason: &str) -> Event {
    let (payload, encoding) = match std::str::from_utf8(&event.payload) {
        Ok(text) => (json!(text), "utf8"),
        Err(_) => (json!(BASE64.encode(&event.payload)), "base64"),
    };
    let original_headers: serde_json::Map<String, serde_json::Value> = event
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), json!(String::from_utf8_lossy(value))))
        .collect();
    let record = json!({
        "stage": stage,
        "reason": reason,
        "dead_lettered_at_ms": now_ms(),
        "origin": &*event.origin,
        "timestamp_ms": event.timestamp_ms,
        "key": event.key.as_ref().map(|key| String::from_utf8_lossy(key).into_owned()),
        "headers": original_headers,
        "payload": payload,
        "payload_encoding": encoding,
    });
    // The original headers, and the stage and reason, ride in headers too, for sinks that
    // carry headers (Kafka): a dead-letter topic's reader can filter without parsing.
    let mut headers = event.headers.clone();
    headers.push((
        "sluice.dead_letter.stage".to_owned(),
        Bytes::copy_from_slice(stage.as_bytes()),
    ));
    headers.push((
        "sluice.dead_letter.reason".to_owned(),
        Bytes::copy_from_slice(reason.as_bytes()),
    ));
    Event {
        key: event.key.clone(),
        payload: Bytes::from(record.to_string()),
        headers,
        timestamp_ms: event.timestamp_ms,
        origin: Arc::from(format!("{stage}.dead_letter")),
    }
}

/// Send to every inlet: clones for all but the last, which takes the original.
async fn fan_out(inlets: &[Inlet], batch: Batch) -> Result<(), Closed> {
    let Some((last, rest)) = inlets.split_last() else {
        unreachable!("every output that is sent to has a reader: validation and `send` see to it");
    };
    for inlet in rest {
        inlet
            .send(Batch {
                events: batch.events.clone(),
                acks: batch.acks.clone(),
            })
            .await?;
    }
    last.send(batch).await
}
