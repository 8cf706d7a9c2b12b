//! Staged rollouts: a group's new release goes to its devices in waves, each wave only
//! once the previous one is healthy, and a wave that is not halts the rollout and sends
//! its devices back to the release they ran before.
//!
//! A group's `rollout` policy names the waves (device counts or percentages of the
//! group, cumulative), what healthy means (the device applied the release, its
//! heartbeats report it, its plugin errors and drops rose by no more than the limits,
//! for `soak_secs`), the pause between waves and how long a wave may take. Devices are
//! put in waves by their ids, so a wave is the same set after a restart. The state is
//! kept in the host's data directory: a restart resumes a rollout where it was.
//!
//! This module decides; [`super::routes`] asks it which release to offer a device, and
//! feeds it what devices report.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::config::fleet::{RolloutPolicy, WaveSize};

/// Where a group's rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// Wave `wave` (0-based) runs the new release; it soaks once all its devices are healthy.
    Rolling,
    /// An operator paused it: no new wave starts; the waves so far keep the new release.
    Paused,
    /// A wave was unhealthy: its devices are sent back; nothing moves until an operator
    /// resumes (the same wave again) or aborts, or a newer release comes.
    Halted { reason: String },
    /// Every device runs the new release: it is the group's stable release now.
    Completed,
    /// An operator gave up on the new release: every device runs the previous one.
    Aborted,
}

/// One group's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub group: String,
    /// The release devices run before (what halted waves return to).
    pub from: Option<u64>,
    pub to: u64,
    /// The waves' devices, cumulative sets split in order.
    pub waves: Vec<Vec<String>>,
    /// The current wave (0-based).
    pub wave: usize,
    #[serde(flatten)]
    pub phase: Phase,
    pub wave_started_ms: i64,
    /// Since when every device of the waves so far has been healthy.
    pub healthy_since_ms: Option<i64>,
    /// Each device's plugin errors and drops when its wave started.
    pub baseline: BTreeMap<String, (u64, u64)>,
}

/// What the central host knows of a device, as the rollout judges it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The version it runs (from its heartbeats' `config_version`), if known.
    pub running: Option<u64>,
    /// The version it refused, if it refused the offered one.
    pub refused: Option<u64>,
    pub plugin_errors: u64,
    pub dropped: u64,
    /// When its last heartbeat arrived.
    pub heartbeat_ms: Option<i64>,
}

impl Rollout {
    /// A rollout of `to` over `devices` (the group's, in any order) from `from`.
    pub fn start(
        group: &str,
        policy: &RolloutPolicy,
        devices: &[String],
        from: Option<u64>,
        to: u64,
        now_ms: i64,
    ) -> Rollout {
        let mut sorted = devices.to_vec();
        sorted.sort();
        let mut waves = Vec::new();
        let mut placed = 0;
        for size in &policy.waves {
            let upto = size.devices(sorted.len()).max(placed).min(sorted.len());
            if upto > placed {
                waves.push(sorted[placed..upto].to_vec());
                placed = upto;
            }
        }
        if placed < sorted.len() {
            waves.push(sorted[placed..].to_vec());
        }
        Rollout {
            group: group.to_owned(),
            from,
            to,
            waves,
            wave: 0,
            phase: if devices.is_empty() {
                Phase::Completed
            } else {
                Phase::Rolling
            },
            wave_started_ms: now_ms,
            healthy_since_ms: None,
            baseline: BTreeMap::new(),
        }
    }

    /// The version `device` should run now.
    pub fn offer(&self, device: &str) -> Option<u64> {
        match &self.phase {
            Phase::Completed => Some(self.to),
            Phase::Aborted | Phase::Halted { .. } => self.from,
            Phase::Rolling | Phase::Paused if self.reached().any(|member| member == device) => {
                Some(self.to)
            }
            Phase::Rolling | Phase::Paused => self.from,
        }
    }

    /// The devices the rollout has reached so far.
    fn reached(&self) -> impl Iterator<Item = &String> {
        self.waves.iter().take(self.wave + 1).flatten()
    }

