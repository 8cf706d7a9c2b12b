//! The central host's register of its devices: who they are (by client certificate
//! or token), what each was
//! offered and runs, its last heartbeat. The API's fleet routes and the heartbeat
//! listener both write into it; the admin page reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::FleetConfig;
use super::releases::{Releases, ServeError};
use super::rollout::Rollout;
use crate::connect::certs::PeerNames;
use crate::connect::token::{self, BearerToken, Presented};

/// The fleet as the API serves it.
pub struct FleetState {
    pub(super) config: FleetConfig,
    /// What each group is served.
    pub(super) releases: Releases,
    pub(super) status: Mutex<BTreeMap<String, DeviceStatus>>,
    /// The groups' rollouts, and where they are kept.
    pub(super) rollouts: Mutex<BTreeMap<String, Rollout>>,
    pub(super) rollouts_file: PathBuf,
    /// The devices' tokens, hashed once (a revoked device's too, to say so).
    tokens: Vec<(String, BearerToken)>,
}

/// What the central host knows of a device, from its last poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceStatus {
    pub group: String,
    pub last_seen_ms: Option<i64>,
    /// The release the device runs (its id).
    pub applied: Option<String>,
    /// The release it was last offered (its id).
    pub offered: Option<String>,
    pub buffered_entries: Option<u64>,
    /// Why the device refused the offered version, if it did.
    pub error: Option<String>,
    /// The release (id) that `error` is about.
    #[serde(skip)]
    pub refused: Option<String>,
    /// The last heartbeat its uplink sent over MQTT (with `[fleet.heartbeats]`).
    pub heartbeat: Option<Heartbeat>,
}

impl FleetState {
    /// The fleet of `config` (group configs and releases relative to `base`; rollouts
    /// kept under `data_dir`).
    pub fn new(
        config: FleetConfig,
        base: PathBuf,
        data_dir: &Path,
    ) -> Result<Arc<FleetState>, ServeError> {
        let releases = Releases::new(&config, &base)?;
        let rollouts_file = data_dir.join("fleet").join("rollouts.json");
        let rollouts = super::rollout::read_all(&rollouts_file);
        let status = config
            .devices
            .iter()
            .map(|(id, device)| {
                let status = DeviceStatus {
                    group: device.group.clone(),
                    ..DeviceStatus::default()
                };
                (id.clone(), status)
            })
            .collect();
        let tokens = config
            .devices
            .iter()
            .filter_map(|(id, device)| Some((id.clone(), device.token.clone()?)))
            .collect();
        Ok(Arc::new(FleetState {
            tokens,
            config,
            releases,
            status: Mutex::new(status),
            rollouts: Mutex::new(rollouts),
            rollouts_file,
        }))
    }

    /// What the central host knows of every device.
    pub fn devices(&self) -> BTreeMap<String, DeviceStatus> {
        self.status.lock().unwrap().clone()
    }

    /// Keep `heartbeat` as `device`'s last; false for a device the fleet does not know.
    pub fn record_heartbeat(&self, device: &str, heartbeat: Heartbeat) -> bool {
        match self.status.lock().unwrap().get_mut(device) {
            Some(status) => {
                crate::signals::heartbeat(crate::signals::DeviceHeartbeat {
                    device_id: device.to_owned(),
                    group: status.group.clone(),
                    received_ms: heartbeat.received_ms,
                    buffered_entries: heartbeat.buffered_entries,
                    buffered_bytes: heartbeat.buffered_bytes,
                    dropped_entries: heartbeat.dropped,
                });
                status.heartbeat = Some(heartbeat);
                true
            }
            None => false,
        }
    }

    /// The device a request comes from: the one its client certificate names, or the
    /// one whose token it bears (both: they must agree). The agent also says which
    /// device it runs as (`X-Sluice-Device`), so that credentials of another device
    /// are refused rather than served that device's config. A revoked device is refused.
    pub(super) fn identify(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerNames>,
    ) -> Result<String, Refusal> {
        let by_certificate = peer.and_then(|names| names.find(self.config.devices.keys()));
        let by_token = Presented::from_headers(headers).map(|presented| {
            token::find(
                &presented,
                self.tokens.iter().map(|(id, token)| (id, token)),
            )
        });
        let device = match (by_certificate, by_token) {
            (Some(named), Some(Some(bearer))) if named != bearer.as_str() => {
                return Err(Refusal::forbidden(format!(
                    "the client certificate names device `{named}` but the token is device `{bearer}`'s"
                )));
            }
            (_, Some(None)) => return Err(Refusal::unauthorized("this device token is not known")),
            (Some(named), _) => named.to_owned(),
            (None, Some(Some(bearer))) => bearer.clone(),
            (None, None) => {
                return Err(Refusal::unauthorized(
                    "a device token (`Authorization: Bearer`) or a client certificate naming the device is needed",
                ));
            }
        };
        if self.config.devices[&device].revoked {
            return Err(Refusal::forbidden(format!("device `{device}` is revoked")));
        }
        let claimed = headers.get(DEVICE_HEADER).and_then(|v| v.to_str().ok());
        if let Some(claimed) = claimed.filter(|claimed| *claimed != device) {
            return Err(Refusal::forbidden(format!(
                "these credentials are device `{device}`'s, not `{claimed}`'s"
            )));
        }
        Ok(device)
    }
}

/// The header an agent names its device in.
pub const DEVICE_HEADER: &str = "x-sluice-device";

/// Why a request is not a device's: 401 without (known) credentials, 403 with the
/// wrong ones.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

/// What a device's uplink reports, as kept by the central host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// When the central host received it (its own clock).
    #[serde(default)]
    pub received_ms: i64,
    pub config_version: Option<String>,
    pub buffered_entries: u64,
    pub buffered_bytes: u64,
    pub dropped: u64,
    /// Entries the device's buffer lost to corruption on disk (absent from older
    /// devices).
    #[serde(default)]
    pub lost: u64,
    /// Plugin calls that failed on the device (`sluice_errors_total`).
    #[serde(default)]
    pub plugin_errors: u64,
    pub uptime_secs: u64,
}
