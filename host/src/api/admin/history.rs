//! The figures of the admin page that change: rates from the deltas of the counters
//! between two readings, and each stage's last five minutes for its sparkline, sampled
//! every [`SAMPLE_EVERY`] by a task that lives as long as its [`Sampler`], so that the
//! history is there when the page is opened, not only while it polls.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::counters::{
    self, CALL_NANOSECONDS, CALLS, DEAD_LETTERED, ERRORS, EVENTS_IN, EVENTS_OUT, Series,
};
use crate::event::now_ms;
use crate::pipeline::flow;

/// How often the history takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept per stage: five minutes.
pub const KEPT_SAMPLES: usize = 150;
/// The shortest window live rates are computed over, one sample period: events often
/// come in bursts a second apart (a device's window closing, an uplink's batch), and a
/// shorter window shows a steady flow as zero between them.
const MIN_LIVE_WINDOW: Duration = SAMPLE_EVERY;

/// A stage's counters at one instant.
#[derive(Clone, Copy, Default)]
struct StageCounts {
    events_in: u64,
    events_out: u64,
    errors: u64,
    dead_lettered: u64,
    calls: u64,
    call_nanoseconds: u64,
}

/// An output of a stage: (stage, route), `None` the default output.
pub type Output = (String, Option<String>);

/// Every stage's counters and every output's events at one instant.
#[derive(Clone)]
pub struct Reading {
    at: Instant,
    stages: BTreeMap<String, StageCounts>,
    outputs: BTreeMap<Output, u64>,
}

impl Reading {
    pub fn now() -> Reading {
        let mut stages: BTreeMap<String, StageCounts> = BTreeMap::new();
        let mut read = |series: Series, field: fn(&mut StageCounts) -> &mut u64| {
            for (stage, value) in counters::totals(series) {
                *field(stages.entry(stage).or_default()) = value;
            }
        };
        read(EVENTS_IN, |counts| &mut counts.events_in);
        read(EVENTS_OUT, |counts| &mut counts.events_out);
        read(ERRORS, |counts| &mut counts.errors);
        read(DEAD_LETTERED, |counts| &mut counts.dead_lettered);
        read(CALLS, |counts| &mut counts.calls);
        read(CALL_NANOSECONDS, |counts| &mut counts.call_nanoseconds);
        Reading {
            at: Instant::now(),
            stages,
            outputs: flow::totals(),
        }
    }
}

/// What a stage did between two readings.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct StageRates {
    /// Events per second.
    pub rate_in: f64,
    pub rate_out: f64,
    pub errors_per_s: f64,
    pub dead_letters_per_s: f64,
    /// The mean batch call time in milliseconds; `None` without a call.
    pub call_ms: Option<f64>,
}

/// What every stage and every output did between two readings.
#[derive(Clone, Default, Debug)]
pub struct Rates {
    pub stages: BTreeMap<String, StageRates>,
    /// Events per second on each output.
    pub outputs: BTreeMap<Output, f64>,
}

impl Rates {
    pub fn between(earlier: &Reading, later: &Reading) -> Rates {
        let seconds = later.at.duration_since(earlier.at).as_secs_f64();
        let per_second = |now: u64, was: u64| {
            if seconds > 0.0 {
                now.saturating_sub(was) as f64 / seconds
            } else {
                0.0
            }
        };
        let stages = later
            .stages
            .iter()
            .map(|(stage, now)| {
                let was = earlier.stages.get(stage).copied().unwrap_or_default();
                let calls = now.calls.saturating_sub(was.calls);
                let call_ms = (calls > 0).then(|| {
                    now.call_nanoseconds.saturating_sub(was.call_nanoseconds) as f64
                        / calls as f64
                        / 1e6
                });
                let rates = StageRates {
                    rate_in: per_second(now.events_in, was.events_in),
                    rate_out: per_second(now.events_out, was.events_out),
                    errors_per_s: per_second(now.errors, was.errors),
                    dead_letters_per_s: per_second(now.dead_lettered, was.dead_lettered),
                    call_ms,
                };
                (stage.clone(), rates)
            })
            .collect();
        let outputs = later
            .outputs
            .iter()
            .map(|(output, now)| {
                let was = earlier.outputs.get(output).copied().unwrap_or(0);
                (output.clone(), per_second(*now, was))
            })
            .collect();
        Rates { stages, outputs }
    }
}

/// One sample of a stage's sparkline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// When it was taken, in milliseconds since the epoch.
    pub at_ms: i64,
    /// Events passed on per second.
    pub rate_out: f64,
    /// Errors and dead letters per second.
    pub failures: f64,
}

/// The newest [`KEPT_SAMPLES`] points of each stage, oldest first.
pub struct History {
    stages: BTreeMap<String, VecDeque<Point>>,
}

