//! `sluice agent --central URL --device-id ID --token-file FILE`: run what the central
//! host's fleet config says this device runs, and follow its changes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sluice::agent::{Agent, AgentOptions};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The central host's API, e.g. `http://central.example:9598`.
    #[arg(long)]
    central: String,
    #[arg(long)]
    device_id: String,
    /// A file holding this device's token (as in the central config's `[fleet.devices]`).
    #[arg(long)]
    token_file: PathBuf,
    /// Where versions, plugins and the pipeline's data are kept.
    #[arg(long, default_value = "sluice-agent")]
    dir: PathBuf,
    /// Seconds between polls until the central host says otherwise.
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the token file {}", args.token_file.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        args.token_file.display()
    );
    // Absolute, because the configs written under it name its files.
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the agent directory {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let mut signals = super::pipeline::Signals::new()?;
        let stopping = stop.clone();
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("stopping the agent: draining the running pipeline");
            stopping.cancel();
            signals.next().await;
            std::process::exit(130);
        });
        tracing::info!(central = %args.central, device = %args.device_id, "agent starting");
        let agent = Agent::new(AgentOptions {
            central: args.central,
            device_id: args.device_id,
            token,
            dir,
            poll: Duration::from_secs(args.poll_secs.max(1)),
        });
        agent.run(stop).await;
        anyhow::Ok(())
    })
}