    /// Judge the waves so far by `health` at `now_ms`; true when the phase changed.
    pub fn advance(
        &mut self,
        policy: &RolloutPolicy,
        health: &BTreeMap<String, Health>,
        now_ms: i64,
    ) -> bool {
        if self.phase != Phase::Rolling {
            return false;
        }
        let unknown = Health::default();
        for device in self.waves[self.wave].iter() {
            let seen = health.get(device).unwrap_or(&unknown);
            self.baseline
                .entry(device.clone())
                .or_insert((seen.plugin_errors, seen.dropped));
        }
        let mut all_healthy = true;
        for device in self.reached().cloned().collect::<Vec<_>>() {
            let seen = health.get(&device).unwrap_or(&unknown);
            if seen.refused == Some(self.to) {
                return self.halt(format!("device `{device}` refused release {}", self.to));
            }
            let (errors, dropped) = self.baseline.get(&device).copied().unwrap_or_default();
            let new_errors = seen.plugin_errors.saturating_sub(errors);
            if seen.running == Some(self.to) && new_errors > policy.max_plugin_errors {
                return self.halt(format!(
                    "device `{device}`: {new_errors} plugin errors on release {} (at most {})",
                    self.to, policy.max_plugin_errors
                ));
            }
            let new_dropped = seen.dropped.saturating_sub(dropped);
            if seen.running == Some(self.to) && new_dropped > policy.max_dropped {
                return self.halt(format!(
                    "device `{device}`: {new_dropped} events dropped on release {} (at most {})",
                    self.to, policy.max_dropped
                ));
            }
            let fresh = seen
                .heartbeat_ms
                .is_some_and(|at| at >= self.wave_started_ms);
            all_healthy &= seen.running == Some(self.to) && fresh;
        }
        if !all_healthy {
            self.healthy_since_ms = None;
            let waited = now_ms - self.wave_started_ms;
            if waited > policy.max_wave_secs as i64 * 1000 {
                return self.halt(format!(
                    "wave {} was not healthy within {} s",
                    self.wave + 1,
                    policy.max_wave_secs
                ));
            }
            return false;
        }
        // Healthy for the soak time, then the pause between waves.
        let since = *self.healthy_since_ms.get_or_insert(now_ms);
        if now_ms - since < (policy.soak_secs + policy.pause_secs) as i64 * 1000 {
            return false;
        }
        if self.wave + 1 == self.waves.len() {
            self.phase = Phase::Completed;
        } else {
            self.wave += 1;
            self.wave_started_ms = now_ms;
            self.healthy_since_ms = None;
        }
        true
    }

    fn halt(&mut self, reason: String) -> bool {
        tracing::error!(group = %self.group, release = self.to, "fleet: rollout halted: {reason}");
        self.phase = Phase::Halted { reason };
        true
    }

    /// An operator's `pause`, `resume` or `abort`; an error names why it cannot apply.
    pub fn operate(&mut self, action: &str, now_ms: i64) -> Result<(), String> {
        match (action, &self.phase) {
            ("pause", Phase::Rolling) => self.phase = Phase::Paused,
            ("resume", Phase::Paused | Phase::Halted { .. }) => {
                self.phase = Phase::Rolling;
                self.wave_started_ms = now_ms;
                self.healthy_since_ms = None;
                self.baseline.clear();
            }
            ("abort", Phase::Rolling | Phase::Paused | Phase::Halted { .. }) => {
                self.phase = Phase::Aborted
            }
            ("pause" | "resume" | "abort", phase) => {
                return Err(format!(
                    "the rollout of release {} is {}: cannot {action} it",
                    self.to,
                    describe(phase)
                ));
            }
            (other, _) => return Err(format!("unknown action `{other}`: pause, resume or abort")),
        }
        tracing::info!(group = %self.group, release = self.to, action, "fleet: rollout changed by an operator");
        Ok(())
    }

    /// Whether a rollout is over (completed or aborted): a newer release starts a new one.
    pub fn settled(&self) -> bool {
        matches!(self.phase, Phase::Completed | Phase::Aborted)
    }

    /// The release the group stands on: the new one once completed, else the previous.
    pub fn stable(&self) -> Option<u64> {
        match self.phase {
            Phase::Completed => Some(self.to),
            _ => self.from,
        }
    }
}

/// The rollouts saved in `file`; none when it is missing or unreadable (logged).
pub fn read_all(file: &Path) -> BTreeMap<String, Rollout> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::error!(file = %file.display(), "fleet: cannot read the saved rollouts, starting afresh: {error}");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

/// Save `rollouts` to `file` (a temporary file, fsynced, renamed); a failure is logged.
pub fn save_all(file: &Path, rollouts: &BTreeMap<String, Rollout>) {
    let text = serde_json::to_vec_pretty(rollouts).expect("rollouts serialise to JSON");
    let temporary = file.with_extension("json.tmp");
    let written = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&temporary, text))
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, file));
    if let Err(error) = written {
        tracing::error!(file = %file.display(), "fleet: cannot save the rollouts: {error}");
    }
}

