//! In-memory components for topology tests: a source fed by the test, a sink that
//! records what it takes (and can be held shut), a transform that routes by payload.
//! They are built like any kind, through the config traits, but never registered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::component::{BuildContext, BuildError, Declaration};
use crate::event::Event;
use crate::pipeline::{Ack, Batch, DeadLetter, Outputs, SinkError, StageError};
use crate::sinks::{Sink, SinkConfig};
use crate::sources::{Source, SourceConfig};
use crate::transforms::{Transform, TransformConfig};

/// Counters a test reads while the pipeline runs.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Events whose send to the pipeline began.
    pub sending: AtomicUsize,
    /// Events the pipeline took (the send returned).
    pub sent: AtomicUsize,
    /// Events acknowledged end to end.
    pub acked: AtomicUsize,
    /// Whether the source ran at all.
    pub ran: AtomicUsize,
}

/// A source that forwards what the test pushes into its feed, one batch per push.
#[derive(Debug)]
pub struct MemorySourceConfig {
    feed: Mutex<Option<mpsc::UnboundedReceiver<Vec<Event>>>>,
    pub counters: Arc<SourceCounters>,
}

impl MemorySourceConfig {
    pub fn new() -> (MemorySourceConfig, mpsc::UnboundedSender<Vec<Event>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let config = MemorySourceConfig {
            feed: Mutex::new(Some(receiver)),
            counters: Arc::default(),
        };
        (config, sender)
    }
}

impl SourceConfig for MemorySourceConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        let feed = self.feed.lock().unwrap().take().expect("built once");
        Ok(Box::new(MemorySource {
            feed,
            counters: self.counters.clone(),
        }))
    }
}

struct MemorySource {
    feed: mpsc::UnboundedReceiver<Vec<Event>>,
    counters: Arc<SourceCounters>,
}

impl Source for MemorySource {
    fn run(
        mut self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            self.counters.ran.fetch_add(1, Ordering::SeqCst);
            loop {
                let events = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    events = self.feed.recv() => match events {
                        Some(events) => events,
                        None => return Ok(()),
                    },
                };
                let mut batch = Batch::with_capacity(events.len());
                for event in events {
                    let counters = self.counters.clone();
                    batch.push(
                        event,
                        Ack::new(move || {
                            counters.acked.fetch_add(1, Ordering::SeqCst);
                        }),
                    );
                }
                let count = batch.len();
                self.counters.sending.fetch_add(count, Ordering::SeqCst);
                outputs
                    .send(batch)
                    .await
                    .map_err(|error| StageError::new("memory", error))?;
                self.counters.sent.fetch_add(count, Ordering::SeqCst);
            }
        }
        .boxed()
    }
}

/// What a memory sink has taken, and a gate that holds its writes while shut.
#[derive(Debug)]
pub struct SinkRecord {
    pub events: Mutex<Vec<Event>>,
    open: watch::Sender<bool>,
    /// A payload prefix that makes the sink panic while it holds the batch.
    panic_on: Mutex<Option<&'static str>>,
}

impl SinkRecord {
    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn payloads(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .map(|event| String::from_utf8_lossy(&event.payload).into_owned())
            .collect()
    }

    /// Panic, holding the batch, on a payload that starts with `prefix`.
    pub fn panic_on(&self, prefix: &'static str) {
        *self.panic_on.lock().unwrap() = Some(prefix);
    }

    /// Hold (false) or let through (true) the sink's writes.
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

#[derive(Debug)]
pub struct MemorySinkConfig {
    pub record: Arc<SinkRecord>,
}

impl MemorySinkConfig {
    pub fn new() -> MemorySinkConfig {
        MemorySinkConfig {
            record: Arc::new(SinkRecord {
                events: Mutex::default(),
                open: watch::channel(true).0,
                panic_on: Mutex::default(),
            }),
        }
    }
}

impl SinkConfig for MemorySinkConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(MemorySink {
            record: self.record.clone(),
        }))
    }
}

struct MemorySink {
    record: Arc<SinkRecord>,
}

impl Sink for MemorySink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            let mut open = self.record.open.subscribe();
            // Take the whole batch in: a field the block did not name would be dropped
            // (and acknowledged) before the gate opens.
            let Batch { events, acks } = batch;
            let _ = open.wait_for(|open| *open).await;
            let panic_on = *self.record.panic_on.lock().unwrap();
            if let Some(prefix) = panic_on
                && events
                    .iter()
                    .any(|event| event.payload.starts_with(prefix.as_bytes()))
            {
                panic!("the memory sink panics on `{prefix}` on purpose");
            }
            self.record.events.lock().unwrap().extend(events);
            acks.into_iter().for_each(Ack::delivered);
            Ok(())
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

/// A transform that sends payloads starting with `alert` to route `alerts`, rejects
/// payloads starting with `bad` as dead letters, and passes the rest on.
#[derive(Debug)]
pub struct SortConfig {
    routes: Vec<toml::Spanned<String>>,
}

impl SortConfig {
    pub fn new() -> SortConfig {
        SortConfig {
            routes: vec![toml::Spanned::new(0..0, "alerts".to_owned())],
        }
    }
}

impl TransformConfig for SortConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            routes: &self.routes,
            ..Declaration::default()
        }
    }

    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError> {
        Ok(Box::new(Sort))
    }
}

struct Sort;

impl Transform for Sort {
    fn run(
        self: Box<Self>,
        mut input: mpsc::Receiver<Batch>,
        outputs: Outputs,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let alerts: Arc<str> = Arc::from("alerts");
            while let Some(Batch { events, acks }) = input.recv().await {
                let mut routed = Vec::new();
                let mut dead = Vec::new();
                for (event, ack) in events.into_iter().zip(acks) {
                    if event.payload.starts_with(b"bad") {
                        let reason = "starts with bad".to_owned();
                        dead.push(DeadLetter { event, ack, reason });
                    } else if event.payload.starts_with(b"alert") {
                        routed.push((Some(alerts.clone()), event, ack));
                    } else {
                        routed.push((None, event, ack));
                    }
                }
                outputs
                    .send_routed(routed)
                    .await
                    .map_err(|error| StageError::new("sort", error))?;
                outputs
                    .dead_letter(dead)
                    .await
                    .map_err(|error| StageError::new("sort", error))?;
            }
            Ok(())
        }
        .boxed()
    }
}
