//! `[jobs.NAME]`: the keys every job has (when it runs, after what, how it is retried),
//! read here; the rest of the table goes to the job's kind. Then the jobs are checked as
//! a whole: dependencies that exist, no cycle, one schedule per chain of dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::did_you_mean;
use super::loader::{Entry, Loader};
use crate::component::Kind;
use crate::jobs::{Concurrency, JobDef, Schedule};

impl Loader {
    pub(super) fn job(&mut self, (name, value): Entry<'_>) -> Option<JobDef> {
        let (name, name_span) = (name.get_ref().to_string(), name.span());
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            self.error(span, format!("job `{name}` must be a table"));
            return None;
        };
        let mut take = |key: &str| table.remove(key);
        let kind = take("type");
        let schedule = take("schedule");
        let every = take("every");
        let zone = take("time_zone");
        let depends_on = take("depends_on");
        let retries = take("retries");
        let backoff = take("retry_backoff_secs");
        let timeout = take("timeout_secs");
        let concurrency = take("concurrency");
        let catchup = take("catchup");

        let kind = match kind.map(|v| (v.span(), v.into_inner())) {
            Some((at, DeValue::String(kind))) => match Kind::find(crate::jobs::KINDS, &kind) {
                Some(kind) => kind,
                None => {
                    let known = crate::jobs::KINDS.iter().map(|kind| kind.name);
                    let hint = match did_you_mean(&kind, known.clone()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("job types: {}", known.collect::<Vec<_>>().join(", ")),
                    };
                    self.error(at, format!("job `{name}` has unknown type `{kind}`"))
                        .hint = Some(hint);
                    return None;
                }
            },
            Some((at, _)) => {
                self.error(at, "`type` must be a string");
                return None;
            }
            None => {
                self.error(name_span, format!("job `{name}` has no `type`"))
                    .hint = Some(format!(
                    "job types: {}",
                    crate::jobs::KINDS
                        .iter()
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return None;
            }
        };
        let zone: Option<Spanned<String>> = zone.and_then(|v| self.typed(v));
        let schedule = match (schedule, every) {
            (Some(_), Some(every)) => {
                self.error(
                    every.span(),
                    format!("job `{name}` has both `schedule` and `every`"),
                )
                .hint = Some("keep one: a cron pattern, or a period".into());
                None
            }
            (Some(pattern), None) => {
                let pattern: Spanned<String> = self.typed(pattern)?;
                let zone_text = zone.as_ref().map(|z| z.get_ref().as_str());
                match Schedule::cron(pattern.get_ref(), zone_text) {
                    Ok(schedule) => Some(schedule),
                    Err(error @ crate::jobs::ScheduleError::Zone(_)) => {
                        let at = zone.as_ref().map_or(pattern.span(), Spanned::span);
                        self.error(at, format!("job `{name}`: {error}")).hint =
                            Some("an IANA name such as `UTC` or `Europe/Berlin`".into());
                        return None;
                    }
                    Err(error) => {
                        self.error(pattern.span(), format!("job `{name}`: {error}"))
                            .hint = Some("five fields (minute hour day month weekday), or six with seconds first, e.g. `0 2 * * *`".into());
                        return None;
                    }
                }
            }
            (None, Some(every)) => {
                let period: Spanned<String> = self.typed(every)?;
                if let Some(zone) = &zone {
                    self.error(
                        zone.span(),
                        "`time_zone` applies to a cron `schedule`, not to `every`",
                    );
                }
                match Schedule::every(period.get_ref()) {
                    Ok(schedule) => Some(schedule),
                    Err(error) => {
                        self.error(period.span(), format!("job `{name}`: {error}"));
                        return None;
                    }
                }
            }
            (None, None) => None,
        };
        let depends_on: Vec<Spanned<String>> = match depends_on {
            Some(value) => self.typed(value)?,
            None => Vec::new(),
        };
        let secs = |loader: &mut Loader,
                    value: Option<Spanned<DeValue<'_>>>|
         -> Option<Option<Duration>> {
            match value {
                None => Some(None),
                Some(value) => loader
                    .typed::<u64>(value)
                    .map(|s| Some(Duration::from_secs(s))),
            }
        };
        let retries = match retries {
            Some(value) => self.typed::<u32>(value)?,
            None => 0,
        };
        let retry_backoff = secs(self, backoff)?.unwrap_or(Duration::from_secs(10));
        let timeout = secs(self, timeout)?;
        let concurrency = match concurrency {
            Some(value) => self.typed::<Concurrency>(value)?,
            None => Concurrency::default(),
        };
        let catchup = match catchup {
            Some(value) => self.typed::<bool>(value)?,
            None => false,
        };
        let rest = Spanned::new(span.clone(), DeValue::Table(table));
        let config = match (kind.parse)(ValueDeserializer::from(rest)) {
            Ok(config) => Arc::from(config),
            Err(error) => {
                let at = error.span().unwrap_or(span);
                self.error(at, format!("job `{name}`: {}", error.message().trim()));
                return None;
            }
        };
        self.job_dependencies.insert(
            name.clone(),
            depends_on
                .iter()
                .map(|d| (d.get_ref().clone(), d.span()))
                .collect(),
        );
        Some(JobDef {
            name,
            span,
            kind: kind.name,
            schedule,
            depends_on: depends_on.into_iter().map(Spanned::into_inner).collect(),
            retries,
            retry_backoff,
            timeout,
            concurrency,
            catchup,
            config,
        })
    }

    /// The jobs as a whole: each dependency exists, none is a cycle, a job has a schedule
    /// or upstream jobs (not both), and all of a job's upstream share one schedule.
    pub(super) fn check_jobs(&mut self, config: &super::Config) {
        let jobs = &config.jobs;
        let context = crate::jobs::CheckContext {
            base: &self.base,
            models: &config.models,
        };
        let mut problems = Vec::new();
        for job in jobs.values() {
            for problem in job.config.problems(&context) {
                problems.push((job, problem));
            }
        }
        for (job, problem) in problems {
            {
                self.error(
                    job.span.clone(),
                    format!("job `{}`: {}", job.name, problem.message),
                )
                .hint = Some(problem.hint);
            }
        }
        for job in jobs.values() {
            let dependencies = self
                .job_dependencies
                .get(&job.name)
                .cloned()
                .unwrap_or_default();
            for (dependency, at) in &dependencies {
                if dependency == &job.name {
                    self.error(at.clone(), format!("job `{}` depends on itself", job.name));
                } else if !jobs.contains_key(dependency) && !self.broken_jobs.contains(dependency) {
                    let hint = match did_you_mean(dependency, jobs.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!(
                            "the jobs are {}",
                            jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    self.error(
                        at.clone(),
                        format!(
                            "job `{}` depends on `{dependency}`, which is no job",
                            job.name
                        ),
                    )
                    .hint = Some(hint);
                }
            }
            match (&job.schedule, dependencies.is_empty()) {
                (Some(_), false) => {
                    self.error(job.span.clone(), format!("job `{}` has a schedule and `depends_on`", job.name))
                        .hint = Some("a job with `depends_on` runs in its upstream's slots, once they have succeeded: remove its `schedule`".into());
                }
                (None, true) => {
                    self.error(job.span.clone(), format!("job `{}` has no `schedule`, `every` or `depends_on`", job.name))
                        .hint = Some("e.g. `schedule = \"0 2 * * *\"` (02:00 daily), `every = \"1h\"`, or `depends_on = [\"other\"]`".into());
                }
                _ => {}
            }
        }
        if let Some(cycle) = find_cycle(jobs) {
            let first = &jobs[&cycle[0]];
            self.error(
                first.span.clone(),
                format!(
                    "jobs depend on each other in a cycle: {}",
                    cycle.join(" → ")
                ),
            )
            .hint = Some("remove one of these `depends_on` entries".into());
            return;
        }
        for job in jobs.values() {
            let roots: BTreeSet<&str> = roots(jobs, &job.name);
            let described: BTreeSet<String> = roots
                .iter()
                .filter_map(|root| jobs[*root].schedule.as_ref().map(Schedule::describe))
                .collect();
            if described.len() > 1 {
                self.error(job.span.clone(), format!(
                    "job `{}` depends on jobs with different schedules ({}): its slots would never line up",
                    job.name,
                    roots.iter().map(|r| format!("`{r}`: {}", jobs[*r].schedule.as_ref().map(Schedule::describe).unwrap_or_default())).collect::<Vec<_>>().join(", ")
                ))
                .hint = Some("give the upstream jobs one schedule".into());
            }
        }
    }
}

/// The scheduled jobs `name` descends from (itself, if it has a schedule).
pub fn roots<'a>(jobs: &'a BTreeMap<String, JobDef>, name: &str) -> BTreeSet<&'a str> {
    let mut roots = BTreeSet::new();
    let mut todo = vec![name];
    let mut seen = BTreeSet::new();
    while let Some(next) = todo.pop() {
        let Some((key, job)) = jobs.get_key_value(next) else {
            continue;
        };
        if !seen.insert(key.as_str()) {
            continue;
        }
        if job.depends_on.is_empty() {
            roots.insert(key.as_str());
        }
        todo.extend(job.depends_on.iter().map(String::as_str));
    }
    roots
}

/// A cycle of `depends_on`, as job names from a job back to it.
fn find_cycle(jobs: &BTreeMap<String, JobDef>) -> Option<Vec<String>> {
    fn visit(
        jobs: &BTreeMap<String, JobDef>,
        name: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == name) {
            let mut cycle = path[at..].to_vec();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        let job = jobs.get(name)?;
        path.push(name.to_owned());
        for dependency in &job.depends_on {
            if dependency != name
                && let Some(cycle) = visit(jobs, dependency, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(name.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    jobs.keys()
        .find_map(|name| visit(jobs, name, &mut Vec::new(), &mut done))
}
