//! `sluice agent`: a device's side of the fleet. It asks the central host for its
//! group's config (with the version it runs, its buffer depth and its last refusal in
//! the request), fetches the plugins the config names by sha256 and checks them, and
//! applies a new version atomically: the new config must load and every plugin
//! initialise before the running pipeline is drained and stopped; if the new pipeline
//! then fails to start, the previous version starts again. A refused version is
//! reported and not retried until the central host offers another.
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
//!
//! Plugins come as Wasm (checked against their sha256) and as machine code the central
//! host compiled for this device's target (`runtime::precompiled`): a build without a
//! compiler runs only those; one with a compiler uses them to start faster and falls
//! back to compiling if the central host cannot precompile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connect::client_tls::ClientTls;
use crate::fleet::registry::DEVICE_HEADER;
use crate::runtime::Limits;
use crate::supervisor::{ReplaceError, Supervisor};

/// The variable a group's config names this device by.
pub const DEVICE_ID_VAR: &str = "SLUICE_DEVICE_ID";
/// The variable that holds this device's fleet token in a group's config.
pub const DEVICE_TOKEN_VAR: &str = "SLUICE_DEVICE_TOKEN";
/// The variables naming the agent's certificate, key and CA files in a group's config.
pub const DEVICE_CERT_VAR: &str = "SLUICE_DEVICE_CERT";
pub const DEVICE_KEY_VAR: &str = "SLUICE_DEVICE_KEY";
pub const CA_FILE_VAR: &str = "SLUICE_CA_FILE";

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
    /// Where versions, plugins and the pipeline's data live.
    pub dir: PathBuf,
    /// How often to ask, until the central host says otherwise.
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("asking {url}: {}", Causes(.source))]
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
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("version {version}: {reason}")]
    Invalid { version: String, reason: String },
    #[error(transparent)]
    Tls(#[from] crate::connect::certs::TlsError),
    #[error("cannot make the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// An error with its causes, `a: b: c`: reqwest's own message leaves out why a request
/// failed (a refused TLS handshake, an expired certificate, a closed connection).
struct Causes<'a>(&'a reqwest::Error);

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

pub struct Agent {
    options: AgentOptions,
    client: reqwest::Client,
    supervisor: Supervisor,
    /// The version the supervisor runs.
    running: Option<String>,
    /// The last version refused, and why: reported, and not tried again.
    refused: Option<(String, String)>,
}

impl Agent {
    /// An agent; fails when its certificate files do not load.
    pub fn new(options: AgentOptions) -> Result<Agent, AgentError> {
        crate::tls::use_ring();
        let mut client = reqwest::Client::builder();
        if options.ca_file.is_some() || options.identity.is_some() {
            let tls = ClientTls {
                ca_file: options.ca_file.as_deref(),
                identity: options
                    .identity
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
            };
            client = client.tls_backend_preconfigured(tls.config()?);
        }
        Ok(Agent {
            options,
            client: client.build().map_err(AgentError::Client)?,
            supervisor: Supervisor::default(),
            running: None,
            refused: None,
        })
    }

