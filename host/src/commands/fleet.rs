//! `sluice fleet`: the fleet's releases, made where the signing key is.
//!
//! - `sluice fleet keygen DIR`: the fleet's key pair (`fleet.key`, readable by its
//!   owner only, and `fleet.pub`, which agents are given with `--trust`);
//! - `sluice fleet release GROUP_CONFIG --group G --key fleet.key --releases DIR
//!   --targets T,...`: the group's next release, signed;
//! - `sluice fleet release --rollback-to N ...`: a new release with release N's content;
//! - `sluice fleet status --api URL`: every group's rollout and every device, as the
//!   central host sees them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use sluice::release::SigningKey;
use sluice::release::make::{self, Plan, Source};

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Make the fleet's signing key pair: DIR/fleet.key (keep it off the central host)
    /// and DIR/fleet.pub (give it to agents with `--trust`).
    Keygen { dir: PathBuf },
    /// Make a group's next release: its config, its plugins and their machine code for
    /// each target, listed in a manifest signed with the fleet's key.
    Release {
        /// The group's config (its plugins relative to it); not with `--rollback-to`.
        #[arg(required_unless_present = "rollback_to")]
        config: Option<PathBuf>,
        /// The group, as `[fleet.groups]` names it.
        #[arg(long)]
        group: String,
        /// The fleet's signing key (`sluice fleet keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The releases directory the central host serves (`[fleet] releases`).
        #[arg(long)]
        releases: PathBuf,
        /// Target triples to compile the plugins for (the group's devices').
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        /// Release again the content of this earlier release (an operator's rollback).
        #[arg(long, conflicts_with = "config")]
        rollback_to: Option<u64>,
    },
    /// Show every group's rollout and every device, from a running central host.
    #[cfg(feature = "fleet")]
    Status {
        /// The central host's API.
        #[command(flatten)]
        api: super::api_client::ApiArgs,
    },
}

pub fn run(command: FleetCommand) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "fleet")]
        FleetCommand::Status { api } => super::fleet_status::run(&api),
        FleetCommand::Keygen { dir } => keygen(&dir),
        FleetCommand::Release {
            config,
            group,
            key,
            releases,
            targets,
            rollback_to,
        } => {
            let key = SigningKey::load(&key)?;
            let source = match (&config, rollback_to) {
                (_, Some(version)) => Source::Rollback(version),
                (Some(config), None) => Source::Config(config),
                (None, None) => unreachable!("clap requires one"),
            };
            let made = make::make(&Plan {
                group: &group,
                source,
                targets: &targets,
                key: &key,
                releases: &releases,
            })
            .with_context(|| format!("making a release of group `{group}`"))?;
            let files = made.manifest.files.len();
            let bytes: u64 = made.manifest.files.values().map(|file| file.bytes).sum();
            writeln!(
                std::io::stdout(),
                "release {} of group `{group}` in {}: {files} files, {bytes} bytes, targets {:?}{}",
                made.version,
                made.dir.display(),
                made.manifest.targets,
                made.manifest
                    .rollback_of
                    .map(|to| format!(", the content of release {to}"))
                    .unwrap_or_default()
            )?;
            Ok(())
        }
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    let (private, public) = SigningKey::generate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = dir.join("fleet.key");
    anyhow::ensure!(
        !key.exists(),
        "{} exists: a new key would orphan every release signed with it",
        key.display()
    );
    write_private(&key, &private)?;
    let public_file = dir.join("fleet.pub");
    std::fs::write(&public_file, public)
        .with_context(|| format!("writing {}", public_file.display()))?;
    writeln!(
        std::io::stdout(),
        "signing key: {} (keep it off the central host)\npublic key:  {} (agents: --trust)",
        key.display(),
        public_file.display()
    )?;
    Ok(())
}

/// Write `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
