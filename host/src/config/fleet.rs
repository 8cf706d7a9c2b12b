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
    /// Roll a new release out in waves (signed releases only).
    #[serde(default)]
    pub rollout: Option<RolloutPolicy>,
}

/// `rollout = { waves = [1, "25%", "100%"], soak_secs = 300, ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Cumulative wave sizes: device counts or percentages of the group.
    pub waves: Vec<WaveSize>,
    /// How long a wave must stay healthy before the next starts.
    #[serde(default = "default_soak_secs")]
    pub soak_secs: u64,
    /// A further wait between waves.
    #[serde(default)]
    pub pause_secs: u64,
    /// How long a wave may take to become healthy before the rollout halts.
    #[serde(default = "default_max_wave_secs")]
    pub max_wave_secs: u64,
    /// Plugin errors a device may add on the new release before its wave is unhealthy.
    #[serde(default)]
    pub max_plugin_errors: u64,
    /// Events a device's uplink may drop on the new release likewise.
    #[serde(default)]
    pub max_dropped: u64,
}

fn default_soak_secs() -> u64 {
    60
}

fn default_max_wave_secs() -> u64 {
    600
}

/// A wave's size: `3` devices or `"25%"` of the group (rounded up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Devices(usize),
    Percent(u8),
}

impl WaveSize {
    /// How many of `group` devices the waves up to this one hold.
    pub fn devices(self, group: usize) -> usize {
        match self {
            WaveSize::Devices(count) => count,
            WaveSize::Percent(percent) => (group * usize::from(percent)).div_ceil(100),
        }
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Text(String),
        }
        let invalid = |text: &str| {
            serde::de::Error::custom(format!(
                "a wave is a device count (3) or a percentage (\"25%\"), not `{text}`"
            ))
        };
        match Raw::deserialize(deserializer)? {
            Raw::Count(0) => Err(invalid("0")),
            Raw::Count(count) => Ok(WaveSize::Devices(count)),
            Raw::Text(text) => match text.strip_suffix('%').and_then(|n| n.parse::<u8>().ok()) {
                Some(percent) if (1..=100).contains(&percent) => Ok(WaveSize::Percent(percent)),
                _ => Err(invalid(&text)),
            },
        }
    }
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
    /// Run this release of its group whatever the group's rollout (an operator's pin).
    #[serde(default)]
    pub release: Option<u64>,
}
