//! A release as the agent takes it: its manifest fetched and verified (signature, group,
//! version), then only the files it lists fetched, each within its listed size and
//! checked against its sha256 before it is written, and the group's config rewritten
//! to name them in the agent's store.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, ETAG};

use super::store::Store;
use super::{AgentError, AgentOptions};
use crate::fleet::registry::DEVICE_HEADER;
use crate::release::{
    FileEntry, Manifest, SignedManifest, artifact_name, check_file_name, plugin_name, release_id,
};

/// The most a manifest may be (it lists files, it holds none).
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// How long a connection may take to open, and a transfer to stall.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long asking for the release may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest download accepted: a file may take a minute plus one second per this.
const SLOWEST_BYTES_PER_SEC: u64 = 16 << 10;
/// The poll interval the central host may ask for.
const POLL_SECS: std::ops::RangeInclusive<u64> = 1..=86_400;

/// What to do with an offered release.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Apply,
    /// It is the one running.
    UpToDate,
    Refuse(String),
}

/// The release the agent runs: its id, version and parent decide what it takes next.
#[derive(Debug, Clone)]
pub struct Current {
    pub id: String,
    pub manifest: Manifest,
    pub signed: SignedManifest,
}

/// The version rule: never lower than the running release, except exactly its signed
/// parent (a halted rollout sends devices back one step); the running release again is
/// nothing to do (unless its pipeline stopped: it is started again).
pub fn decide(current: Option<&Current>, runs: bool, id: &str, offered: &Manifest) -> Decision {
    let Some(current) = current else {
        return Decision::Apply;
    };
    let running = &current.manifest;
    if id == current.id {
        return if runs {
            Decision::UpToDate
        } else {
            Decision::Apply
        };
    }
    if offered.version >= running.version || Some(offered.version) == running.parent {
        return Decision::Apply;
    }
    Decision::Refuse(format!(
        "version {} is older than the running version {}{}: a device goes back only to its release's parent",
        offered.version,
        running.version,
        match running.parent {
            Some(parent) => format!(" (whose parent is {parent})"),
            None => String::new(),
        }
    ))
}

/// The agent's HTTP side: its requests to the central host, with its identity.
pub struct Fetcher {
    client: reqwest::Client,
    base: String,
    device_id: String,
    token: Option<String>,
}

/// A `GET /fleet/v1/release` answer.
pub enum Polled {
    NotModified,
    Offered { id: String, signed: SignedManifest },
}

impl Fetcher {
    pub fn new(options: &AgentOptions) -> Result<Fetcher, AgentError> {
        crate::tls::use_ring();
        let mut client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT);
        if options.ca_file.is_some() || options.identity.is_some() {
            let tls = crate::connect::client_tls::ClientTls {
                ca_file: options.ca_file.as_deref(),
                identity: options
                    .identity
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
            };
            client = client.tls_backend_preconfigured(tls.config()?);
        }
        Ok(Fetcher {
            client: client.build().map_err(AgentError::Client)?,
            base: format!("{}/fleet/v1/release", options.central.trim_end_matches('/')),
            device_id: options.device_id.clone(),
            token: options.token.clone(),
        })
    }

    /// A request to the central host, with this device's name and credentials.
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.get(url).header(DEVICE_HEADER, &self.device_id);
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// Ask for the group's release, with `report` headers; the poll interval it names.
    pub async fn poll(
        &self,
        report: &[(&str, String)],
    ) -> Result<(Polled, Option<Duration>), AgentError> {
        let mut request = self.get(&self.base).timeout(POLL_TIMEOUT);
        for (name, value) in report {
            request = request.header(*name, value);
        }
        let response = send(request, &self.base).await?;
        let every = header(&response, "x-sluice-poll-secs").and_then(|text| poll_interval(&text));
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok((Polled::NotModified, every));
        }
        let etag = header(&response, ETAG.as_str()).map(|v| v.trim_matches('"').to_owned());
        let signature = header(&response, "x-sluice-signature");
        let bytes = read_limited(response, MANIFEST_LIMIT, &self.base).await?;
        let id = release_id(&bytes);
        if etag.as_deref().is_some_and(|etag| etag != id) {
            tracing::warn!(
                etag,
                id,
                "fleet: the release's ETag is not its manifest's id; going by the manifest"
            );
        }
        use base64::Engine as _;
        // Not base64: a signature that verifies with no key (refused unless
        // `--insecure-unsigned`, which takes the manifest as it is).
        let signature = signature.map(|text| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .unwrap_or_default()
        });
        Ok((
            Polled::Offered {
                id,
                signed: SignedManifest { bytes, signature },
            },
            every,
        ))
    }

    /// The release `id`'s file `name`: at most its listed size, checked against it.
    pub async fn file(
        &self,
        id: &str,
        name: &str,
        manifest: &Manifest,
    ) -> Result<Vec<u8>, AgentError> {
        check_file_name(name)?;
        let entry = listed(manifest, name)?;
        let url = format!("{}/{id}/{name}", self.base);
        let timeout = Duration::from_secs(60 + entry.bytes / SLOWEST_BYTES_PER_SEC);
        let response = send(self.get(&url).timeout(timeout), &url).await?;
        let bytes = read_limited(response, entry.bytes, &url).await?;
        manifest.check(name, &bytes)?;
        Ok(bytes)
    }
}

