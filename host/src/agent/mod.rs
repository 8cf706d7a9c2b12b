//! `sluice agent`: a device's side of the fleet. It asks the central host for its
//! group's release (`GET /fleet/v1/release`, with the release it runs, its buffer depth
//! and its last refusal in the request), verifies it before anything is written or runs,
//! fetches the files it lists, and applies it atomically: the new config must load and
//! every plugin initialise before the running pipeline is drained and stopped; if the
//! new pipeline then fails to start, the previous release starts again. A refused
//! release is reported on the next poll and the running one goes on.
//!
//! Verification ([`release`]): the manifest's ed25519 signature with the fleet's public
//! key (`--trust`; without one only with `--insecure-unsigned`, which warns), its group,
//! and its version: never lower than the running release's, except that release's
//! signed parent (a halted rollout sends devices back one step). Then every file the
//! manifest lists is fetched within its listed size and checked against its sha256
//! before it is written ([`store`]: content-addressed, fsynced, renamed). Files on disk
//! are hashed again before they are used, and the runtime hashes each plugin and its
//! artifact again before it loads them (`sha256`, `precompiled_sha256`).
//!
//! Plugins run from the artifact the release made for this device's target and engine
//! when it has one; otherwise a build with a compiler compiles the Wasm, and a build
//! without one refuses the release.
//!
//! The release run persists (`state.json`): a restart verifies it again and starts it
//! from disk, without the network, and keeps the downgrade guard.
//!
//! A group's config is one file for many devices: `${SLUICE_DEVICE_ID}` in its strings
//! is this device's id (the uplink's `device_id`, a collector's naming), and
//! `${SLUICE_DEVICE_TOKEN}` its fleet token (what the central host's embedded broker
//! takes as the device's MQTT password); with a client certificate instead,
//! `${SLUICE_DEVICE_CERT}`, `${SLUICE_DEVICE_KEY}` and `${SLUICE_CA_FILE}` are the files
//! the agent was given, for the uplink's `cert_file`, `key_file` and `ca_file`.
//!
//! The agent identifies itself by its token, by its client certificate (mutual TLS with
//! an `https://` central host), or both, and names the device it runs as in every
//! request, so that credentials of another device are refused rather than obeyed.

mod release;
mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::IF_NONE_MATCH;
use tokio_util::sync::CancellationToken;

use self::release::{Current, Decision, Fetcher, Polled};
use self::store::{State, Store};
use crate::config::Config;
use crate::release::{ReleaseError, SignedManifest, TrustedKey};
use crate::supervisor::{ReplaceError, Supervisor};

/// The variable a group's config names this device by.
pub const DEVICE_ID_VAR: &str = "SLUICE_DEVICE_ID";
/// The variable that holds this device's fleet token in a group's config.
pub const DEVICE_TOKEN_VAR: &str = "SLUICE_DEVICE_TOKEN";
/// The variables naming the agent's certificate, key and CA files in a group's config.
pub const DEVICE_CERT_VAR: &str = "SLUICE_DEVICE_CERT";
pub const DEVICE_KEY_VAR: &str = "SLUICE_DEVICE_KEY";
pub const CA_FILE_VAR: &str = "SLUICE_CA_FILE";

/// Which releases the agent takes.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Those signed with one of these keys.
    Key(TrustedKey),
    /// Any, signed or not (`--insecure-unsigned`: development, a live group).
    InsecureUnsigned,
}

