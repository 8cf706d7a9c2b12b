//! The quickstart's topology under a scripted sequence of faults: the central host
//! (embedded broker, fleet, an MQTT source into files) and two agents, one of which
//! buffers on a disk that fills up. The central host is killed (`kill -9`) twice and
//! restarted cleanly once (its broker with it), each agent is killed once, and the
//! outages fill one agent's disk and overflow the other's buffer. At the end every
//! reading is accounted for: delivered, or counted as dropped by the one agent whose
//! buffer is configured to drop (`drop_oldest`); nothing else is missing.

mod harness;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::readings::{arrivals, audit, highest};
use harness::*;

/// A tmpfs of `size` mounted on a temporary directory for the test's life.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root, as the test suite runs"
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// A group's pipeline: three simulated sensors every 20 ms into the uplink, whose
/// buffer is `buffer` (an inline table's body).
fn group(broker: u16, buffer: &str) -> String {
    sensors_to_uplink(
        &format!("mqtt://127.0.0.1:{broker}"),
        "${SLUICE_DEVICE_ID}",
        3,
        20,
        buffer,
    )
}

fn central_config(dir: &Path, api: u16, broker: u16) -> String {
    format!(
        r#"data_dir = "{}"

[api]
listen = "127.0.0.1:{api}"

[broker]
listen = "127.0.0.1:{broker}"

[sources.telemetry]
type = "mqtt"
url = "mqtt://127.0.0.1:{broker}"
topics = ["sensors/+/telemetry"]
batch_timeout_ms = 500

[sinks.out]
type = "file"
inputs = ["telemetry"]
path = "out"

[fleet]
poll_secs = 1
admin_token = "admin"
heartbeats = {{ url = "mqtt://127.0.0.1:{broker}" }}
groups.steady = {{ config = "steady.toml" }}
groups.lossy = {{ config = "lossy.toml" }}
devices.gateway-1 = {{ group = "steady", token = "token-1" }}
devices.gateway-2 = {{ group = "lossy", token = "token-2" }}
"#,
        dir.join("data").display()
    )
}

/// Per gateway, the readings that arrived from its sensors.
fn by_gateway(out: &Path) -> HashMap<&'static str, HashMap<String, Vec<u64>>> {
    let mut split: HashMap<&'static str, HashMap<String, Vec<u64>>> = HashMap::new();
    for (device, seqs) in arrivals(out) {
        let gateway = ["gateway-1", "gateway-2"]
            .into_iter()
            .find(|g| device.starts_with(&format!("{g}-sensor-")))
            .unwrap_or_else(|| panic!("a reading from an unknown device {device}"));
        split.entry(gateway).or_default().insert(device, seqs);
    }
    split
}

/// What a gateway's last heartbeat reports as dropped by its buffer; a missing
/// heartbeat or field fails the test.
fn reported_dropped(api: u16, gateway: &str) -> u64 {
    let (status, body) =
        http_get_with(api, "/fleet/v1/devices", &["Authorization: Bearer admin"]).unwrap();
    assert_eq!(status, 200, "{body}");
    let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
    devices[gateway]["heartbeat"]["dropped"]
        .as_u64()
        .unwrap_or_else(|| panic!("no `dropped` in {gateway}'s heartbeat: {devices}"))
}

/// The sum over a gateway's sensors of what arrived.
fn count(out: &Path, gateway: &str) -> usize {
    by_gateway(out)
        .get(gateway)
        .map_or(0, |sensors| sensors.values().map(Vec::len).sum())
}

