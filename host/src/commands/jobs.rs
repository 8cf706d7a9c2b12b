//! `sluice jobs`: a running host's jobs (`/v1/jobs`, with the admin token): list them,
//! show a job's runs and a run's log, run a slot now, retry one (with what depends on
//! it), pause and resume.

use std::io::Write;

use sluice::jobs::Slot;

use super::api_client::{ApiArgs, ApiClient};

#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// Every job: its schedule, next firing and last run.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A job's runs, newest first; with `--slot`, that run's log.
    Runs {
        job: String,
        /// A run's slot end (RFC 3339 or milliseconds): print its log.
        #[arg(long)]
        slot: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run a job for a slot now (the latest firing by default).
    Run {
        job: String,
        /// The slot's end: RFC 3339 (`2026-12-07T00:00:00Z`) or milliseconds.
        #[arg(long)]
        slot: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run a job's slot again (its newest failed one by default).
    Retry {
        job: String,
        #[arg(long)]
        slot: Option<String>,
        /// Also run again, after it, every job depending on it for that slot.
        #[arg(long)]
        downstream: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Start no more runs of a job until resumed.
    Pause {
        job: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    Resume {
        job: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub fn run(command: JobsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        JobsCommand::List { api } => {
            let jobs = ApiClient::new(&api)?.get("/v1/jobs?limit=1")?;
            writeln!(
                out,
                "{:<18} {:<8} {:<32} {:<21} {:<16} last run",
                "job", "type", "schedule", "next", "state"
            )?;
            for job in jobs.as_array().into_iter().flatten() {
                let last = &job["runs"][0];
                let last = match last["status"].as_str() {
                    Some(status) => format!("{status} ({})", slot(&last["slot_end_ms"])),
                    None => "-".into(),
                };
                writeln!(
                    out,
                    "{:<18} {:<8} {:<32} {:<21} {:<16} {last}",
                    text(&job["name"]),
                    text(&job["type"]),
                    text(&job["schedule"]),
                    slot(&job["next_run_ms"]),
                    if job["paused"].as_bool() == Some(true) {
                        "paused"
                    } else {
                        "scheduled"
                    },
                )?;
            }
        }
        JobsCommand::Runs {
            job,
            slot: Some(at),
            api,
            ..
        } => {
            let run = ApiClient::new(&api)?.get(&format!("/v1/jobs/{job}/runs/{at}"))?;
            print_run(&mut out, &run)?;
            write!(out, "\n{}", text(&run["log"]))?;
        }
        JobsCommand::Runs {
            job,
            slot: None,
            limit,
            api,
        } => {
            let runs = ApiClient::new(&api)?.get(&format!("/v1/jobs/{job}/runs?limit={limit}"))?;
            for run in runs.as_array().into_iter().flatten() {
                print_run(&mut out, run)?;
            }
        }
        JobsCommand::Run { job, slot, api } => {
            let query = slot.map(|s| format!("?slot={s}")).unwrap_or_default();
            let run = ApiClient::new(&api)?.post(&format!("/v1/jobs/{job}/run{query}"))?;
            writeln!(
                out,
                "job `{job}`: slot {} will run",
                self::slot(&run["slot_end_ms"])
            )?;
        }
        JobsCommand::Retry {
            job,
            slot,
            downstream,
            api,
        } => {
            let mut query = format!("?downstream={downstream}");
            if let Some(slot) = slot {
                query.push_str(&format!("&slot={slot}"));
            }
            let run = ApiClient::new(&api)?.post(&format!("/v1/jobs/{job}/retry{query}"))?;
            writeln!(
                out,
                "job `{job}`: slot {} will run again{}",
                self::slot(&run["slot_end_ms"]),
                if downstream {
                    ", then what depends on it"
                } else {
                    ""
                }
            )?;
        }
        JobsCommand::Pause { job, api } => {
            ApiClient::new(&api)?.post(&format!("/v1/jobs/{job}/pause"))?;
            writeln!(out, "job `{job}` paused")?;
        }
        JobsCommand::Resume { job, api } => {
            ApiClient::new(&api)?.post(&format!("/v1/jobs/{job}/resume"))?;
            writeln!(out, "job `{job}` resumed")?;
        }
    }
    Ok(())
}

fn print_run(out: &mut impl Write, run: &serde_json::Value) -> std::io::Result<()> {
    let took = match (run["started_ms"].as_i64(), run["ended_ms"].as_i64()) {
        (Some(start), Some(end)) => format!("{:.1} s", (end - start) as f64 / 1000.0),
        _ => "-".into(),
    };
    writeln!(
        out,
        "{}  {:<16} attempts {:<2} {:>8}  {} objects, {} rows  {}",
        slot(&run["slot_end_ms"]),
        text(&run["status"]),
        run["attempts"].as_u64().unwrap_or(0),
        took,
        run["produced"]["objects"].as_u64().unwrap_or(0),
        run["produced"]["rows"].as_u64().unwrap_or(0),
        text(&run["reason"]),
    )
}

fn text(value: &serde_json::Value) -> &str {
    value.as_str().unwrap_or("")
}

fn slot(value: &serde_json::Value) -> String {
    value.as_i64().map_or("-".into(), Slot::format)
}
