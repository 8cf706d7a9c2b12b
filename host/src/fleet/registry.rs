//! The central host's register of its devices: who they are (by token), what each was
//! offered and runs, its last heartbeat. The API's fleet routes and the heartbeat
//! listener both write into it; the admin page reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::FleetConfig;
use crate::connect::token::{self, BearerToken, Presented};

/// The fleet as the API serves it.
pub struct FleetState {
    pub(super) config: FleetConfig,
    /// The central config's directory: group configs are relative to it.
    pub(super) base: PathBuf,
    pub(super) status: Mutex<BTreeMap<String, DeviceStatus>>,
    /// The devices' tokens, hashed once.
    tokens: Vec<(String, BearerToken)>,
    /// Plugins compiled for devices, by (sha256, target, fuel); a cell is shared by
    /// the requests that arrive while it compiles, so each is compiled once.
    #[cfg(feature = "cross-compile")]
    pub(super) precompiled:
        Mutex<BTreeMap<(String, String, bool), Arc<tokio::sync::OnceCell<bytes::Bytes>>>>,
}

/// What the central host knows of a device, from its last poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceStatus {
    pub group: String,
    pub last_seen_ms: Option<i64>,
    /// The version the device runs.
    pub applied: Option<String>,
    /// The version it was last offered.
    pub offered: Option<String>,
    pub buffered_entries: Option<u64>,
    /// Why the device refused the offered version, if it did.
    pub error: Option<String>,
    /// The last heartbeat its uplink sent over MQTT (with `[fleet.heartbeats]`).
    pub heartbeat: Option<Heartbeat>,
}

impl FleetState {
    pub fn new(config: FleetConfig, base: PathBuf) -> Arc<FleetState> {
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
        // A revoked device's token opens nothing.
        let tokens = config
            .devices
            .iter()
            .filter(|(_, device)| !device.revoked)
            .map(|(id, device)| (id.clone(), device.token.clone()))
            .collect();
        Arc::new(FleetState {
            tokens,
            config,
            base,
            status: Mutex::new(status),
            #[cfg(feature = "cross-compile")]
            precompiled: Mutex::default(),
        })
    }

    /// What the central host knows of every device.
    pub fn devices(&self) -> BTreeMap<String, DeviceStatus> {
        self.status.lock().unwrap().clone()
    }

    /// Keep `heartbeat` as `device`'s last; false for a device the fleet does not know.
    pub fn record_heartbeat(&self, device: &str, heartbeat: Heartbeat) -> bool {
        match self.status.lock().unwrap().get_mut(device) {
            Some(status) => {
                status.heartbeat = Some(heartbeat);
                true
            }
            None => false,
        }
    }

    /// The device whose token the request bears.
    pub(super) fn device(&self, headers: &HeaderMap) -> Option<String> {
        let presented = Presented::from_headers(headers)?;
        token::find(
            &presented,
            self.tokens.iter().map(|(id, token)| (id, token)),
        )
        .cloned()
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
