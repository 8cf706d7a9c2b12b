//! Pipelines run for jobs ([`PipelineRunner`]), in the host's process: a replay job's
//! config is loaded, its replay sources given the slot's range, and the pipeline built
//! as a job's ([`Role::Job`]): beside the host's own, writing into the host's serving
//! tables, without an API or broker of its own. Its progress goes to the run's log.

use std::path::Path;
#[cfg(feature = "object-store")]
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::jobs::{JobError, PipelineRunner, Produced, RunLog};
#[cfg(feature = "object-store")]
use crate::topology::replay::{Overrides, Replays};

/// How often a running replay writes a progress line into the run's log.
#[cfg(feature = "object-store")]
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Runs job pipelines in this process. Stateless: one serves every job.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

impl PipelineRunner for InProcess {
    fn replay(
        &self,
        config: &Path,
        from: String,
        to: String,
        prefix: Option<String>,
        log: RunLog,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Produced, JobError>> {
        #[cfg(feature = "object-store")]
        {
            let overrides = Overrides {
                prefix,
                from: Some(from),
                to: Some(to),
            };
            replay(config.to_owned(), overrides, log, cancel).boxed()
        }
        #[cfg(not(feature = "object-store"))]
        {
            let _ = (config, from, to, prefix, log, cancel);
            async {
                Err(JobError::new(
                    "replay jobs need sluice built with the `object-store` feature",
                ))
            }
            .boxed()
        }
    }
}

#[cfg(feature = "object-store")]
async fn replay(
    config: std::path::PathBuf,
    overrides: Overrides,
    log: RunLog,
    cancel: CancellationToken,
) -> Result<Produced, JobError> {
    // Loading plugins compiles them: off the async workers, which run the host's stream.
    let (pipeline, replays) = tokio::task::spawn_blocking(move || start(&config, &overrides))
        .await
        .map_err(|error| JobError::new(format!("starting the pipeline: {error}")))?
        .inspect_err(|error| error.0.lines().for_each(|line| log.line(line)))?;
    let stop = pipeline.stopper();
    // Dropped (the run timed out, the host stops): the pipeline still drains, on its own.
    let _drain_when_dropped = stop.clone().drop_guard();
    let mut running = tokio::spawn(pipeline.wait());
    let ended = async {
        tokio::select! {
            result = &mut running => return result,
            () = cancel.cancelled() => {}
        }
        log.line("stopping: draining what was read");
        stop.cancel();
        running.await
    };
    let result = replays
        .follow(ended, &stop, PROGRESS_EVERY, |totals| {
            log.line(format!(
                "objects {}/{} read ({} failed), {} MB of {}; events {} sent, {} acknowledged",
                totals.objects_read,
                totals.objects_total,
                totals.objects_failed,
                totals.bytes_read / 1_000_000,
                totals.bytes_total / 1_000_000,
                totals.events_sent,
                totals.events_acknowledged,
            ));
        })
        .await;
    replays.unread().into_iter().for_each(|line| log.line(line));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(JobError::new(format!("the pipeline failed: {error}"))),
        Err(panic) => return Err(JobError::new(format!("the pipeline panicked: {panic}"))),
    }
    if cancel.is_cancelled() {
        return Err(JobError::new("stopped before the replay's end"));
    }
    let problems = replays.problems();
    if !problems.is_empty() {
        return Err(JobError::new(problems.join("; ")));
    }
    let totals = replays.totals();
    Ok(Produced {
        objects: totals.objects_read,
        rows: totals.events_acknowledged,
    })
}

/// Load `path`, give its replays `overrides` and start it as a job's pipeline.
#[cfg(feature = "object-store")]
fn start(
    path: &Path,
    overrides: &Overrides,
) -> Result<(crate::topology::Pipeline, Replays), JobError> {
    let mut config = crate::config::Config::load(path)
        .map_err(|errors| JobError::new(errors.lines().join("\n")))?;
    let replays = Replays::prepare(&mut config, overrides).map_err(JobError::new)?;
    let pipeline = crate::topology::Pipeline::start_as(&config, crate::component::Role::Job)
        .map_err(|error| {
            JobError::new(format!(
                "{}: the pipeline did not start: {error}",
                path.display()
            ))
        })?;
    Ok((pipeline, replays))
}

#[cfg(all(test, feature = "object-store"))]
mod tests;
