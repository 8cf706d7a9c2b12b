//! Serving tables from a running host: 10,000 keys written through the pipeline are
//! each readable with their latest value, and still after a restart; the last N per
//! key; keys under a prefix; tokens per table (401 without, 403 with another); unknown
//! tables and keys as 404 with a JSON error; an event without its key dead-lettered.

mod harness;

use std::time::Duration;

use harness::*;

const KEYS: u64 = 10_000;

fn pipeline(ingest: u16) -> Pipeline {
    Pipeline::start(&format!(
        r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[sinks.latest]
type = "serving"
inputs = ["ingest"]
table = "devices"
key = "device_id"
read_tokens = ["reader-secret"]

[sinks.history]
type = "serving"
inputs = ["ingest"]
table = "history"
key = "device_id"
keep = 3

[sinks.refused]
type = "file"
inputs = ["latest.dead_letter"]
path = "refused"
"#
    ))
}

fn reading(device: u64, round: u64) -> String {
    format!(
        r#"{{"device_id":"dev-{device:05}","round":{round},"temperature":{}}}"#,
        device as f64 + round as f64 / 10.0
    )
}

fn get(api: u16, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    let (status, body) = http_get_with(api, path, &headers).unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn ten_thousand_keys_serve_their_latest_value_across_a_restart_and_tokens_guard_tables() {
    let ingest = free_port();
    let mut host = pipeline(ingest);
    let api = host.host.api_port;
    for round in 0..3 {
        let lines: Vec<String> = (0..KEYS).map(|device| reading(device, round)).collect();
        for chunk in lines.chunks(2_000) {
            let (status, answer) = http_post(ingest, "/ingest", &[], chunk.join("\n").as_bytes());
            assert_eq!(status, 200, "{answer}");
        }
    }
    let (status, _) = http_post(ingest, "/ingest", &[], br#"{"temperature":1.0}"#);
    assert_eq!(status, 200);

    let check_all = |api: u16| {
        for device in 0..KEYS {
            let (status, body) = get(
                api,
                &format!("/v1/tables/devices/keys/dev-{device:05}"),
                Some("reader-secret"),
            );
            assert_eq!(status, 200, "dev-{device:05}: {body}");
            assert_eq!(body["values"][0]["value"]["round"], 2, "the latest: {body}");
            assert_eq!(body["values"].as_array().unwrap().len(), 1);
        }
    };
    check_all(api);
    let (_, history) = get(api, "/v1/tables/history/keys/dev-00042", None);
    let rounds: Vec<&serde_json::Value> = history["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["value"]["round"])
        .collect();
    assert_eq!(rounds, [2, 1, 0], "the last three, newest first");
    let (_, listed) = get(
        api,
        "/v1/tables/devices/keys?prefix=dev-0001&limit=5",
        Some("reader-secret"),
    );
    let keys: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "dev-00010",
            "dev-00011",
            "dev-00012",
            "dev-00013",
            "dev-00014"
        ]
    );

    // Tokens and unknowns.
    let (status, body) = get(api, "/v1/tables/devices/keys/dev-00001", None);
    assert_eq!((status, body["error"].is_string()), (401, true), "{body}");
    let (status, _) = get(
        api,
        "/v1/tables/devices/keys/dev-00001",
        Some("someone-else"),
    );
    assert_eq!(status, 403);
    let (status, body) = get(api, "/v1/tables/nope/keys/dev-00001", None);
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("no table `nope`"),
        "{body}"
    );
    let (status, body) = get(
        api,
        "/v1/tables/devices/keys/dev-99999",
        Some("reader-secret"),
    );
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no key `dev-99999`"),
        "{body}"
    );
    let (status, _) = get(
        api,
        "/v1/tables/devices/keys?limit=many",
        Some("reader-secret"),
    );
    assert_eq!(status, 400);

    // The event without a key is a dead letter with the reason.
    wait_until(Duration::from_secs(10), "the dead letter", || {
        !read_lines(&host.data("refused")).is_empty()
    });
    let letters = read_lines(&host.data("refused"));
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("`device_id`"),
        "{letters:?}"
    );

    // A restart serves what was written before it.
    assert!(host.stop().success());
    host.restart();
    check_all(host.host.api_port);
}
