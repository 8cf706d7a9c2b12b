//! `sluice tap URL STAGE[.ROUTE]`: a running host's events leaving a stage, live, as
//! JSON lines on stdout (`GET /v1/tap/{stage}`, with the admin token). The host samples
//! at most `--rate` events a second and drops the rest from the sample, never from the
//! pipeline; how many it sent and dropped is reported on stderr at the end. `--save FILE`
//! also writes the records (and only them) to FILE, which a pipeline test reads as
//! `recording = "FILE"`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sluice::pipeline::tap::DEFAULT_RATE;

use super::api_client::{ApiArgs, ApiClient};

#[derive(clap::Args)]
pub struct TapArgs {
    /// The host's API, e.g. `https://central.example:9443`.
    pub url: String,
    /// The stage whose output to sample; `STAGE.ROUTE` for one of its routes,
    /// `STAGE.dead_letter` for its dead letters. A sink's output is what it stored.
    pub target: String,
    /// Stop after this many events (exit 0 once they are in).
    #[arg(long)]
    pub limit: Option<u64>,
    /// The most events a second to take (the host allows up to 1000).
    #[arg(long, default_value_t = DEFAULT_RATE)]
    pub rate: u32,
    /// Also write the events' records to this file (replaced), one per line.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// A file holding the API's admin token (`[api] admin_token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The CA that signed the host's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&ApiArgs {
        api: args.url.clone(),
        token_file: args.token_file.clone(),
        ca_file: args.ca_file.clone(),
    })?;
    let (stage, route) = match args.target.split_once('.') {
        Some((stage, route)) => (stage, Some(route)),
        None => (args.target.as_str(), None),
    };
    let mut query = vec![("rate", args.rate.to_string())];
    query.extend(route.map(|route| ("route", route.to_owned())));
    query.extend(args.limit.map(|limit| ("limit", limit.to_string())));
    let mut saved = args
        .save
        .as_ref()
        .map(|path| {
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        })
        .transpose()?;
    let mut out = std::io::stdout().lock();
    let (mut received, mut status) = (0u64, Status::default());
    client.stream_lines(&["v1", "tap", stage], &query, |line| {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("the host sent `{line}`"))?;
        if let Some(tap) = value.get("tap") {
            status = serde_json::from_value(tap.clone())
                .with_context(|| format!("the host sent the status `{line}`"))?;
            return Ok(true);
        }
        let record = format!("{line}\n");
        out.write_all(record.as_bytes())?;
        if let (Some(file), Some(path)) = (&mut saved, &args.save) {
            file.write_all(record.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        received += 1;
        Ok(true)
    })?;
    out.flush()?;
    eprintln!(
        "tap {}: {} sent, {} dropped",
        args.target, status.sent, status.dropped
    );
    match args.limit {
        Some(limit) if received >= limit => Ok(()),
        _ => anyhow::bail!(
            "the host ended the tap after {received} events{} (stopping?)",
            args.limit
                .map(|limit| format!(" of {limit}"))
                .unwrap_or_default()
        ),
    }
}

/// A status line's counts: what the host sent, and what it let go.
#[derive(Default, serde::Deserialize)]
struct Status {
    sent: u64,
    dropped: u64,
}
