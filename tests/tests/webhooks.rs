//! The `http` sink against a real receiver: rendered bodies and secret headers, a
//! refusal dead-lettered with the receiver's answer, `Retry-After` waited out, an outage
//! of 30 s waited out in order, and the alerting examples in the shapes their APIs take.

mod harness;

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::receiver::{Receiver, Request};
use harness::*;
use serde_json::Value;

/// The examples' alert events: gw1 and gw2 firing, then gw1 resolved.
const ALERTS: &str = include_str!("../../examples/alerting/alerts.jsonl");

/// Dead letters written by the pipeline so far.
fn dead_letters(pipeline: &HttpPipeline) -> Vec<Value> {
    read_lines(&pipeline.data("dead_letter"))
}

#[test]
fn alerts_are_posted_rendered_with_secret_headers_and_a_refusal_is_a_dead_letter() {
    let receiver = Receiver::start();
    receiver.answer(200, &[], "");
    receiver.answer(400, &[], r#"{"error":"unknown integration"}"#);
    let stages = format!(
        r#"
[sinks.hook]
type = "http"
inputs = ["ingest"]
url = "{url}"
headers = {{ X-Api-Key = "${{HOOK_SECRET}}" }}
body = '{{"text": "{{{{alert}}}} on {{{{key}}}} is {{{{status}}}}", "count": {{{{count}}}}}}'
"#,
        url = receiver.url("/hook")
    );
    let env = [("HOOK_SECRET", OsStr::new("k3y"))];
    let pipeline = HttpPipeline::start_env("", &stages, Stdio::null(), &env);
    let (status, _) = pipeline.post("/ingest", &[], ALERTS.as_bytes());
    assert_eq!(status, 200, "{}", pipeline.host.log_text());

    let requests = receiver.requests();
    let bodies: Vec<Value> = requests.iter().map(Request::json).collect();
    assert_eq!(
        bodies,
        [
            serde_json::json!({"text": "overheating on gw1 is firing", "count": 3}),
            serde_json::json!({"text": "overheating on gw2 is firing", "count": 2}),
            serde_json::json!({"text": "overheating on gw1 is resolved", "count": 9}),
        ]
    );
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/hook")
        );
        assert_eq!(request.headers["x-api-key"], "k3y");
        assert_eq!(request.headers["content-type"], "application/json");
    }
    wait_until(Duration::from_secs(10), "the dead letter", || {
        !dead_letters(&pipeline).is_empty()
    });
    let dead = dead_letters(&pipeline);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]["reason"],
        format!(
            r#"HTTP 400 from http://127.0.0.1:{}: {{"error":"unknown integration"}}"#,
            receiver.port
        )
    );
    assert_eq!(dead[0]["stage"], "hook");
    assert_eq!(dead[0]["payload"], ALERTS.lines().nth(1).unwrap());
}

#[test]
fn a_429_with_retry_after_is_waited_out() {
    let receiver = Receiver::start();
    receiver.answer(429, &[("Retry-After", "2")], "slow down");
    let stages = format!(
        "[sinks.hook]\ntype = \"http\"\ninputs = [\"ingest\"]\nurl = \"{}\"",
        receiver.url("/hook")
    );
    let pipeline = HttpPipeline::start("", &stages, Stdio::null());
    let line = ALERTS.lines().next().unwrap();
    assert_eq!(pipeline.post("/ingest", &[], line.as_bytes()).0, 200);
    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = requests[1].at - requests[0].at;
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(requests[1].body, line);
    assert!(dead_letters(&pipeline).is_empty());
}

/// Alert `seq` of the outage test, for one of four keys.
fn alert(seq: u64) -> String {
    format!(
        r#"{{"alert":"overheating","status":"firing","key":"gw{}","seq":{seq}}}"#,
        seq % 4
    )
}

fn alerts(seqs: std::ops::Range<u64>) -> Vec<u8> {
    seqs.map(|seq| alert(seq) + "\n")
        .collect::<String>()
        .into_bytes()
}

#[test]
fn every_alert_arrives_in_order_after_the_receiver_was_down_for_30_s() {
    let mut receiver = Receiver::start();
    let stages = format!(
        r#"
[sinks.hook]
type = "http"
inputs = ["ingest"]
url = "{}"
timeout_secs = 5
max_backoff_secs = 2
"#,
        receiver.url("/hook")
    );
    // Each POST is answered once its alerts are delivered, after the outage.
    let pipeline = HttpPipeline::start("delivery_timeout_ms = 120000", &stages, Stdio::null());
    assert_eq!(pipeline.post("/ingest", &[], &alerts(0..10)).0, 200);
    receiver.accepted(10, Duration::from_secs(10));

    receiver.stop();
    let down = Instant::now();
    let ingest = pipeline.ingest;
    let first = std::thread::spawn(move || http_post(ingest, "/ingest", &[], &alerts(10..25)));
    std::thread::sleep(Duration::from_secs(1));
    let second = std::thread::spawn(move || http_post(ingest, "/ingest", &[], &alerts(25..40)));
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    assert!(receiver.requests().len() == 10, "the receiver was down");
    receiver.restart();

    assert_eq!(first.join().unwrap().0, 200, "{}", pipeline.host.log_text());
    assert_eq!(second.join().unwrap().0, 200);
    let accepted = receiver.accepted(40, Duration::from_secs(30));
    let seqs: Vec<u64> = accepted
        .iter()
        .map(|request| request.json()["seq"].as_u64().unwrap())
        .collect();
    // Every alert once, in the order sent (and so in order per key).
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    assert_eq!(receiver.requests().len(), 40, "nothing sent twice");
    assert!(dead_letters(&pipeline).is_empty());
    assert!(
        pipeline.host.log_text().contains("write failed, retrying"),
        "the outage was retried"
    );
}