impl History {
    pub fn new<'s>(stages: impl IntoIterator<Item = &'s String>) -> History {
        History {
            stages: stages
                .into_iter()
                .map(|stage| (stage.clone(), VecDeque::with_capacity(KEPT_SAMPLES)))
                .collect(),
        }
    }

    /// Add a sample to every stage's history, forgetting the oldest past the capacity.
    pub fn push(&mut self, at_ms: i64, rates: &Rates) {
        // Three decimals are plenty for a line a few dozen pixels high.
        let rounded = |value: f64| (value * 1000.0).round() / 1000.0;
        for (stage, points) in &mut self.stages {
            let rates = rates.stages.get(stage).copied().unwrap_or_default();
            if points.len() == KEPT_SAMPLES {
                points.pop_front();
            }
            points.push_back(Point {
                at_ms,
                rate_out: rounded(rates.rate_out),
                failures: rounded(rates.errors_per_s + rates.dead_letters_per_s),
            });
        }
    }

    pub fn of(&self, stage: &str) -> Vec<Point> {
        self.stages
            .get(stage)
            .map(|points| points.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The last two readings of the sampling task and the history they made.
struct Samples {
    previous: Option<Reading>,
    latest: Reading,
    history: History,
}

/// Live rates and the history of a pipeline's stages.
pub struct Sampler {
    samples: Mutex<Samples>,
}

impl Sampler {
    /// A sampler for `stages`, with its task sampling every [`SAMPLE_EVERY`] until the
    /// sampler is dropped (the task holds it weakly). Needs a Tokio runtime.
    pub fn start<'s>(stages: impl IntoIterator<Item = &'s String>) -> Arc<Sampler> {
        Sampler::start_sampling_every(stages, SAMPLE_EVERY)
    }

    fn start_sampling_every<'s>(
        stages: impl IntoIterator<Item = &'s String>,
        period: Duration,
    ) -> Arc<Sampler> {
        let sampler = Arc::new(Sampler {
            samples: Mutex::new(Samples {
                previous: None,
                latest: Reading::now(),
                history: History::new(stages),
            }),
        });
        let weak = Arc::downgrade(&sampler);
        tokio::spawn(sample_until_dropped(weak, period));
        sampler
    }

    fn sample(&self) {
        let reading = Reading::now();
        let mut samples = self.samples.lock().unwrap();
        let rates = Rates::between(&samples.latest, &reading);
        samples.history.push(now_ms(), &rates);
        samples.previous = Some(std::mem::replace(&mut samples.latest, reading));
    }

    /// Rates over the last two to four seconds, up to now: from the
    /// task's latest reading, or from the one before when the latest is too recent.
    pub fn live(&self) -> Rates {
        let now = Reading::now();
        let samples = self.samples.lock().unwrap();
        let since = match &samples.previous {
            Some(previous) if now.at.duration_since(samples.latest.at) < MIN_LIVE_WINDOW => {
                previous
            }
            _ => &samples.latest,
        };
        Rates::between(since, &now)
    }

    pub fn history(&self, stage: &str) -> Vec<Point> {
        self.samples.lock().unwrap().history.of(stage)
    }
}

async fn sample_until_dropped(sampler: Weak<Sampler>, period: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(sampler) = sampler.upgrade() else {
            return;
        };
        sampler.sample();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, calls: u64, call_nanoseconds: u64, events_out: u64) -> Reading {
        let counts = StageCounts {
            events_out,
            calls,
            call_nanoseconds,
            ..StageCounts::default()
        };
        Reading {
            at,
            stages: BTreeMap::from([("shape".to_owned(), counts)]),
            outputs: BTreeMap::from([(("shape".to_owned(), Some("hot".to_owned())), events_out)]),
        }
    }

    #[test]
    fn rates_are_deltas_per_second_and_the_call_time_a_mean_over_the_calls_made() {
        let start = Instant::now();
        let first = reading(start, 10, 50_000_000, 100);
        let second = reading(start + Duration::from_secs(2), 14, 70_000_000, 160);
        let rates = Rates::between(&first, &second);
        let shape = rates.stages["shape"];
        assert_eq!(shape.rate_out, 30.0);
        assert_eq!(shape.call_ms, Some(5.0), "20 ms over 4 calls");
        assert_eq!(
            rates.outputs[&("shape".to_owned(), Some("hot".to_owned()))],
            30.0
        );
        let idle = reading(start + Duration::from_secs(4), 14, 70_000_000, 160);
        assert_eq!(Rates::between(&second, &idle).stages["shape"].call_ms, None);
    }

    #[test]
    fn the_history_keeps_the_newest_150_samples_oldest_first() {
        let stages = ["shape".to_owned()];
        let mut history = History::new(&stages);
        for sample in 0..=KEPT_SAMPLES as i64 {
            let mut rates = Rates::default();
            rates.stages.insert(
                "shape".to_owned(),
                StageRates {
                    rate_out: sample as f64,
                    errors_per_s: 1.0,
                    dead_letters_per_s: 0.5,
                    ..StageRates::default()
                },
            );
            history.push(sample * 2000, &rates);
        }
        let points = history.of("shape");
        assert_eq!(points.len(), KEPT_SAMPLES);
        assert_eq!(points[0].rate_out, 1.0, "the first sample was dropped");
        assert_eq!(points[0].at_ms, 2000);
        assert_eq!(points[KEPT_SAMPLES - 1].rate_out, KEPT_SAMPLES as f64);
        assert_eq!(points[0].failures, 1.5, "errors and dead letters");
        assert!(history.of("no-such-stage").is_empty());
    }

    #[tokio::test]
    async fn the_sampling_task_fills_the_history_and_ends_with_its_sampler() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let period = Duration::from_millis(20);
        let stages = ["history-test-stage".to_owned()];
        let sampler = Sampler::start_sampling_every(&stages, period);
        assert_eq!(tasks(), 1);
        while sampler.history("history-test-stage").len() < 3 {
            tokio::time::sleep(period).await;
        }
        drop(sampler);
        tokio::time::sleep(period * 3).await;
        assert_eq!(tasks(), 0, "the sampling task ended");
    }
}