pub struct AgentOptions {
    /// The central host's API, `http://central:9598`.
    pub central: String,
    pub device_id: String,
    /// The device's fleet token; not needed with a client certificate naming the device.
    pub token: Option<String>,
    /// The CA that signed the central host's certificate (else the system's CAs).
    pub ca_file: Option<PathBuf>,
    /// The device's client certificate and key (PEM), presented over TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Where releases, their files and the pipeline's data live.
    pub dir: PathBuf,
    /// How often to ask, until the central host says otherwise.
    pub poll: Duration,
    pub trust: Trust,
    /// The device's group: a release for another is refused. Required with a key.
    pub group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("asking {url}: {}", crate::connect::Causes(.source))]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: the answer is longer than the {limit} bytes expected")]
    TooLarge { url: String, limit: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Tls(#[from] crate::connect::certs::TlsError),
    #[error("cannot make the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl AgentError {
    /// Whether asking again may succeed: the network, the disk, or a file that did not
    /// arrive intact; not a release that is refused for what it is.
    fn transient(&self) -> bool {
        match self {
            AgentError::Http { .. }
            | AgentError::Refused { .. }
            | AgentError::TooLarge { .. }
            | AgentError::Io { .. } => true,
            AgentError::Release(error) => matches!(error, ReleaseError::Content { .. }),
            _ => false,
        }
    }
}

/// A release refused: reported on the next polls, and not tried again while it is the
/// one offered, unless it failed for a reason that may pass.
struct Refusal {
    id: String,
    /// The signature it came with: the id covers the manifest's bytes alone, so the same
    /// release with another signature (one stripped or garbled on the way, then intact)
    /// is another offer.
    signature: Option<Vec<u8>>,
    reason: String,
    retry: bool,
}

impl Refusal {
    /// Whether this refusal stands for `id` offered with `signature`: the same bytes,
    /// signed the same, refused for what they are.
    fn stands_for(&self, id: &str, signature: Option<&[u8]>) -> bool {
        !self.retry && self.id == id && self.signature.as_deref() == signature
    }
}

pub struct Agent {
    options: AgentOptions,
    fetcher: Fetcher,
    store: Store,
    supervisor: Supervisor,
    /// The release taken last (the downgrade guard), and whether its pipeline runs.
    current: Option<Current>,
    runs: bool,
    refused: Option<Refusal>,
}

impl Agent {
    /// An agent; fails when its options disagree or its files do not load.
    pub fn new(options: AgentOptions) -> Result<Agent, AgentError> {
        if matches!(options.trust, Trust::Key(_)) && options.group.is_none() {
            return Err(AgentError::Options(
                "a device that verifies releases needs its group (`--group`): a release \
                 signed for another group is refused"
                    .into(),
            ));
        }
        Ok(Agent {
            fetcher: Fetcher::new(&options)?,
            store: Store::open(&options.dir)?,
            options,
            supervisor: Supervisor::default(),
            current: None,
            runs: false,
            refused: None,
        })
    }

    fn trusted(&self) -> Option<&TrustedKey> {
        match &self.options.trust {
            Trust::Key(key) => Some(key),
            Trust::InsecureUnsigned => None,
        }
    }

    /// Start the release run last, then poll and apply until `stop`, then drain the
    /// running pipeline.
    pub async fn run(mut self, stop: CancellationToken) {
        if matches!(self.options.trust, Trust::InsecureUnsigned) {
            tracing::warn!(
                device = %self.options.device_id,
                "fleet: --insecure-unsigned: releases are NOT verified; whoever answers for \
                 the central host decides what this device runs"
            );
        }
        self.resume().await;
        let mut poll = self.options.poll;
        loop {
            match self.poll_once().await {
                Ok(Some(every)) => poll = every,
                Ok(None) => {}
                Err(error) => tracing::warn!(device = %self.options.device_id, "fleet: {error}"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
                ended = self.supervisor.ended(), if self.runs => {
                    self.runs = false;
                    if let Err(error) = ended {
                        let release = self.current.as_ref().map(|current| &current.id);
                        tracing::error!(?release, "the pipeline failed: {error}");
                    }
                }
            }
        }
        if let Err(error) = self.supervisor.drain().await {
            let release = self.current.as_ref().map(|current| &current.id);
            tracing::error!(?release, "the pipeline failed: {error}");
        }
    }

    /// Start the release the agent ran before it stopped, from disk, after verifying it
    /// again; it is also the floor the versions offered next are held to.
    async fn resume(&mut self) {
        let state = match self.store.state() {
            Ok(Some(state)) => state,
            Ok(None) => return,
            Err(error) => {
                tracing::error!("fleet: the stored release is unreadable: {error}");
                return;
            }
        };
        let verified = state
            .signed()
            .map_err(AgentError::Invalid)
            .and_then(|signed| self.verify(&state.id, signed));
        let current = match verified {
            Ok(current) => current,
            Err(error) => {
                tracing::error!(
                    release = state.id,
                    "fleet: the stored release no longer verifies, not running it: {error}"
                );
                return;
            }
        };
        tracing::info!(
            release = current.id,
            version = current.manifest.version,
            "fleet: starting the stored release"
        );
        self.current = Some(current.clone());
        if let Err(error) = self.apply(current).await {
            tracing::error!("fleet: the stored release did not start: {error}");
        }
    }

    /// The manifest `signed`, if the trusted key signed it for this device's group.
    fn verify(&self, id: &str, signed: SignedManifest) -> Result<Current, AgentError> {
        let manifest = signed.verify(self.trusted())?;
        if let Some(group) = &self.options.group
            && manifest.group != *group
        {
            return Err(ReleaseError::OtherGroup {
                expected: group.clone(),
                found: manifest.group,
            }
            .into());
        }
        Ok(Current {
            id: id.to_owned(),
            manifest,
            signed,
        })
    }

    /// One exchange with the central host; the poll interval it asks for.
    async fn poll_once(&mut self) -> Result<Option<Duration>, AgentError> {
        let mut report = vec![("x-sluice-buffered", buffered().to_string())];
        if let Some(current) = self.current.as_ref().filter(|_| self.runs) {
            report.push((IF_NONE_MATCH.as_str(), format!("\"{}\"", current.id)));
            report.push(("x-sluice-applied", current.id.clone()));
        }
        if let Some(refused) = &self.refused {
            // Header values are one line, and kept short.
            let reason: String = refused
                .reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(2000)
                .collect();
            report.push(("x-sluice-error", reason));
        }
        let (polled, every) = self.fetcher.poll(&report).await?;
        let Polled::Offered { id, signed } = polled else {
            self.refused = None;
            return Ok(every);
        };
        if self
            .refused
            .as_ref()
            .is_some_and(|refused| refused.stands_for(&id, signed.signature.as_deref()))
        {
            return Ok(every);
        }
        let version = serde_json::from_slice::<serde_json::Value>(&signed.bytes)
            .ok()
            .and_then(|manifest| manifest.get("version")?.as_u64());
        let signature = signed.signature.clone();
        match self.offered(&id, signed).await {
            Ok(false) => self.refused = None,
            Ok(true) => {
                self.refused = None;
                tracing::info!(device = %self.options.device_id, release = id, version, "fleet: applied a new release");
                if matches!(self.options.trust, Trust::InsecureUnsigned) {
                    tracing::warn!(
                        release = id,
                        "fleet: this release was not verified (--insecure-unsigned)"
                    );
                }
            }
            Err(error) => {
                tracing::error!(device = %self.options.device_id, release = id, version, "fleet: refused a release: {error}");
                let version = version
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default();
                self.refused = Some(Refusal {
                    retry: error.transient(),
                    reason: format!("release {id}{version}: {error}"),
                    id,
                    signature,
                });
            }
        }
        Ok(every)
    }

    /// Verify and apply an offered release; whether it is new.
    async fn offered(&mut self, id: &str, signed: SignedManifest) -> Result<bool, AgentError> {
        let offered = self.verify(id, signed)?;
        match release::decide(self.current.as_ref(), self.runs, id, &offered.manifest) {
            Decision::UpToDate => Ok(false),
            Decision::Refuse(reason) => Err(AgentError::Invalid(reason)),
            Decision::Apply => self.apply(offered).await.map(|()| true),
        }
    }

    /// Fetch, check and switch to `release`, or leave the running one as it is.
    async fn apply(&mut self, release: Current) -> Result<(), AgentError> {
        let manifest = &release.manifest;
        let table = release::prepare(
            Some(&self.fetcher),
            &self.store,
            &release.id,
            manifest,
            &self.options.dir.join("run"),
        )
        .await?;
        let configs = self.options.dir.join("configs");
        std::fs::create_dir_all(&configs).map_err(|source| AgentError::Io {
            what: format!("creating {}", configs.display()),
            source,
        })?;
        let config_path = configs.join(format!("{}.toml", release.id));
        store::write_atomically(&config_path, table.to_string().as_bytes())?;
        let invalid = AgentError::Invalid;
        // Everything that can be checked without stopping the running release.
        let config = self
            .load(&config_path)
            .map_err(|errors| invalid(errors.report()))?;
        let outcome = self.supervisor.replace(config).await;
        match &outcome {
            Ok(()) => {}
            Err(ReplaceError::Refused(_) | ReplaceError::RolledBack(_)) => {}
            Err(ReplaceError::Failed(_) | ReplaceError::NeitherStarts { .. }) => self.runs = false,
        }
        outcome.map_err(|error| invalid(error.to_string()))?;
        self.runs = true;
        self.keep(release)
    }

    /// Make `release` the current one, on disk too; drop the files no longer needed
    /// (those of neither it nor the release before it).
    fn keep(&mut self, release: Current) -> Result<(), AgentError> {
        use base64::Engine as _;
        let base64 = &base64::engine::general_purpose::STANDARD;
        self.store.save_state(&State {
            id: release.id.clone(),
            group: release.manifest.group.clone(),
            version: release.manifest.version,
            parent: release.manifest.parent,
            manifest: base64.encode(&release.signed.bytes),
            signature: release.signed.signature.as_ref().map(|s| base64.encode(s)),
        })?;
        let previous = self.current.replace(release);
        let current = self.current.as_ref().expect("just set");
        let keep: BTreeSet<&str> = [Some(current), previous.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|release| release.manifest.files.values())
            .map(|entry| entry.sha256.as_str())
            .collect();
        self.store.retain(&keep);
        remove_configs_but(&self.options.dir.join("configs"), &current.id);
        Ok(())
    }

    /// A release's config, with `${SLUICE_DEVICE_ID}` this device, `${SLUICE_DEVICE_TOKEN}`
    /// its token and the certificate variables its files (an unset one is an error
    /// naming it, unless the environment sets it).
    fn load(&self, path: &Path) -> Result<Config, crate::config::ConfigErrors> {
        let options = &self.options;
        let file = |path: Option<&PathBuf>| path.map(|path| path.display().to_string());
        Config::load_with(path, |name| {
            let given = match name {
                DEVICE_ID_VAR => Some(options.device_id.clone()),
                DEVICE_TOKEN_VAR => options.token.clone(),
                DEVICE_CERT_VAR => file(options.identity.as_ref().map(|(cert, _)| cert)),
                DEVICE_KEY_VAR => file(options.identity.as_ref().map(|(_, key)| key)),
                CA_FILE_VAR => file(options.ca_file.as_ref()),
                _ => None,
            };
            given.or_else(|| std::env::var(name).ok())
        })
    }
}

/// Remove the configs written for releases other than `id`.
fn remove_configs_but(dir: &Path, id: &str) {
    let keep = format!("{id}.toml");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy() != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Entries the device's uplinks hold, from its own metrics.
fn buffered() -> u64 {
    crate::counters::sum(crate::counters::UPLINK_BUFFERED_ENTRIES)
}

#[cfg(test)]
mod tests {
    use super::Refusal;

    #[test]
    fn a_refusal_stands_for_the_same_bytes_signed_the_same_only() {
        let refusal = |retry| Refusal {
            id: "a".into(),
            signature: None,
            reason: "the release is not signed".into(),
            retry,
        };
        assert!(refusal(false).stands_for("a", None));
        assert!(!refusal(false).stands_for("b", None), "another release");
        assert!(
            !refusal(false).stands_for("a", Some(b"signed")),
            "the same manifest, now signed: verified again"
        );
        assert!(
            !refusal(true).stands_for("a", None),
            "a refusal that may pass is tried again"
        );
    }
}