    /// A request to the central host, with this device's name and credentials.
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .get(url)
            .header(DEVICE_HEADER, &self.options.device_id);
        match &self.options.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// Poll and apply until `stop`, then drain the running pipeline.
    pub async fn run(mut self, stop: CancellationToken) {
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
                ended = self.supervisor.ended() => {
                    let version = self.running.take();
                    if let Err(error) = ended {
                        tracing::error!(?version, "the pipeline failed: {error}");
                    }
                }
            }
        }
        if let Err(error) = self.supervisor.drain().await {
            tracing::error!(version = ?self.running, "the pipeline failed: {error}");
        }
    }

    /// One exchange with the central host; the poll interval it asks for.
    async fn poll_once(&mut self) -> Result<Option<Duration>, AgentError> {
        let url = format!(
            "{}/fleet/v1/config",
            self.options.central.trim_end_matches('/')
        );
        let mut request = self
            .get(&url)
            .header("x-sluice-buffered", buffered().to_string());
        if let Some(running) = &self.running {
            request = request
                .header(IF_NONE_MATCH, format!("\"{running}\""))
                .header("x-sluice-applied", running);
        }
        if let Some((_, reason)) = &self.refused {
            // Header values are one line.
            request = request.header("x-sluice-error", reason.replace(['\r', '\n'], " "));
        }
        let response = request.send().await.map_err(|source| AgentError::Http {
            url: url.clone(),
            source,
        })?;
        let every = response
            .headers()
            .get("x-sluice-poll-secs")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(every),
            StatusCode::OK => {}
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(AgentError::Refused { url, status, body });
            }
        }
        let version = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default();
        let text = response.text().await.map_err(|source| AgentError::Http {
            url: url.clone(),
            source,
        })?;
        if self
            .refused
            .as_ref()
            .is_some_and(|(refused, _)| *refused == version)
        {
            return Ok(every);
        }
        match self.apply(&version, &text).await {
            Ok(()) => {
                self.refused = None;
                tracing::info!(device = %self.options.device_id, version, "fleet: applied a new version");
            }
            Err(error) => {
                tracing::error!(device = %self.options.device_id, version, "fleet: refused a new version: {error}");
                self.refused = Some((version, error.to_string()));
            }
        }
        Ok(every)
    }

    /// Fetch, check and switch to `version`, or leave the running one as it is.
    async fn apply(&mut self, version: &str, text: &str) -> Result<(), AgentError> {
        let invalid = |reason: String| AgentError::Invalid {
            version: version.to_owned(),
            reason,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|error: toml::de::Error| invalid(error.message().to_owned()))?;
        let plugins_dir = self.options.dir.join("plugins");
        create_dir(&plugins_dir)?;
        let fuel = uses_fuel(&table).map_err(invalid)?;
        if let Some(plugins) = table.get_mut("plugins").and_then(toml::Value::as_table_mut) {
            for (name, plugin) in plugins.iter_mut() {
                let plugin = plugin
                    .as_table_mut()
                    .ok_or_else(|| invalid(format!("`plugins.{name}` is not a table")))?;
                let sha256 = plugin
                    .get("sha256")
                    .and_then(toml::Value::as_str)
                    .ok_or_else(|| invalid(format!("`plugins.{name}` has no sha256")))?
                    .to_owned();
                let file = plugins_dir.join(format!("{sha256}.wasm"));
                if !file.exists() {
                    self.fetch_plugin(&sha256, &file).await?;
                }
                plugin.insert("path".into(), file.display().to_string().into());
                if let Some(artifact) = self.precompiled(&sha256, fuel, &plugins_dir).await? {
                    plugin.insert("precompiled".into(), artifact.display().to_string().into());
                }
            }
        }
        table.insert(
            "data_dir".into(),
            self.options.dir.join("run").display().to_string().into(),
        );
        let config_path = self
            .options
            .dir
            .join("versions")
            .join(version)
            .join("sluice.toml");
        create_dir(config_path.parent().expect("a versioned path has a parent"))?;
        std::fs::write(&config_path, table.to_string()).map_err(|source| AgentError::Io {
            what: format!("writing {}", config_path.display()),
            source,
        })?;
        // Everything that can be checked without stopping the running version.
        let config = self
            .load(&config_path)
            .map_err(|errors| invalid(errors.report()))?;
        let outcome = self.supervisor.replace(config).await;
        match &outcome {
            Ok(()) => self.running = Some(version.to_owned()),
            Err(ReplaceError::Refused(_) | ReplaceError::RolledBack(_)) => {}
            Err(ReplaceError::Failed(_) | ReplaceError::NeitherStarts { .. }) => {
                self.running = None
            }
        }
        outcome.map_err(|error| invalid(error.to_string()))
    }

    /// A version's config, with `${SLUICE_DEVICE_ID}` this device, `${SLUICE_DEVICE_TOKEN}`
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

    /// The plugin `sha256` compiled for this device, fetched once. `None` when the
    /// central host cannot compile it and this build can (it compiles the Wasm itself).
    async fn precompiled(
        &self,
        sha256: &str,
        fuel: bool,
        dir: &Path,
    ) -> Result<Option<PathBuf>, AgentError> {
        let target = crate::runtime::precompiled::TARGET;
        let file = dir.join(format!(
            "{sha256}.{target}{}.cwasm",
            if fuel { ".fuel" } else { "" }
        ));
        if file.exists() {
            return Ok(Some(file));
        }
        let path = format!("plugins/{sha256}/precompiled?target={target}&fuel={fuel}");
        match self.download(&path, &file, |_| Ok(())).await {
            Ok(()) => Ok(Some(file)),
            Err(error) if cfg!(feature = "compiler") => {
                tracing::warn!(
                    plugin = sha256,
                    "fleet: no precompiled plugin ({error}); compiling it here"
                );
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn fetch_plugin(&self, sha256: &str, file: &Path) -> Result<(), AgentError> {
        self.download(&format!("plugins/{sha256}"), file, |bytes| {
            let actual = crate::runtime::sha256_hex(bytes);
            if actual == sha256 {
                Ok(())
            } else {
                Err(AgentError::Invalid {
                    version: String::new(),
                    reason: format!("plugin {sha256} arrived with sha256 {actual}"),
                })
            }
        })
        .await
    }

    /// GET `/fleet/v1/{path}` into `file`, if `check` accepts the body.
    async fn download(
        &self,
        path: &str,
        file: &Path,
        check: impl FnOnce(&[u8]) -> Result<(), AgentError>,
    ) -> Result<(), AgentError> {
        let url = format!(
            "{}/fleet/v1/{path}",
            self.options.central.trim_end_matches('/')
        );
        let http = |source| AgentError::Http {
            url: url.clone(),
            source,
        };
        let response = self.get(&url).send().await.map_err(http)?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(AgentError::Refused { url, status, body });
        }
        let bytes = response.bytes().await.map_err(http)?;
        check(&bytes)?;
        // Written under a temporary name, so that a torn download is never taken.
        let partial = file.with_extension("partial");
        std::fs::write(&partial, &bytes)
            .and_then(|()| std::fs::rename(&partial, file))
            .map_err(|source| AgentError::Io {
                what: format!("writing {}", file.display()),
                source,
            })
    }
}

fn create_dir(dir: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })
}

/// Whether a plugin sets a fuel limit, read as the config reads its `limits` (the
/// config cannot load yet: its plugin paths are what this fetches): the runtime then
/// meters fuel, which the machine code must be compiled for.
fn uses_fuel(config: &toml::Table) -> Result<bool, String> {
    let plugins = config.get("plugins").and_then(toml::Value::as_table);
    for (name, plugin) in plugins.into_iter().flatten() {
        if let Some(limits) = plugin.get("limits") {
            let limits: Limits = limits
                .clone()
                .try_into()
                .map_err(|error: toml::de::Error| {
                    format!("`plugins.{name}.limits`: {}", error.message())
                })?;
            if limits.fuel.is_some() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Entries the device's uplinks hold, from its own metrics.
fn buffered() -> u64 {
    crate::counters::sum(crate::counters::UPLINK_BUFFERED_ENTRIES)
}
