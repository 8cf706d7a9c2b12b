//! `type = "host_events"` source: the host watching itself. Every `interval_secs` it
//! emits one event per condition that holds — a device offline, an uplink dropping or
//! buffering deep, a stage erring or dead-lettering faster than its threshold — and one
//! event per job run that failed for good, as it fails. They are ordinary events: the
//! same transforms (an `alert` rule) and sinks take them as any other.
//!
//! What it watches comes from [`crate::signals`] (devices' heartbeats and failed runs,
//! published by the fleet and the workflow) and [`crate::counters`] (stages). Its
//! events are made, not received, so there is nothing to acknowledge: a restart of the
//! host begins again from nothing, and the conditions that still hold are reported at
//! its first intervals.

mod checks;

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use self::checks::{Check, StageTotals, Thresholds, Watch};
use crate::component::{BuildContext, BuildError, Declaration, Problem};
use crate::event::{Event, now_ms};
use crate::pipeline::{Ack, Batch, Outputs, StageError};
use crate::signals;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEventsSourceConfig {
    /// How often the conditions are evaluated.
    #[serde(
        rename = "interval_secs",
        default = "default_interval",
        with = "serde_with::As::<serde_with::DurationSeconds<u64>>"
    )]
    pub interval: Duration,
    /// The conditions looked for (by the `check` their events carry); all by default.
    #[serde(default = "Check::all")]
    pub checks: Vec<Check>,
    /// A device heard from before but not for this long is offline.
    #[serde(
        rename = "device_offline_secs",
        default = "default_offline",
        with = "serde_with::As::<serde_with::DurationSeconds<u64>>"
    )]
    pub device_offline: Duration,
    /// Entries in a device's uplink buffer above which it is reported.
    #[serde(default = "default_uplink_depth")]
    pub uplink_depth: u64,
    /// Failed batches per second of one stage, over an interval, above which it is
    /// reported (0: any).
    #[serde(default)]
    pub stage_error_rate: f64,
    /// Dead letters per second of one stage, likewise (0: any).
    #[serde(default)]
    pub stage_dead_letter_rate: f64,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_offline() -> Duration {
    Duration::from_secs(60)
}
fn default_uplink_depth() -> u64 {
    10_000
}

impl super::SourceConfig for HostEventsSourceConfig {
    /// Settings that cannot be evaluated refuse the config (`validate` says where).
    fn declare(&self) -> Declaration<'_> {
        let mut problems = Vec::new();
        if self.interval.is_zero() || self.device_offline.is_zero() {
            problems.push(Problem {
                message: "`interval_secs` and `device_offline_secs` must be at least 1".into(),
                hint: "both are whole seconds".into(),
            });
        }
        for (key, rate) in [
            ("stage_error_rate", self.stage_error_rate),
            ("stage_dead_letter_rate", self.stage_dead_letter_rate),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                problems.push(Problem {
                    message: format!("`{key}` is {rate}"),
                    hint: "a number of events per second, 0 or more (0: any)".into(),
                });
            }
        }
        Declaration {
            problems,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Source>, BuildError> {
        Ok(Box::new(HostEventsSource {
            stage: context.stage.to_owned(),
            interval: self.interval,
            checks: self.checks.clone(),
            thresholds: Thresholds {
                device_offline: self.device_offline,
                uplink_depth: self.uplink_depth,
                stage_error_rate: self.stage_error_rate,
                stage_dead_letter_rate: self.stage_dead_letter_rate,
            },
        }))
    }
}

pub struct HostEventsSource {
    stage: String,
    interval: Duration,
    checks: Vec<Check>,
    thresholds: Thresholds,
}

impl super::Source for HostEventsSource {
    fn run(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let stage = self.stage;
            let lost = metrics::counter!("sluice_host_events_lost_total", "stage" => stage.clone());
            let mut failures = signals::job_failures();
            let mut watch = Watch::new(&self.checks, self.thresholds, StageTotals::now());
            // The failures' sender is never dropped; still, a closed channel must not spin.
            let mut listening = watch.checks(Check::JobFailed);
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut previous = Instant::now();
            loop {
                let events = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = ticks.tick() => {
                        let now = Instant::now();
                        let devices = signals::device_heartbeats();
                        let elapsed = now - previous;
                        previous = now;
                        watch.evaluate(now_ms(), elapsed, &devices, StageTotals::now())
                    }
                    failure = failures.recv(), if listening => match failure {
                        Ok(failure) => vec![checks::job_failed(&failure)],
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(stage, missed, "failed job runs were published faster than this source sent them on; the oldest are not reported");
                            lost.increment(missed);
                            Vec::new()
                        }
                        Err(RecvError::Closed) => {
                            listening = false;
                            Vec::new()
                        }
                    },
                };
                send(&stage, &outputs, events).await?;
            }
        }
        .boxed()
    }
}

