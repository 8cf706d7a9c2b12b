//! Which release the central host offers a device: its pin, else its group's rollout's
//! choice for it, else the group's current release. Each poll also moves the group's
//! rollout on from what its devices report; rollouts are saved to the data directory
//! whenever they change, so that a restart resumes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::registry::FleetState;
use super::releases::{ServeError, Served};
use super::rollout::{Health, Phase, Rollout};

impl FleetState {
    /// The release `device` should run now.
    pub(super) fn offer(&self, device: &str) -> Result<Arc<Served>, ServeError> {
        let definition = &self.config.devices[device];
        let group = &definition.group;
        if let Some(pinned) = definition.release {
            return self.releases.version(group, pinned);
        }
        let current = self.releases.current(group)?;
        let policy = match &self.config.groups[group].rollout {
            Some(policy) if current.manifest.version > 0 => policy,
            _ => return Ok(current),
        };
        let now = crate::event::now_ms();
        let health = self.health(group);
        let mut rollouts = self.rollouts.lock().unwrap();
        let mut changed = false;
        let rollout = rollouts.entry(group.clone()).or_insert_with(|| {
            // A group seen for the first time stands on its current release.
            changed = true;
            let mut settled =
                Rollout::start(group, policy, &[], None, current.manifest.version, now);
            settled.phase = Phase::Completed;
            settled
        });
        if current.manifest.version > rollout.to {
            let devices = self.group_devices(group);
            let from = rollout.stable();
            tracing::info!(
                group,
                from,
                to = current.manifest.version,
                "fleet: a rollout starts"
            );
            *rollout = Rollout::start(group, policy, &devices, from, current.manifest.version, now);
            changed = true;
        }
        changed |= rollout.advance(policy, &health, now);
        let offered = rollout.offer(device);
        let snapshot = changed.then(|| rollouts.clone());
        drop(rollouts);
        if let Some(snapshot) = snapshot {
            super::rollout::save_all(&self.rollouts_file, &snapshot);
        }
        match offered {
            Some(version) if version == current.manifest.version => Ok(current),
            Some(version) => self.releases.version(group, version),
            // The first rollout of a group that had no release before: the devices of
            // later waves wait with the current release's predecessor, which is none.
            None => Ok(current),
        }
    }

    /// Every group's rollout.
    pub fn rollouts(&self) -> BTreeMap<String, Rollout> {
        self.rollouts.lock().unwrap().clone()
    }

    /// An operator's `pause`, `resume` or `abort` of `group`'s rollout.
    pub fn operate(&self, group: &str, action: &str) -> Result<Rollout, String> {
        let mut rollouts = self.rollouts.lock().unwrap();
        let rollout = rollouts
            .get_mut(group)
            .ok_or_else(|| format!("group `{group}` has no rollout"))?;
        rollout.operate(action, crate::event::now_ms())?;
        let operated = rollout.clone();
        let snapshot = rollouts.clone();
        drop(rollouts);
        super::rollout::save_all(&self.rollouts_file, &snapshot);
        Ok(operated)
    }

    fn group_devices(&self, group: &str) -> Vec<String> {
        self.config
            .devices
            .iter()
            .filter(|(_, device)| {
                device.group == group && !device.revoked && device.release.is_none()
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What the group's devices report, as a rollout judges it.
    fn health(&self, group: &str) -> BTreeMap<String, Health> {
        let status = self.status.lock().unwrap().clone();
        let version = |id: &Option<String>| {
            let id = id.as_ref()?;
            Some(self.releases.by_id(group, id)?.manifest.version)
        };
        status
            .into_iter()
            .filter(|(_, device)| device.group == group)
            .map(|(id, device)| {
                let heartbeat = device.heartbeat.as_ref();
                let health = Health {
                    running: version(&device.applied),
                    refused: device.error.as_ref().and_then(|_| version(&device.refused)),
                    plugin_errors: heartbeat.map_or(0, |beat| beat.plugin_errors),
                    dropped: heartbeat.map_or(0, |beat| beat.dropped),
                    // Without `[fleet.heartbeats]`, the device's polls show it alive.
                    heartbeat_ms: heartbeat
                        .map(|beat| beat.received_ms)
                        .or(device.last_seen_ms),
                };
                (id, health)
            })
            .collect()
    }
}
