//! `sluice fleet status`: the rollouts and devices of a running central host
//! (`GET /fleet/v1/rollouts` and `/fleet/v1/devices`, with the admin token), as tables.

use std::io::Write;

use super::api_client::{ApiArgs, ApiClient};

pub fn run(api: &ApiArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(api)?;
    let get = |path: &str| client.get(path);
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
