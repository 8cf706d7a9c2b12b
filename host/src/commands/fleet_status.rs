//! `sluice fleet status`: the rollouts and devices of a running central host
//! (`GET /fleet/v1/rollouts` and `/fleet/v1/devices`, with the admin token), as tables.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sluice::connect::client_tls::ClientTls;

pub fn run(central: &str, token_file: Option<&Path>, ca_file: Option<&Path>) -> anyhow::Result<()> {
    sluice::tls::use_ring();
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if ca_file.is_some() {
        let tls = ClientTls {
            ca_file,
            identity: None,
        };
        client = client.tls_backend_preconfigured(tls.config()?);
    }
    let client = client.build()?;
    let token = token_file
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))
                .map(|text| text.trim().to_owned())
        })
        .transpose()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let get = |path: &str| {
        let url = format!("{}{path}", central.trim_end_matches('/'));
        let mut request = client.get(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        runtime.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
            serde_json::from_str::<serde_json::Value>(&body)
                .with_context(|| format!("{url}: not JSON"))
        })
    };
    let rollouts = get("/fleet/v1/rollouts")?;
    let devices = get("/fleet/v1/devices")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:>6} {:>6} {:>8}  {:<10} reason",
        "group", "from", "to", "wave", "state"
    )?;
    for (group, rollout) in rollouts.as_object().into_iter().flatten() {
        let number = |key: &str| {
            rollout[key]
                .as_u64()
                .map_or("-".to_owned(), |n| n.to_string())
        };
        let waves = rollout["waves"].as_array().map_or(0, Vec::len);
        let wave = rollout["wave"].as_u64().unwrap_or(0) + 1;
        writeln!(
            out,
            "{group:<16} {:>6} {:>6} {:>8}  {:<10} {}",
            number("from"),
            number("to"),
            format!("{wave}/{waves}"),
            rollout["state"].as_str().unwrap_or("?"),
            rollout["reason"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:<12} {:<26} {:<26} error",
        "device", "group", "applied", "offered"
    )?;
    for (device, status) in devices.as_object().into_iter().flatten() {
        let text = |key: &str| status[key].as_str().unwrap_or("-").to_owned();
        writeln!(
            out,
            "{device:<16} {:<12} {:<26} {:<26} {}",
            text("group"),
            text("applied"),
            text("offered"),
            status["error"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
