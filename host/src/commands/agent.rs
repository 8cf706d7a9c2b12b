//! `sluice agent --central URL --device-id ID --token-file FILE --trust FLEET.pub --group
//! NAME` (or `--cert-file FILE --key-file FILE` for mutual TLS): run the release the
//! central host offers this device's group, verified with the fleet's public key, and
//! follow its changes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sluice::agent::{Agent, AgentOptions, Trust};
use sluice::release::TrustedKey;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The central host's API, e.g. `http://central.example:9598`.
    #[arg(long)]
    central: String,
    #[arg(long)]
    device_id: String,
    /// A file holding this device's token (as in the central config's `[fleet.devices]`).
    /// Not needed with a client certificate naming the device.
    #[arg(long, required_unless_present = "cert_file")]
    token_file: Option<PathBuf>,
    /// The CA that signed the central host's certificate (PEM; else the system's CAs).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// This device's client certificate (PEM), presented to an `https://` central host;
    /// its subject or a subject alternative name is the device id.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// The fleet's public key (`sluice fleet keygen`'s PEM file; several keys in it
    /// while a key is rotated): only releases it signed are run.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_unsigned")]
    trust: Option<PathBuf>,
    /// Run releases without verifying them (development, a live group): whoever answers
    /// for the central host decides what this device runs.
    #[arg(long)]
    insecure_unsigned: bool,
    /// This device's group: a release for another group is refused. Required with
    /// `--trust`.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Where releases, their files and the pipeline's data are kept.
    #[arg(long, default_value = "sluice-agent")]
    dir: PathBuf,
    /// Seconds between polls until the central host says otherwise.
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let trust = match (&args.trust, args.insecure_unsigned) {
        (Some(path), _) => {
            anyhow::ensure!(
                args.group.is_some(),
                "`--trust` needs `--group NAME`: the group this device is in (a release \
                 signed for another group is refused)"
            );
            Trust::Key(TrustedKey::load(path).context("loading the fleet's public key")?)
        }
        (None, true) => Trust::InsecureUnsigned,
        (None, false) => anyhow::bail!(
            "give the fleet's public key with `--trust FILE` (and `--group NAME`), or run \
             unverified releases with `--insecure-unsigned` (development only)"
        ),
    };
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    // Absolute, because the configs the agent writes name them.
    let absolute = |path: PathBuf| {
        std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))
    };
    let ca_file = args.ca_file.map(absolute).transpose()?;
    let identity = match (args.cert_file, args.key_file) {
        (Some(cert), Some(key)) => Some((absolute(cert)?, absolute(key)?)),
        _ => None,
    };
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
        tracing::info!(central = %args.central, device = %args.device_id, group = ?args.group, "agent starting");
        let agent = Agent::new(AgentOptions {
            central: args.central,
            device_id: args.device_id,
            token,
            ca_file,
            identity,
            dir,
            poll: Duration::from_secs(args.poll_secs.max(1)),
            trust,
            group: args.group,
        })?;
        agent.run(stop).await;
        anyhow::Ok(())
    })
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}
