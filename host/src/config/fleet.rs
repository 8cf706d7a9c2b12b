//! The `[fleet]` table: device groups, devices and where their heartbeats arrive. What
//! the central host does with it is the `fleet` module's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::connect::token::BearerToken;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// How often agents should ask for a new version.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// The former name of `[api] admin_token`, which it stands for when that is unset;
    /// taken out at config load.
    #[serde(default)]
    pub admin_token: Option<toml::Spanned<BearerToken>>,
    /// Where signed releases are (`RELEASES/<group>/<version>/`, made by `sluice fleet
    /// release`), relative to the central config: a group without a `config` runs them.
    #[serde(default)]
    pub releases: Option<PathBuf>,
    /// The fleet's public key (`sluice fleet keygen`): when set, a release whose
    /// signature it does not verify is not served.
    #[serde(default)]
    pub trust: Option<PathBuf>,
    pub groups: BTreeMap<String, GroupConfig>,
    pub devices: BTreeMap<String, DeviceConfig>,
    /// The broker the devices' uplinks send heartbeats to: the central host subscribes
    /// and shows each device's last one.
    #[serde(default)]
    pub heartbeats: Option<HeartbeatsConfig>,
}

crate::connect::mqtt::connection_config! {
    /// The broker the devices' uplinks publish heartbeats to.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HeartbeatsConfig {
        /// One `+` level names the device, as the uplinks' `heartbeat_topic`.
        #[serde(default = "default_heartbeat_topic")]
        pub topic: String,
    }
}

fn default_heartbeat_topic() -> String {
    "sluice/devices/+/heartbeat".to_owned()
}

fn default_poll_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The agent pipeline of this group (relative to the central config), served as an
    /// unsigned release, read afresh: for development, with agents that run
    /// `--insecure-unsigned`. Without it the group runs its signed releases.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Serve this release rather than the latest (an operator's pin).
    #[serde(default)]
    pub release: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub group: String,
    /// The device's bearer token (and MQTT password). A device without one proves who
    /// it is with a client certificate naming it.
    #[serde(default)]
    pub token: Option<BearerToken>,
    /// Refused everywhere: by the fleet's routes and by the embedded broker.
    #[serde(default)]
    pub revoked: bool,
}
