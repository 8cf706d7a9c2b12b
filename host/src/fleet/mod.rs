//! The fleet: devices managed from the central host's one config.
//!
//! The central config's `[fleet]` names device groups (each with the agent pipeline it
//! runs, a config file next to the central one) and devices (each in a group, with its
//! token). The central host serves each device its group's config and plugins over its
//! API ([`routes`]); `sluice agent` ([`crate::agent`]) polls for them and applies each new
//! version atomically.
//!
//! What a device gets is a release ([`releases`]): the group's config, its plugins and
//! their machine code, listed in a manifest signed with the fleet's key
//! ([`crate::release`]); or, for a group that names a `config`, that file as an unsigned
//! release, for development.

pub mod heartbeats;
mod offer;
pub mod registry;
pub mod releases;
pub mod rollout;
pub mod routes;

use std::path::Path;

pub use crate::config::fleet::{DeviceConfig, FleetConfig, GroupConfig, HeartbeatsConfig};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "fleet: device `{device}` is in group `{group}`, which `[fleet.groups]` does not define"
    )]
    UnknownGroup { device: String, group: String },
    #[error(transparent)]
    Serve(#[from] releases::ServeError),
}

impl FleetConfig {
    /// Check that every device's group exists and every group has a release to serve
    /// (its config builds; its signed release loads and verifies), so that a broken fleet
    /// section fails the central host's start.
    pub fn check(&self, base: &Path) -> Result<(), FleetError> {
        for (device, config) in &self.devices {
            if !self.groups.contains_key(&config.group) {
                return Err(FleetError::UnknownGroup {
                    device: device.clone(),
                    group: config.group.clone(),
                });
            }
        }
        let releases = releases::Releases::new(self, base)?;
        for group in self.groups.keys() {
            releases.current(group)?;
        }
        Ok(())
    }
}
