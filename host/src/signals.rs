//! What the host knows about itself that only higher layers see — its devices'
//! heartbeats (the fleet), job runs that failed (the workflow) — published here, at the
//! bottom, so that a source (`host_events`) can turn it into events without importing
//! the layers that know it.
//!
//! The two kinds of fact are kept as what they are:
//! - a heartbeat is *state*: a device's latest replaces its previous one, so the last of
//!   each device is kept (as many as the fleet has devices: it publishes only known
//!   ones). A reader that starts late — after a config reload — still sees every device
//!   heard from since the process started, and a slow reader misses nothing that matters.
//! - a failed job run is an *event*: it goes out on a bounded broadcast channel. A reader
//!   that falls more than [`FAILURE_CAPACITY`] behind loses the oldest, and is told how
//!   many; publishing never waits for a reader.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tokio::sync::broadcast;

/// Failed job runs held for a reader that has not taken them yet.
pub const FAILURE_CAPACITY: usize = 256;

/// A device's latest heartbeat, as the central host received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHeartbeat {
    pub device_id: String,
    pub group: String,
    /// When the central host received it (its own clock).
    pub received_ms: i64,
    pub buffered_entries: u64,
    pub buffered_bytes: u64,
    /// Entries the device's uplink buffer has dropped, in all (kept across restarts).
    pub dropped_entries: u64,
}

/// A job run that failed for good: its retries are spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub job: String,
    /// The slot's end, RFC 3339.
    pub slot: String,
    pub reason: String,
    pub attempts: u32,
}

fn heartbeats() -> &'static Mutex<BTreeMap<String, DeviceHeartbeat>> {
    static HEARTBEATS: OnceLock<Mutex<BTreeMap<String, DeviceHeartbeat>>> = OnceLock::new();
    HEARTBEATS.get_or_init(Mutex::default)
}

fn failures() -> &'static broadcast::Sender<JobFailure> {
    static FAILURES: OnceLock<broadcast::Sender<JobFailure>> = OnceLock::new();
    FAILURES.get_or_init(|| broadcast::channel(FAILURE_CAPACITY).0)
}

/// Keep `heartbeat` as its device's latest.
pub fn heartbeat(heartbeat: DeviceHeartbeat) {
    heartbeats()
        .lock()
        .unwrap()
        .insert(heartbeat.device_id.clone(), heartbeat);
}

/// Every device's latest heartbeat, by device id.
pub fn device_heartbeats() -> Vec<DeviceHeartbeat> {
    heartbeats().lock().unwrap().values().cloned().collect()
}

/// Tell the readers of [`job_failures`] that a run failed; nobody listening is fine.
pub fn job_failed(failure: JobFailure) {
    let _ = failures().send(failure);
}

/// The job runs that fail from now on.
pub fn job_failures() -> broadcast::Receiver<JobFailure> {
    failures().subscribe()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(device: &str, received_ms: i64) -> DeviceHeartbeat {
        DeviceHeartbeat {
            device_id: device.into(),
            group: "g".into(),
            received_ms,
            buffered_entries: 0,
            buffered_bytes: 0,
            dropped_entries: 0,
        }
    }

    #[test]
    fn a_devices_latest_heartbeat_replaces_its_previous_one() {
        heartbeat(beat("signals-a", 1));
        heartbeat(beat("signals-b", 2));
        heartbeat(beat("signals-a", 3));
        let mine: Vec<_> = device_heartbeats()
            .into_iter()
            .filter(|beat| beat.device_id.starts_with("signals-"))
            .map(|beat| (beat.device_id, beat.received_ms))
            .collect();
        assert_eq!(mine, [("signals-a".into(), 3), ("signals-b".into(), 2)]);
    }

    #[test]
    fn a_slow_reader_loses_the_oldest_failures_and_is_told_how_many() {
        let mut reader = job_failures();
        let failure = |n: usize| JobFailure {
            job: format!("job-{n}"),
            slot: "2024-01-01T00:00:00Z".into(),
            reason: "exit status 1".into(),
            attempts: 1,
        };
        for n in 0..FAILURE_CAPACITY + 2 {
            job_failed(failure(n));
        }
        assert_eq!(
            reader.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(2))
        );
        assert_eq!(reader.try_recv().unwrap(), failure(2));
    }
}