#[test]
fn every_reading_is_delivered_or_counted_through_kills_restarts_and_a_full_disk() {
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    let (api, broker) = (free_port(), free_port());
    // gateway-1 buffers on a disk of 128 KiB (its buffer's own bound is far larger and
    // blocks); gateway-2's buffer holds 32 KiB and drops its oldest entries past it.
    let small_disk = SmallDisk::mount("128k");
    let steady_buffer = small_disk.0.path().join("buffer");
    std::fs::write(
        dir.join("steady.toml"),
        group(
            broker,
            &format!(
                "path = \"{}\", max_bytes = 16777216, when_full = \"block\"",
                steady_buffer.display()
            ),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("lossy.toml"),
        group(
            broker,
            "path = \"uplink-buffer\", max_bytes = 32768, segment_bytes = 4096, when_full = \"drop_oldest\"",
        ),
    )
    .unwrap();
    let config = dir.join("central.toml");
    std::fs::write(&config, central_config(dir, api, broker)).unwrap();
    let out = dir.join("data/out");

    let mut central = Host::start(&config, api, Stdio::null());
    let mut gateways = [
        Agent::start(Command::new(sluice_binary()), api, "gateway-1", "token-1"),
        Agent::start(Command::new(sluice_binary()), api, "gateway-2", "token-2"),
    ];
    let progress = |what: &str, more: usize| {
        let before = [count(&out, "gateway-1"), count(&out, "gateway-2")];
        wait_until(Duration::from_secs(90), what, || {
            count(&out, "gateway-1") >= before[0] + more
                && count(&out, "gateway-2") >= before[1] + more
        });
    };
    progress("readings from both gateways", 100);

    eprintln!("fault 1: kill -9 of the central host (and its broker) for 8 s");
    central.kill_9();
    std::thread::sleep(Duration::from_secs(8));
    central = Host::start(&config, api, Stdio::null());
    progress("readings after the central host's restart", 200);

    eprintln!("fault 2: kill -9 of gateway-1");
    gateways[0].kill_9();
    std::thread::sleep(Duration::from_secs(1));
    gateways[0].restart();
    progress("readings after gateway-1's restart", 100);

    eprintln!("fault 3: a clean restart of the central host and its broker");
    central.stop();
    central = Host::start(&config, api, Stdio::null());
    progress("readings after the clean restart", 100);

    eprintln!("fault 4: kill -9 of gateway-2");
    gateways[1].kill_9();
    std::thread::sleep(Duration::from_secs(1));
    gateways[1].restart();
    progress("readings after gateway-2's restart", 100);

    eprintln!("fault 5: kill -9 of the central host under load, 3 s down");
    central.kill_9();
    std::thread::sleep(Duration::from_secs(3));
    central = Host::start(&config, api, Stdio::null());

    // Readings made well after the last fault, from every sensor, so that anything lost
    // along the way shows as a gap.
    let at_last_fault = highest(&arrivals(&out));
    wait_until(
        Duration::from_secs(120),
        "every sensor past the last fault",
        || {
            let now = highest(&arrivals(&out));
            now.len() == 6
                && at_last_fault
                    .iter()
                    .all(|(sensor, seq)| now.get(sensor).is_some_and(|n| *n > seq + 100))
        },
    );
    // The heartbeats that follow report each buffer's drops so far.
    std::thread::sleep(Duration::from_secs(3));
    let split = by_gateway(&out);
    eprintln!("gateway     sensors  delivered  duplicates  missing  reported dropped");
    let mut accounts = Vec::new();
    for gateway in ["gateway-1", "gateway-2"] {
        let sensors = &split[gateway];
        let audit = audit(sensors);
        let delivered: usize = sensors
            .values()
            .map(|seqs| seqs.iter().collect::<std::collections::HashSet<_>>().len())
            .sum();
        let dropped = reported_dropped(api, gateway);
        eprintln!(
            "{gateway}  {:>7}  {delivered:>9}  {:>10}  {:>7}  {dropped:>16}",
            sensors.len(),
            audit.duplicates,
            audit.missing
        );
        accounts.push((gateway, audit, dropped));
    }
    assert!(
        gateways[0].log().contains("No space left on device"),
        "gateway-1's disk filled up during the outage"
    );
    let (_, steady, steady_dropped) = &accounts[0];
    assert_eq!(
        steady.missing, 0,
        "gateway-1 (block, full disk) lost nothing"
    );
    assert_eq!(*steady_dropped, 0, "gateway-1 dropped nothing");
    let (_, lossy, lossy_dropped) = &accounts[1];
    assert!(
        *lossy_dropped > 0,
        "gateway-2's buffer overflowed in the outage"
    );
    assert_eq!(
        lossy.missing, *lossy_dropped,
        "every reading missing from gateway-2 is one it counted as dropped"
    );
    assert!(
        steady.in_order && lossy.in_order,
        "each sensor's readings in order"
    );
    drop(central);
    drop(gateways);
    drop(small_disk);
}