/// The pipeline of example `name` (`examples/alerting/NAME.toml`) fed by HTTP ingest,
/// with `env` for its variables; the three example alerts posted.
fn run_example(name: &str, env: &[(&str, &OsStr)]) -> HttpPipeline {
    let path = format!(
        "{}/../examples/alerting/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let sink = std::fs::read_to_string(path).unwrap();
    let sink = sink.replace(r#"inputs = ["alerts"]"#, r#"inputs = ["ingest"]"#);
    let pipeline = HttpPipeline::start_env("", &sink, Stdio::null(), env);
    let (status, body) = pipeline.post("/ingest", &[], ALERTS.as_bytes());
    assert_eq!(status, 200, "{body}: {}", pipeline.host.log_text());
    assert!(
        dead_letters(&pipeline).is_empty(),
        "the receiver refused: {:?}",
        dead_letters(&pipeline)
    );
    pipeline
}

/// `text` is an RFC 3339 date-time (`2026-05-01T10:00:00Z`, `...+02:00`).
fn is_date_time(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(10).is_some_and(|t| matches!(t, b'T' | b't'))
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && (text.ends_with('Z') || text.get(19..).is_some_and(|zone| zone.contains(['+', '-'])))
}

fn string(value: &Value, what: &str) -> Result<String, String> {
    match value.as_str() {
        Some(text) if !text.is_empty() => Ok(text.to_owned()),
        _ => Err(format!("`{what}` must be a non-empty string, not {value}")),
    }
}

fn string_map(value: &Value, what: &str) -> Result<(), String> {
    let map = value
        .as_object()
        .ok_or(format!("`{what}` must be an object"))?;
    match map.iter().find(|(_, v)| !v.is_string()) {
        Some((name, v)) => Err(format!("`{what}.{name}` must be a string, not {v}")),
        None => Ok(()),
    }
}

/// Alertmanager's `postableAlerts` (API v2): an array of alerts with string `labels`
/// (required, not empty) and `annotations`, date-times `startsAt` and `endsAt`, a
/// `generatorURL`.
fn alertmanager_shape(request: &Request) -> Result<(), String> {
    if request.method != "POST" || request.path != "/api/v2/alerts" {
        return Err(format!("no route {} {}", request.method, request.path));
    }
    let body: Value = serde_json::from_str(&request.body).map_err(|e| e.to_string())?;
    let alerts = body
        .as_array()
        .ok_or("the body must be an array of alerts")?;
    for alert in alerts {
        string_map(&alert["labels"], "labels")?;
        if alert["labels"]
            .as_object()
            .is_none_or(|labels| labels.is_empty())
        {
            return Err("`labels` must not be empty".into());
        }
        string_map(&alert["annotations"], "annotations")?;
        for time in ["startsAt", "endsAt"] {
            if !alert[time].is_null() && !is_date_time(&alert[time]) {
                return Err(format!("`{time}` must be a date-time, not {}", alert[time]));
            }
        }
        if !string(&alert["generatorURL"], "generatorURL")?.starts_with("http") {
            return Err("`generatorURL` must be a URI".into());
        }
    }
    Ok(())
}

#[test]
fn the_alertmanager_example_posts_alerts_as_its_api_takes_them() {
    let receiver = Receiver::start();
    receiver.check(alertmanager_shape);
    let url = receiver.url("/api/v2/alerts");
    let pipeline = run_example("alertmanager", &[("ALERTMANAGER_URL", OsStr::new(&url))]);
    let alerts: Vec<Value> = (receiver.requests().iter())
        .flat_map(|request| request.json().as_array().unwrap().clone())
        .collect();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["alertname"], "overheating");
    assert_eq!(alerts[1]["labels"]["device_id"], "gw2");
    assert_eq!(alerts[0]["startsAt"], "2026-05-01T10:00:00Z");
    // Firing: open-ended. Resolved: ended.
    assert!(alerts[0]["endsAt"].is_null() && alerts[1]["endsAt"].is_null());
    assert_eq!(alerts[2]["endsAt"], "2026-05-01T10:06:00Z");
    assert_eq!(
        alerts[2]["labels"], alerts[0]["labels"],
        "one alert, resolved"
    );
    drop(pipeline);
}

/// A Slack incoming webhook's message: `text`, and `blocks` whose sections hold
/// `mrkdwn` or `plain_text` text objects of at most 3000 characters.
fn slack_shape(request: &Request) -> Result<(), String> {
    let body: Value = serde_json::from_str(&request.body).map_err(|e| e.to_string())?;
    string(&body["text"], "text")?;
    for block in body["blocks"]
        .as_array()
        .ok_or("`blocks` must be an array")?
    {
        string(&block["type"], "blocks[].type")?;
        if block["type"] == "section" {
            let text = &block["text"];
            if !matches!(text["type"].as_str(), Some("mrkdwn" | "plain_text")) {
                return Err(format!("a section's text type is {}", text["type"]));
            }
            if string(&text["text"], "text.text")?.chars().count() > 3000 {
                return Err("a section's text is over 3000 characters".into());
            }
        }
    }
    Ok(())
}

#[test]
fn the_slack_example_posts_messages_as_incoming_webhooks_take_them() {
    let receiver = Receiver::start();
    receiver.check(slack_shape);
    let url = receiver.url("/services/T000/B000/XXXX");
    let _pipeline = run_example("slack", &[("SLACK_WEBHOOK_URL", OsStr::new(&url))]);
    let messages: Vec<Value> = receiver.requests().iter().map(Request::json).collect();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[0]["text"],
        ":red_circle: overheating on gw1 is firing: 91.0"
    );
    assert_eq!(
        messages[2]["text"],
        ":large_green_circle: overheating on gw1 is resolved: 72.4"
    );
    let section = messages[2]["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        section.starts_with("*overheating* is *resolved* on `gw1`\nlast value 72.4"),
        "{section}"
    );
}