/// The poll interval an `X-Sluice-Poll-Secs` value asks for, within [`POLL_SECS`]
/// (never 0: no busy loop).
fn poll_interval(text: &str) -> Option<Duration> {
    let secs: u64 = text.trim().parse().ok()?;
    Some(Duration::from_secs(
        secs.clamp(*POLL_SECS.start(), *POLL_SECS.end()),
    ))
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    Some(response.headers().get(name)?.to_str().ok()?.to_owned())
}

/// Send `request`; an answer other than 200 or 304 is an error with its body's start.
async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response, AgentError> {
    let http = |source| AgentError::Http {
        url: url.to_owned(),
        source,
    };
    let response = request.send().await.map_err(http)?;
    match response.status() {
        StatusCode::OK | StatusCode::NOT_MODIFIED => Ok(response),
        status => {
            let body = read_limited(response, 4096, url).await.unwrap_or_default();
            Err(AgentError::Refused {
                url: url.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    }
}

/// The body, refused as soon as it goes past `limit` bytes (never buffered further).
async fn read_limited(
    mut response: reqwest::Response,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>, AgentError> {
    let too_large = || AgentError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(limit.min(1 << 20) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|source| AgentError::Http {
        url: url.to_owned(),
        source,
    })? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn listed<'m>(manifest: &'m Manifest, name: &str) -> Result<&'m FileEntry, AgentError> {
    manifest
        .files
        .get(name)
        .ok_or_else(|| AgentError::Invalid(format!("the manifest does not list `{name}`")))
}

/// The release's file `name` in the store: the stored copy if it is intact (hashed
/// again), else fetched, checked and stored.
async fn ensure(
    fetcher: Option<&Fetcher>,
    store: &Store,
    id: &str,
    manifest: &Manifest,
    name: &str,
) -> Result<(std::path::PathBuf, FileEntry), AgentError> {
    check_file_name(name)?;
    let entry = listed(manifest, name)?.clone();
    if let Some(path) = store.get(&entry)? {
        return Ok((path, entry));
    }
    let Some(fetcher) = fetcher else {
        return Err(AgentError::Invalid(format!("`{name}` is not stored here")));
    };
    let bytes = fetcher.file(id, name, manifest).await?;
    let path = store.put(&entry, &bytes)?;
    tracing::debug!(release = id, file = name, "fleet: fetched a release file");
    Ok((path, entry))
}

/// The release's config as this device runs it: each plugin's Wasm (and the artifact
/// for this target, when the release has one) in the store, pinned by sha256, and the
/// pipeline's data in `data_dir`. Files come from the store, else from `fetcher`.
pub async fn prepare(
    fetcher: Option<&Fetcher>,
    store: &Store,
    id: &str,
    manifest: &Manifest,
    data_dir: &std::path::Path,
) -> Result<toml::Table, AgentError> {
    let invalid = AgentError::Invalid;
    let (path, _) = ensure(fetcher, store, id, manifest, "config.toml").await?;
    let bytes = std::fs::read(&path).map_err(|source| AgentError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    // Read once more: these are the bytes parsed.
    manifest.check("config.toml", &bytes)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("config.toml is not UTF-8".into()))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| invalid(format!("config.toml: {}", error.message())))?;
    let fuel = crate::release::bundle::uses_fuel(&table).map_err(invalid)?;
    let target = crate::runtime::precompiled::TARGET;
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
            let wasm = plugin_name(&sha256);
            let (path, _) = ensure(fetcher, store, id, manifest, &wasm).await?;
            plugin.insert("path".into(), path.display().to_string().into());
            plugin.remove("precompiled");
            plugin.remove("precompiled_sha256");
            let artifact = artifact_name(&sha256, target, fuel);
            if manifest.files.contains_key(&artifact) {
                let (path, entry) = ensure(fetcher, store, id, manifest, &artifact).await?;
                plugin.insert("precompiled".into(), path.display().to_string().into());
                plugin.insert("precompiled_sha256".into(), entry.sha256.into());
            } else if cfg!(feature = "compiler") {
                tracing::info!(
                    plugin = %name,
                    target,
                    "fleet: the release has no artifact for this target; compiling the plugin here"
                );
            } else {
                return Err(invalid(format!(
                    "plugin `{name}` ({sha256}) has no artifact for {target} ({}) in the release \
                     (made for {}), and this sluice cannot compile Wasm (built without the \
                     `compiler` feature)",
                    if fuel { "with fuel" } else { "without fuel" },
                    if manifest.targets.is_empty() {
                        "no target".to_owned()
                    } else {
                        manifest.targets.join(", ")
                    }
                )));
            }
        }
    }
    table.insert("data_dir".into(), data_dir.display().to_string().into());
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn manifest(version: u64, parent: Option<u64>) -> Manifest {
        Manifest {
            group: "gateways".into(),
            version,
            parent,
            rollback_of: None,
            created_ms: 0,
            engine: crate::release::ENGINE.into(),
            targets: Vec::new(),
            files: BTreeMap::new(),
        }
    }

    fn current(version: u64, parent: Option<u64>) -> Current {
        let manifest = manifest(version, parent);
        let bytes = serde_json::to_vec(&manifest).unwrap();
        Current {
            id: release_id(&bytes),
            manifest,
            signed: SignedManifest {
                bytes,
                signature: None,
            },
        }
    }

    #[test]
    fn versions_go_up_or_back_to_the_running_releases_parent_only() {
        let running = current(5, Some(4));
        let at =
            |version, parent| decide(Some(&running), true, "other", &manifest(version, parent));
        assert_eq!(at(6, Some(5)), Decision::Apply);
        assert_eq!(at(9, Some(7)), Decision::Apply, "versions may be skipped");
        assert_eq!(
            at(5, Some(4)),
            Decision::Apply,
            "the same version, another release"
        );
        assert_eq!(
            at(4, Some(3)),
            Decision::Apply,
            "the running release's parent"
        );
        for older in [3, 0, 1] {
            let Decision::Refuse(reason) = at(older, None) else {
                panic!("version {older} is taken");
            };
            assert!(
                reason.contains(&format!(
                    "version {older} is older than the running version 5"
                )),
                "{reason}"
            );
        }
        // The running release itself: nothing to do, unless its pipeline stopped.
        let same = running.manifest.clone();
        assert_eq!(
            decide(Some(&running), true, &running.id, &same),
            Decision::UpToDate
        );
        assert_eq!(
            decide(Some(&running), false, &running.id, &same),
            Decision::Apply
        );
        // Back at the parent, the floor is the parent: its own parent, not the child's.
        let parent = current(4, Some(3));
        assert_eq!(
            decide(Some(&parent), true, "x", &manifest(5, Some(4))),
            Decision::Apply
        );
        assert_eq!(
            decide(Some(&parent), true, "x", &manifest(3, None)),
            Decision::Apply
        );
        assert!(matches!(
            decide(Some(&parent), true, "x", &manifest(2, None)),
            Decision::Refuse(_)
        ));
        // A first release, or live ones (version 0, the id changes with the content).
        assert_eq!(
            decide(None, false, "x", &manifest(0, None)),
            Decision::Apply
        );
        let live = current(0, None);
        assert_eq!(
            decide(Some(&live), true, "y", &manifest(0, None)),
            Decision::Apply
        );
        // No parent: nothing lower is taken.
        let first = current(1, None);
        assert!(matches!(
            decide(Some(&first), true, "x", &manifest(0, None)),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn the_poll_interval_is_at_least_a_second() {
        assert_eq!(poll_interval("0"), Some(Duration::from_secs(1)));
        assert_eq!(poll_interval(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(
            poll_interval("99999999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(poll_interval("-1"), None);
        assert_eq!(poll_interval("soon"), None);
    }

    #[test]
    fn a_release_id_is_its_manifests_sha256_prefix() {
        let id = release_id(b"{}");
        assert_eq!(id.len(), 24);
        assert!(crate::runtime::sha256_hex(b"{}").starts_with(&id));
    }
}
