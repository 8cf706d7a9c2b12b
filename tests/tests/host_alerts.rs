//! The host watching itself (`type = "host_events"`): a central host with an embedded
//! broker, a fleet receiving one real agent's heartbeats, a job that fails and a stage
//! that dead-letters, its own events written to files. Stopping the agent makes
//! `device_offline` events for it start within the configured 3 s (plus an interval and
//! a heartbeat period), and an `alert` rule over them fire once; starting it again makes
//! them stop and the alert resolve. The failed job and the erring stage are reported
//! too.

mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::{Value, json};

const OFFLINE_SECS: u64 = 3;

fn central_config(dir: &Path, api: u16, broker: u16, ingest: u16) -> String {
    format!(
        r#"data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"

[broker]
listen = "127.0.0.1:{broker}"

[sources.watch]
type = "host_events"
interval_secs = 1
device_offline_secs = {OFFLINE_SECS}
uplink_depth = 1000000

[sinks.host_events]
type = "file"
inputs = ["watch"]
path = "host-events"

# An alert rule over offline devices, fed by a source of its own.
[sources.offline]
type = "host_events"
interval_secs = 1
device_offline_secs = {OFFLINE_SECS}
checks = ["device_offline"]

[transforms.gateway_offline]
type = "alert"
inputs = ["offline"]
key = "device_id"
labels = {{ severity = "page" }}
resolve_after_secs = 2

[sinks.alerts]
type = "file"
inputs = ["gateway_offline"]
path = "alerts"

# A stage that dead-letters what it does not route (cold readings).
[plugins.router]
path = "{router}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[transforms.route]
type = "wasm"
plugin = "router"
inputs = ["ingest"]
routes = ["hot"]
config = {{ routes = [{{ name = "hot", when = {{ field = "t", gt = 80 }} }}] }}

[sinks.hot]
type = "file"
inputs = ["route.hot"]
path = "hot"

[jobs.train]
type = "command"
every = "2s"
retries = 0
command = "sh"
args = ["-c", "echo 'train: no data' >&2; exit 3"]

[fleet]
poll_secs = 1
admin_token = "admin"
heartbeats = {{ url = "mqtt://127.0.0.1:{broker}" }}
groups.gateways = {{ config = "gateway.toml" }}
devices.gw1 = {{ group = "gateways", token = "token-1" }}
"#,
        data = dir.join("data").display(),
        router = plugin("router"),
    )
}

/// The host's own events so far.
fn host_events(dir: &Path) -> Vec<Value> {
    read_lines(&dir.join("data/host-events"))
}

/// How many `check` events there are about `subject` (in its `field`).
fn count(dir: &Path, check: &str, field: &str, subject: &str) -> usize {
    host_events(dir)
        .iter()
        .filter(|event| event["check"] == check && event[field] == subject)
        .count()
}