fn describe(phase: &Phase) -> &'static str {
    match phase {
        Phase::Rolling => "rolling",
        Phase::Paused => "paused",
        Phase::Halted { .. } => "halted",
        Phase::Completed => "completed",
        Phase::Aborted => "aborted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(waves: &str) -> RolloutPolicy {
        toml::from_str(&format!(
            "waves = {waves}\nsoak_secs = 10\npause_secs = 5\nmax_wave_secs = 100"
        ))
        .unwrap()
    }

    fn devices(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("gw{n:02}")).collect()
    }

    fn healthy(version: u64, at: i64) -> Health {
        Health {
            running: Some(version),
            heartbeat_ms: Some(at),
            ..Health::default()
        }
    }

    #[test]
    fn waves_are_counts_or_percentages_of_the_group_in_id_order() {
        let rollout = Rollout::start(
            "g",
            &policy("[1, \"50%\", \"100%\"]"),
            &devices(10),
            Some(1),
            2,
            0,
        );
        let sizes: Vec<usize> = rollout.waves.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 4, 5]);
        assert_eq!(rollout.waves[0], vec!["gw00"]);
        assert_eq!(rollout.offer("gw00"), Some(2));
        assert_eq!(
            rollout.offer("gw05"),
            Some(1),
            "a later wave keeps the previous release"
        );
        let short = Rollout::start("g", &policy("[2]"), &devices(5), Some(1), 2, 0);
        assert_eq!(
            short.waves.len(),
            2,
            "devices past the last wave make one more"
        );
    }

    #[test]
    fn a_healthy_wave_soaks_pauses_and_the_next_starts_until_completed() {
        let policy = policy("[1, \"100%\"]");
        let mut rollout = Rollout::start("g", &policy, &devices(3), Some(1), 2, 0);
        let mut health: BTreeMap<String, Health> =
            devices(3).into_iter().map(|d| (d, healthy(1, 0))).collect();
        assert!(
            !rollout.advance(&policy, &health, 1_000),
            "gw00 has not applied release 2"
        );
        health.insert("gw00".into(), healthy(2, 2_000));
        assert!(!rollout.advance(&policy, &health, 2_000));
        assert!(
            !rollout.advance(&policy, &health, 13_000),
            "soaked, not yet paused"
        );
        assert!(rollout.advance(&policy, &health, 17_000));
        assert_eq!(rollout.wave, 1);
        assert_eq!(rollout.offer("gw02"), Some(2));
        for device in devices(3) {
            health.insert(device, healthy(2, 18_000));
        }
        rollout.advance(&policy, &health, 18_000);
        assert!(rollout.advance(&policy, &health, 33_000));
        assert_eq!(rollout.phase, Phase::Completed);
        assert_eq!(rollout.stable(), Some(2));
    }

    #[test]
    fn a_refusal_or_new_plugin_errors_halt_it_and_send_the_wave_back() {
        let policy = policy("[2, \"100%\"]");
        let mut rollout = Rollout::start("g", &policy, &devices(4), Some(1), 2, 0);
        let mut health: BTreeMap<String, Health> =
            devices(4).into_iter().map(|d| (d, healthy(1, 0))).collect();
        health.get_mut("gw00").unwrap().plugin_errors = 7;
        rollout.advance(&policy, &health, 1_000);
        // Errors from before the wave started do not count; new ones do.
        health.insert(
            "gw00".into(),
            Health {
                plugin_errors: 7,
                ..healthy(2, 2_000)
            },
        );
        assert!(!rollout.advance(&policy, &health, 2_000));
        health.insert(
            "gw01".into(),
            Health {
                plugin_errors: 3,
                ..healthy(2, 2_000)
            },
        );
        assert!(rollout.advance(&policy, &health, 3_000));
        let Phase::Halted { reason } = &rollout.phase else {
            panic!("{:?}", rollout.phase)
        };
        assert!(
            reason.contains("`gw01`: 3 plugin errors on release 2"),
            "{reason}"
        );
        assert_eq!(rollout.offer("gw00"), Some(1), "the wave goes back");
        assert_eq!(rollout.offer("gw03"), Some(1), "later waves never got it");

        let mut refused = Rollout::start("g", &policy, &devices(4), Some(1), 2, 0);
        health.insert(
            "gw01".into(),
            Health {
                refused: Some(2),
                ..healthy(1, 0)
            },
        );
        assert!(refused.advance(&policy, &health, 1_000));
        assert!(
            matches!(&refused.phase, Phase::Halted { reason } if reason.contains("refused release 2"))
        );
    }

    #[test]
    fn a_wave_that_stays_unhealthy_halts_at_its_deadline() {
        let policy = policy("[1]");
        let mut rollout = Rollout::start("g", &policy, &devices(2), Some(1), 2, 0);
        let health = BTreeMap::new();
        assert!(!rollout.advance(&policy, &health, 99_000));
        assert!(rollout.advance(&policy, &health, 101_000));
        assert!(
            matches!(&rollout.phase, Phase::Halted { reason } if reason.contains("within 100 s"))
        );
    }

    #[test]
    fn operators_pause_resume_and_abort() {
        let policy = policy("[1]");
        let mut rollout = Rollout::start("g", &policy, &devices(2), Some(1), 2, 0);
        rollout.operate("pause", 0).unwrap();
        assert_eq!(
            rollout.offer("gw00"),
            Some(2),
            "a pause keeps what the waves run"
        );
        assert!(
            !rollout.advance(&policy, &BTreeMap::new(), 500_000),
            "nothing moves while paused"
        );
        rollout.operate("resume", 1).unwrap();
        rollout.operate("abort", 2).unwrap();
        assert_eq!(rollout.offer("gw00"), Some(1));
        assert_eq!(rollout.stable(), Some(1));
        let error = rollout.operate("resume", 3).unwrap_err();
        assert!(error.contains("aborted: cannot resume"), "{error}");
        assert!(
            rollout
                .operate("restart", 3)
                .unwrap_err()
                .contains("unknown action")
        );
    }
}
