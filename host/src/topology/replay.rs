//! A pipeline run to the end of its replay sources, for `sluice replay` and for a
//! replay job: every `type = "replay"` source of the config reads the run's range and
//! prefix; once all of them have read their objects, the config's other sources (a live
//! input beside them) are stopped too, so that the pipeline drains and ends. The run
//! did all it should when every object was read and every event it sent was taken by
//! every sink.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sources::replay::{Progress, ReplaySourceConfig};

/// What every replay source of a config reads instead of its own settings.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Only objects under this path (`dt=2026-11-28`).
    pub prefix: Option<String>,
    /// Start of the time range, inclusive.
    pub from: Option<String>,
    /// End of the time range, exclusive.
    pub to: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{} has no `type = \"replay\"` source to replay into", .0.display())]
pub struct NoReplay(pub PathBuf);

/// The replay sources of a config, and how far each has come.
pub struct Replays {
    /// Each replay source's name and progress.
    pub watched: Vec<(String, Arc<Progress>)>,
    /// Sources of other kinds: they would run on once the replays are done.
    others: usize,
}

/// The progress of every replay source together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub objects_total: u64,
    /// Objects read, and objects that could not be.
    pub objects_read: u64,
    pub objects_failed: u64,
    pub bytes_total: u64,
    pub bytes_read: u64,
    pub events_sent: u64,
    /// Events every sink has taken.
    pub events_acknowledged: u64,
}

impl Replays {
    /// Give every replay source of `config` the `overrides`, and watch them.
    pub fn prepare(config: &mut Config, overrides: &Overrides) -> Result<Replays, NoReplay> {
        let mut watched = Vec::new();
        for (name, stage) in &mut config.sources {
            let any: &mut dyn std::any::Any = &mut *stage.config;
            if let Some(replay) = any.downcast_mut::<ReplaySourceConfig>() {
                if let Some(prefix) = &overrides.prefix {
                    replay.prefix.clone_from(prefix);
                }
                if let Some(from) = &overrides.from {
                    replay.from = Some(from.clone());
                }
                if let Some(to) = &overrides.to {
                    replay.to = Some(to.clone());
                }
                watched.push((name.clone(), replay.progress.clone()));
            }
        }
        if watched.is_empty() {
            return Err(NoReplay(config.file.clone()));
        }
        Ok(Replays {
            others: config.sources.len() - watched.len(),
            watched,
        })
    }

    /// Every replay source has read its objects (or was stopped).
    pub fn done(&self) -> bool {
        self.watched
            .iter()
            .all(|(_, progress)| progress.done.load(Ordering::Acquire))
    }

    pub fn totals(&self) -> Totals {
        let sum = |read: fn(&Progress) -> &AtomicU64| {
            self.watched
                .iter()
                .map(|(_, progress)| read(progress).load(Ordering::Relaxed))
                .sum()
        };
        Totals {
            objects_total: sum(|p| &p.objects_total),
            objects_read: sum(|p| &p.objects_read),
            objects_failed: self
                .watched
                .iter()
                .map(|(_, progress)| progress.failed.lock().unwrap().len() as u64)
                .sum(),
            bytes_total: sum(|p| &p.bytes_total),
            bytes_read: sum(|p| &p.bytes_read),
            events_sent: sum(|p| &p.events_sent),
            events_acknowledged: sum(|p| &p.events_acknowledged),
        }
    }

    /// Wait for `ended` (the pipeline's end), giving `report` the totals every `every`
    /// and once more at the end. Once the replays are done, `stop` the pipeline if
    /// other sources would keep it running.
    pub async fn follow<R>(
        &self,
        ended: impl Future<Output = R>,
        stop: &CancellationToken,
        every: Duration,
        mut report: impl FnMut(Totals),
    ) -> R {
        tokio::pin!(ended);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = &mut ended => {
                    report(self.totals());
                    return result;
                }
                _ = ticks.tick() => {
                    report(self.totals());
                    if self.others > 0 && self.done() {
                        stop.cancel();
                    }
                }
            }
        }
    }

    /// Each object that could not be read, and why (`replay: could not read ...`).
    pub fn unread(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, progress) in &self.watched {
            for (object, reason) in progress.failed.lock().unwrap().iter() {
                lines.push(format!("{name}: could not read {object}: {reason}"));
            }
        }
        lines
    }

    /// Why the run, once ended, did not do all it should: objects not read, events
    /// not taken by every sink. None: it did.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, progress) in &self.watched {
            let failed = progress.failed.lock().unwrap().len();
            if failed > 0 {
                problems.push(format!("{name}: {failed} object(s) could not be read"));
            }
            let sent = progress.events_sent.load(Ordering::Relaxed);
            let acknowledged = progress.events_acknowledged.load(Ordering::Relaxed);
            if acknowledged < sent {
                problems.push(format!(
                    "{name}: {} event(s) were not taken by every sink (see the log)",
                    sent - acknowledged
                ));
            }
        }
        problems
    }
}