const ROUTING_KEY: &str = "R0123456789ABCDEF0123456789ABCDE";

/// PagerDuty Events API v2 (`/v2/enqueue`): `routing_key`, `event_action`, `dedup_key`
/// (required to resolve, at most 255 characters) and, to trigger, a `payload` with
/// `summary` (at most 1024), `source`, `severity` (critical, error, warning or info), an
/// optional `timestamp` date-time and an optional `custom_details` object.
fn pagerduty_shape(request: &Request) -> Result<(), String> {
    if request.path != "/v2/enqueue" || request.headers["content-type"] != "application/json" {
        return Err("POST JSON to /v2/enqueue".into());
    }
    let body: Value = serde_json::from_str(&request.body).map_err(|e| e.to_string())?;
    if body["routing_key"] != ROUTING_KEY {
        return Err(format!("unknown routing_key {}", body["routing_key"]));
    }
    let dedup_key = body["dedup_key"].as_str().unwrap_or_default();
    if dedup_key.chars().count() > 255 {
        return Err("`dedup_key` is over 255 characters".into());
    }
    match body["event_action"].as_str() {
        Some("trigger") => {}
        Some("acknowledge" | "resolve") if !dedup_key.is_empty() => return Ok(()),
        other => return Err(format!("`event_action` {other:?} (or no dedup_key)")),
    }
    let payload = &body["payload"];
    if string(&payload["summary"], "payload.summary")?
        .chars()
        .count()
        > 1024
    {
        return Err("`payload.summary` is over 1024 characters".into());
    }
    string(&payload["source"], "payload.source")?;
    let severity = string(&payload["severity"], "payload.severity")?;
    if !["critical", "error", "warning", "info"].contains(&severity.as_str()) {
        return Err(format!("`payload.severity` {severity}"));
    }
    if !payload["timestamp"].is_null() && !is_date_time(&payload["timestamp"]) {
        return Err(format!("`payload.timestamp` {}", payload["timestamp"]));
    }
    if !payload["custom_details"].is_null() && !payload["custom_details"].is_object() {
        return Err("`payload.custom_details` must be an object".into());
    }
    Ok(())
}

#[test]
fn the_pagerduty_example_triggers_and_resolves_as_events_v2_takes_them() {
    let receiver = Receiver::start();
    receiver.check(pagerduty_shape);
    let url = receiver.url("/v2/enqueue");
    let env = [
        ("PAGERDUTY_URL", OsStr::new(&url)),
        ("PAGERDUTY_ROUTING_KEY", OsStr::new(ROUTING_KEY)),
    ];
    let _pipeline = run_example("pagerduty", &env);
    let events: Vec<Value> = receiver.requests().iter().map(Request::json).collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "resolve"]);
    assert_eq!(events[0]["dedup_key"], "overheating/gw1");
    assert_eq!(events[2]["dedup_key"], events[0]["dedup_key"]);
    assert_eq!(events[0]["payload"]["severity"], "critical");
    assert_eq!(
        events[0]["payload"]["custom_details"]["labels"]["site"],
        "north"
    );
    assert_eq!(events[0]["payload"]["custom_details"]["last_value"], 91.0);
}
