//! The `alert` transform in the real binary: readings POSTed to HTTP ingest, alerts
//! written by a file sink. A reading that flaps across its threshold makes one `firing`
//! and one `resolved`, `for_secs` and `resolve_after_secs` hold in seconds, a host
//! killed between the two still resolves (and fires no second time), and the admin
//! page in headless Chromium shows the firing alert with its labels.

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

/// HTTP ingest → `overheating` (an alert stage) → the `alerts` file sink.
fn alerting(ingest: u16, for_secs: u64, resolve_after_secs: u64) -> Pipeline {
    Pipeline::start(&format!(
        r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[transforms.overheating]
type = "alert"
inputs = ["ingest"]
when = {{ field = "temperature", gt = 80 }}
key = "device_id"
value = "temperature"
labels = {{ severity = "page" }}
for_secs = {for_secs}
resolve_after_secs = {resolve_after_secs}
check_interval_ms = 100

[sinks.alerts]
type = "file"
inputs = ["overheating"]
path = "alerts"
"#
    ))
}

/// POST one reading of `gw1`; it is taken once the alert stage has stored what it did.
fn reading(ingest: u16, temperature: f64) {
    let body = format!(r#"{{"device_id": "gw1", "temperature": {temperature}}}"#);
    let (status, answer) = http_post(ingest, "/ingest", &[], body.as_bytes());
    assert_eq!(status, 200, "{answer}");
}

fn alerts(pipeline: &Pipeline) -> Vec<Value> {
    read_lines(&pipeline.data("alerts"))
}

fn statuses(alerts: &[Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|alert| alert["status"].as_str().unwrap())
        .collect()
}

#[test]
fn a_flapping_reading_fires_once_after_for_and_resolves_once_after_resolve_after() {
    let ingest = free_port();
    let pipeline = alerting(ingest, 2, 2);
    let started = Instant::now();
    let mut hot = Vec::new();
    let mut fired_after = None;
    // Three seconds hot, three flapping across the threshold every 200 ms.
    for step in 0..30 {
        let temperature = if step < 15 || step % 2 == 0 {
            85.0 + step as f64 / 10.0
        } else {
            75.0
        };
        reading(ingest, temperature);
        if temperature > 80.0 {
            hot.push((temperature, Instant::now()));
        }
        if fired_after.is_none() && !alerts(&pipeline).is_empty() {
            fired_after = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let fired_after = fired_after.expect("the alert fired while the reading was hot");
    assert!(
        fired_after >= Duration::from_secs(2) && fired_after < Duration::from_millis(3500),
        "fires `for_secs` after the first hot reading: {fired_after:?}"
    );
    // Then cool: it resolves two seconds after the last hot reading.
    let (last_hot, last_hot_at) = *hot.last().unwrap();
    let resolved_after = loop {
        reading(ingest, 70.0);
        if alerts(&pipeline).len() >= 2 {
            break last_hot_at.elapsed();
        }
        assert!(
            last_hot_at.elapsed() < Duration::from_secs(10),
            "no resolve"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        resolved_after >= Duration::from_millis(1800)
            && resolved_after < Duration::from_millis(3500),
        "resolves `resolve_after_secs` after the last hot reading: {resolved_after:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let alerts = alerts(&pipeline);
    assert_eq!(statuses(&alerts), ["firing", "resolved"], "{alerts:?}");
    let resolved = &alerts[1];
    assert_eq!(resolved["alert"], "overheating");
    assert_eq!(resolved["key"], "gw1");
    assert_eq!(
        resolved["labels"],
        serde_json::json!({"device_id": "gw1", "severity": "page"})
    );
    assert_eq!(resolved["first_value"], 85.0);
    assert_eq!(resolved["last_value"], last_hot);
    assert_eq!(
        resolved["count"],
        hot.len(),
        "every hot reading counted, none sent"
    );
    assert_eq!(alerts[0]["starts_at"], resolved["starts_at"]);
    assert_eq!(alerts[0]["ends_at"], Value::Null);
    assert!(resolved["ends_at"].as_str().unwrap() > resolved["starts_at"].as_str().unwrap());
}

#[test]
fn a_host_killed_while_an_alert_fires_resolves_it_after_the_restart_and_shows_it_meanwhile() {
    let ingest = free_port();
    let mut pipeline = alerting(ingest, 0, 6);
    // Taken (200) only once the `firing` it made is written and the stage's state stored.
    reading(ingest, 90.0);
    assert_eq!(statuses(&alerts(&pipeline)), ["firing"]);
    pipeline.kill_9();
    pipeline.restart();
    // Still firing after the restart: a hot reading is no news.
    reading(ingest, 91.0);

    let url = format!("http://127.0.0.1:{}/admin", pipeline.host.api_port);
    let dump = chromium(&["--dump-dom"], &url);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dom = String::from_utf8_lossy(&dump.stdout);
    let firing = dom
        .split("id=\"firing\"")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .unwrap_or_else(|| panic!("no firing table:\n{dom}"));
    for shown in [
        "<td>overheating</td>",
        "<td>gw1</td>",
        "device_id=gw1, severity=page",
        "<td>2</td>",
    ] {
        assert!(
            firing.contains(shown),
            "the firing alert shows {shown}:\n{firing}"
        );
    }

    wait_until(
        Duration::from_secs(15),
        "the resolve after the restart",
        || alerts(&pipeline).len() >= 2,
    );
    std::thread::sleep(Duration::from_secs(1));
    let alerts = alerts(&pipeline);
    assert_eq!(statuses(&alerts), ["firing", "resolved"], "{alerts:?}");
    assert_eq!(
        (
            alerts[1]["first_value"].as_f64(),
            alerts[1]["last_value"].as_f64()
        ),
        (Some(90.0), Some(91.0))
    );
    assert_eq!(alerts[1]["count"], 2);
}
