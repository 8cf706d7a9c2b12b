//! The running alert stage: one task that takes batches and, every `check_interval_ms`,
//! lets time move the rule along.
//!
//! Its tracks live in memory and in the stage's durable state (`state.redb`), one
//! entry per key. Each batch or timer check is one step: the alerts it makes go out
//! under a token of their own, the tracks it changed are committed once every copy of
//! those alerts is settled downstream, and only then are the batch's inputs settled —
//! consumed on purpose, folded into the tracks — as the wasm stage does with a
//! plugin's state. A step whose alerts or state are not stored is undone: the tracks
//! are read back from the store, the inputs fail (their source sends them again) and a
//! check's alerts are made again by the next check. So a host killed between `firing`
//! and `resolved` starts with the alert firing: it sends no second `firing`, and its
//! first check resolves it if it went quiet while the host was down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::board::Published;
use super::rule::{Changes, Rule, Status, Track};
use crate::emit::commit;
use crate::event::{Event, now_ms};
use crate::pipeline::{Ack, Batch, DeadLetter, Outputs, StageError};
use crate::state::{StateStore, Transaction};
use crate::transforms::Transform;

/// Where the tracks are stored in the stage's state: one entry per key.
const TRACKS: &str = "track/";

pub(super) struct AlertStage {
    pub stage: Arc<str>,
    pub rule: Rule,
    pub state: Arc<StateStore>,
    pub check_interval: Duration,
    /// Whether the admin page shows this stage's alerts (the host's pipeline, not a job's).
    pub public: bool,
}

impl Transform for AlertStage {
    fn run(
        self: Box<Self>,
        mut input: mpsc::Receiver<Batch>,
        outputs: Outputs,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let board = Published::new(&self.stage, self.public);
            let mut tracks = self.load().await?;
            self.show(&board, &tracks, tracks.keys());
            // The first check comes at once: what went quiet while the host was down
            // resolves before anything else.
            let mut checks = tokio::time::interval(self.check_interval);
            checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    batch = input.recv() => match batch {
                        Some(batch) => self.batch(batch, &mut tracks, &outputs, &board).await?,
                        None => return Ok(()),
                    },
                    _ = checks.tick() => {
                        let mut changes = Changes::default();
                        self.rule.check(&mut tracks, now_ms(), &mut changes);
                        self.step(changes, &mut tracks, &outputs, &board, "a check").await?;
                    }
                }
            }
        }
        .boxed()
    }
}

impl AlertStage {
    /// Observe a batch's events, then settle their tokens by whether the step was stored.
    async fn batch(
        &self,
        batch: Batch,
        tracks: &mut BTreeMap<String, Track>,
        outputs: &Outputs,
        board: &Published,
    ) -> Result<(), StageError> {
        outputs.metrics().events_in.increment(batch.len() as u64);
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut changes = Changes::default();
        let mut folded = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for (event, ack) in batch.events.into_iter().zip(batch.acks) {
            match self.rule.observe(&event.payload) {
                Ok(observation) => {
                    self.rule.apply(tracks, observation, now, &mut changes);
                    folded.push(ack);
                }
                Err(why) => dead.push(DeadLetter {
                    event,
                    ack,
                    reason: why.to_string(),
                }),
            }
        }
        outputs
            .dead_letter(dead)
            .await
            .map_err(|error| StageError::new(&self.stage, error))?;
        let stored = self.step(changes, tracks, outputs, board, "a batch").await?;
        outputs
            .metrics()
.record_call(started.elapsed());
        if stored {
            folded.into_iter().for_each(Ack::dropped);
        } else {
            folded.into_iter().for_each(Ack::fail);
        }
        Ok(())
    }

    /// Send a step's alerts, then commit the tracks it changed. `Ok(false)`: not
    /// stored, and undone.
    async fn step(
        &self,
        changes: Changes,
        tracks: &mut BTreeMap<String, Track>,
        outputs: &Outputs,
        board: &Published,
        call: &str,
    ) -> Result<bool, StageError> {
        if changes.is_empty() {
            return Ok(true);
        }
        let Changes { alerts, touched } = changes;
        let alerts: Vec<(String, Status, serde_json::Value)> = alerts
            .into_iter()
            .map(|(key, status, track)| {
                let payload = self.rule.payload(&key, status, &track);
                (key, status, payload)
            })
            .collect();
        let now = now_ms();
        let events: Vec<(Option<Arc<str>>, Event)> = alerts
            .iter()
            .map(|(key, _, payload)| {
                let event = Event {
                    key: Some(Bytes::copy_from_slice(key.as_bytes())),
                    timestamp_ms: now,
                    ..Event::new(payload.to_string(), self.stage.clone())
                };
                (None, event)
            })
            .collect();
        let delivered = events.is_empty()
            || outputs
                .send_and_settle(events)
                .await
                .map_err(|error| StageError::new(&self.stage, error))?;
        let mut writes = Transaction::new(self.state.clone(), self.stage.clone());
        for key in &touched {
            let entry = format!("{TRACKS}{key}");
            match tracks.get(key) {
                Some(track) => writes.put(entry, serde_json::to_vec(track).expect("a track is JSON")),
                None => writes.delete(entry),
            }
        }
        // The tracks are bounded by the keys in an episode, not by a quota.
        let stored =
            delivered && commit(&self.stage, move || writes.commit(u64::MAX), call).await?;
        if !stored {
            tracing::warn!(stage = %self.stage, alerts = alerts.len(), "{call}'s alerts or tracks were not stored; it comes again");
            *tracks = self.load().await?;
            return Ok(false);
        }
        self.show(board, tracks, touched.iter());
        let mut board = board.lock();
        for (_, status, payload) in alerts {
            if status == Status::Resolved {
                board.resolved(payload);
            }
        }
        Ok(true)
    }

    /// Show on the board whether each of `keys` fires.
    fn show<'k>(
        &self,
        board: &Published,
        tracks: &BTreeMap<String, Track>,
        keys: impl Iterator<Item = &'k String>,
    ) {
        let mut board = board.lock();
        for key in keys {
            let firing = tracks
                .get(key)
                .filter(|track| track.firing())
                .map(|track| self.rule.payload(key, Status::Firing, track));
            board.set_firing(key, firing);
        }
    }

    /// The committed tracks.
    async fn load(&self) -> Result<BTreeMap<String, Track>, StageError> {
        let reading = Transaction::new(self.state.clone(), self.stage.clone());
        let entries = tokio::task::spawn_blocking(move || {
            reading.scan_prefix(TRACKS, usize::MAX, u64::MAX)
        })
        .await
        .map_err(|error| StageError::new(&self.stage, error))?
        .map_err(|error| StageError::other(&self.stage, error))?;
        let mut tracks = BTreeMap::new();
        for (entry, value) in entries {
            let key = entry[TRACKS.len()..].to_owned();
            match serde_json::from_slice(&value) {
                Ok(track) => {
                    tracks.insert(key, track);
                }
                Err(error) => {
                    tracing::error!(stage = %self.stage, key, "an unreadable alert track is forgotten: {error}");
                }
            }
        }
        Ok(tracks)
    }
}