/// The `status` of each alert so far.
fn alert_statuses(dir: &Path) -> Vec<String> {
    read_lines(&dir.join("data/alerts"))
        .iter()
        .map(|alert| {
            assert_eq!(
                (&alert["alert"], &alert["key"], &alert["labels"]["severity"]),
                (&json!("gateway_offline"), &json!("gw1"), &json!("page")),
                "{alert}"
            );
            alert["status"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// When the central host last heard from `device`, by its clock (ms).
/// The host's log and the agent's, for a failure's message.
fn logs(host: &Host, agent: &Agent) -> String {
    format!("{}\nagent:\n{}", host.log_text(), agent.log())
}

fn last_heartbeat_ms(api: u16, device: &str) -> Option<i64> {
    let (status, body) = http_get_with(api, "/fleet/v1/devices", &["Authorization: Bearer admin"])?;
    assert_eq!(status, 200, "{body}");
    let devices: Value = serde_json::from_str(&body).unwrap();
    devices[device]["heartbeat"]["received_ms"].as_i64()
}

#[test]
fn a_stopped_agent_is_reported_offline_in_time_and_no_more_once_back() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let (api, broker, ingest) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("gateway.toml"),
        sensors_to_uplink(
            &format!("mqtt://127.0.0.1:{broker}"),
            "${SLUICE_DEVICE_ID}",
            1,
            200,
            "path = \"uplink-buffer\"",
        ),
    )
    .unwrap();
    let config = dir.join("central.toml");
    std::fs::write(&config, central_config(dir, api, broker, ingest)).unwrap();
    let host = Host::start(&config, api, Stdio::null());
    let mut agent = Agent::start(Command::new(sluice_binary()), api, "gw1", "token-1");

    wait_until(Duration::from_secs(60), "gw1's heartbeats", || {
        last_heartbeat_ms(api, "gw1").is_some()
    });
    // Heard from every second: not offline.
    std::thread::sleep(Duration::from_secs(OFFLINE_SECS + 1));
    assert_eq!(
        count(dir, "device_offline", "device_id", "gw1"),
        0,
        "{}",
        logs(&host, &agent)
    );

    // A cold reading is dead-lettered by `route`; `train` fails every 2 s.
    let (status, body) = http_post(ingest, "/ingest", &[], b"{\"t\":20}\n");
    assert_eq!(status, 200, "{body}");
    wait_until(
        Duration::from_secs(30),
        "route's dead letters reported",
        || count(dir, "stage_errors", "stage", "route") > 0,
    );
    let route = host_events(dir)
        .into_iter()
        .find(|event| event["stage"] == "route")
        .unwrap();
    assert!(
        route["dead_letters_per_sec"].as_f64().unwrap() > 0.0,
        "{route}"
    );
    wait_until(Duration::from_secs(30), "train's failure reported", || {
        count(dir, "job_failed", "job", "train") > 0
    });
    let train = host_events(dir)
        .into_iter()
        .find(|event| event["job"] == "train")
        .unwrap();
    assert!(
        train["reason"].as_str().unwrap().contains("exit status: 3"),
        "{train}"
    );
    assert_eq!(train["attempts"], 1, "{train}");

    // Stopped: reported offline within the limit, an interval and a heartbeat period.
    agent.kill_9();
    let stopped = Instant::now();
    wait_until(Duration::from_secs(20), "gw1 reported offline", || {
        count(dir, "device_offline", "device_id", "gw1") > 0
    });
    let after = stopped.elapsed();
    eprintln!("gw1 reported offline {after:?} after it stopped");
    assert!(
        after >= Duration::from_secs(OFFLINE_SECS - 1) && after <= Duration::from_secs(8),
        "reported {after:?} after the stop"
    );
    let offline = host_events(dir)
        .into_iter()
        .find(|event| event["check"] == "device_offline")
        .unwrap();
    assert_eq!(offline["group"], "gateways", "{offline}");
    assert!(offline["offline_secs"].as_u64().unwrap() >= OFFLINE_SECS);
    assert!(offline["last_seen"].as_str().unwrap().ends_with('Z'));
    // Reported at every interval while it lasts, and alerted once.
    let reported = count(dir, "device_offline", "device_id", "gw1");
    wait_until(Duration::from_secs(10), "the offline alert", || {
        !alert_statuses(dir).is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(count(dir, "device_offline", "device_id", "gw1") >= reported + 2);
    assert_eq!(alert_statuses(dir), ["firing"]);

    // Back: once its heartbeats come again, no more offline events.
    agent.restart();
    let back_after = last_heartbeat_ms(api, "gw1").unwrap();
    wait_until(Duration::from_secs(60), "gw1's heartbeats again", || {
        last_heartbeat_ms(api, "gw1").is_some_and(|ms| ms > back_after)
    });
    std::thread::sleep(Duration::from_secs(2));
    let settled = count(dir, "device_offline", "device_id", "gw1");
    std::thread::sleep(Duration::from_secs(OFFLINE_SECS + 1));
    assert_eq!(
        count(dir, "device_offline", "device_id", "gw1"),
        settled,
        "gw1 is back but still reported offline\n{}",
        logs(&host, &agent)
    );
    wait_until(Duration::from_secs(10), "the alert resolved", || {
        alert_statuses(dir).len() == 2
    });
    assert_eq!(alert_statuses(dir), ["firing", "resolved"]);
}