/// Send `events` on, each with nothing to acknowledge: they can be made again.
async fn send(stage: &str, outputs: &Outputs, events: Vec<Value>) -> Result<(), StageError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::with_capacity(events.len());
    for event in events {
        batch.push(Event::new(event.to_string(), stage), Ack::none());
    }
    outputs.metrics().events_in.increment(batch.len() as u64);
    outputs
        .send(batch)
        .await
        .map_err(|error| StageError::new(stage, error))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use serde_json::json;

    use super::*;
    use crate::pipeline::Inlet;
    use crate::sources::{Source, SourceConfig};

    fn config(text: &str) -> HostEventsSourceConfig {
        toml::from_str(text).unwrap()
    }

    /// The source's payloads as they arrive downstream, within `wait`.
    async fn next_payloads(events: &mut mpsc::Receiver<Batch>, wait: Duration) -> Vec<Value> {
        let batch = tokio::time::timeout(wait, events.recv())
            .await
            .expect("the source sends within the interval")
            .unwrap();
        let payloads = batch
            .events
            .iter()
            .map(|event| serde_json::from_slice(&event.payload).unwrap())
            .collect();
        batch.delivered();
        payloads
    }

    #[test]
    fn its_config_names_checks_and_refuses_what_cannot_be_evaluated() {
        let all = config("");
        assert_eq!(
            (all.interval, all.device_offline, all.checks.len()),
            (Duration::from_secs(10), Duration::from_secs(60), 5)
        );
        let some = config(r#"checks = ["device_offline", "job_failed"]"#);
        assert_eq!(some.checks, [Check::DeviceOffline, Check::JobFailed]);
        let unknown = toml::from_str::<HostEventsSourceConfig>(r#"checks = ["disk_full"]"#);
        assert!(unknown.unwrap_err().to_string().contains("device_offline"));
        assert!(toml::from_str::<HostEventsSourceConfig>("interval_ms = 5").is_err());
        let refused = |text| config(text).declare().problems.len();
        assert_eq!(refused("interval_secs = 0"), 1);
        assert_eq!(refused("stage_error_rate = -1.0\nstage_dead_letter_rate = nan"), 2);
        assert_eq!(refused("stage_error_rate = 0.5"), 0);
    }

    #[tokio::test]
    async fn facts_published_into_the_bus_come_out_as_events() {
        let (sender, mut received) = mpsc::channel(16);
        let outputs = Outputs::new(
            Arc::from("watch"),
            vec![Inlet::new(Arc::from("out"), sender)],
            HashMap::new(),
            Vec::new(),
        );
        let source = Box::new(HostEventsSource {
            stage: "watch".into(),
            interval: Duration::from_millis(50),
            checks: Check::all(),
            thresholds: Thresholds {
                device_offline: Duration::from_secs(3),
                uplink_depth: 10,
                stage_error_rate: 0.0,
                stage_dead_letter_rate: 0.0,
            },
        });
        signals::heartbeat(signals::DeviceHeartbeat {
            device_id: "bus-gw".into(),
            group: "gateways".into(),
            received_ms: now_ms() - 10_000,
            buffered_entries: 0,
            buffered_bytes: 0,
            dropped_entries: 0,
        });
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(source.run(outputs, shutdown.clone()));
        let wait = Duration::from_secs(5);
        let offline = next_payloads(&mut received, wait).await;
        let gw = offline.iter().find(|event| event["device_id"] == "bus-gw");
        assert_eq!(gw.unwrap()["check"], "device_offline", "{offline:?}");

        // A stage that errs from now on, and a job that fails.
        crate::counters::counter(crate::counters::ERRORS, "bus-score").increment(2);
        signals::job_failed(signals::JobFailure {
            job: "train".into(),
            slot: "2024-05-01T00:00:00Z".into(),
            reason: "exit status 1".into(),
            attempts: 2,
        });
        let mut seen = Vec::new();
        while !(seen.iter().any(|e: &Value| e["check"] == "job_failed")
            && seen.iter().any(|e| e["stage"] == "bus-score"))
        {
            seen.extend(next_payloads(&mut received, wait).await);
        }
        let failed = seen.iter().find(|e| e["check"] == "job_failed").unwrap();
        assert_eq!((&failed["job"], &failed["attempts"]), (&json!("train"), &json!(2)));
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
}
