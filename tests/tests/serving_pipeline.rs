//! Serving tables from a running host: 10,000 keys written through the pipeline are
//! each readable with their latest value, and still after a restart; the last N per
//! key; keys under a prefix; tokens per table (401 without, 403 with another); unknown
//! tables and keys as 404 with a JSON error; an event without its key dead-lettered;
//! PostgreSQL: two hosts on one table, the embedded backend's history for events out of
//! order, an unreadable row as a 500 naming its key.

mod harness;

use std::time::Duration;

use harness::kafka::{GROUP_OPTIONS, Tansu};
use harness::postgres::Postgres;
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
public = true
write_tokens = ["writer-secret"]

[sinks.fleeting]
type = "serving"
inputs = ["ingest"]
table = "fleeting"
key = "device_id"
ttl_secs = 1
public = true

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

    // Writes over the API need a write token of the table.
    let put = |path: &str, token: Option<&str>| {
        let header = token.map(|t| format!("Authorization: Bearer {t}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        http_put(api, path, &headers, br#"{"note":"set by hand"}"#).0
    };
    assert_eq!(put("/v1/tables/history/keys/manual", None), 401);
    assert_eq!(
        put("/v1/tables/history/keys/manual", Some("reader-secret")),
        403
    );
    assert_eq!(
        put("/v1/tables/devices/keys/manual", Some("writer-secret")),
        403,
        "no write tokens"
    );
    assert_eq!(
        put("/v1/tables/history/keys/manual", Some("writer-secret")),
        204
    );
    let (_, manual) = get(api, "/v1/tables/history/keys/manual", None);
    assert_eq!(
        manual["values"][0]["value"]["note"], "set by hand",
        "{manual}"
    );

    // Values past their TTL are no longer served.
    let (status, _) = http_post(ingest, "/ingest", &[], reading(KEYS + 1, 9).as_bytes());
    assert_eq!(status, 200);
    let (status, _) = get(api, "/v1/tables/fleeting/keys/dev-10001", None);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(1_500));
    let (status, _) = get(api, "/v1/tables/fleeting/keys/dev-10001", None);
    assert_eq!(status, 404, "expired");

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

#[test]
fn updates_stream_as_server_sent_events_and_no_generated_request_gets_a_5xx() {
    use std::io::{BufRead, BufReader, Write};
    let ingest = free_port();
    let host = pipeline(ingest);
    let api = host.host.api_port;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /v1/tables/history/events HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
    let status = lines.next().unwrap().unwrap();
    assert!(status.contains(" 200 "), "{status}");
    // The stream is open once its headers are in.
    for line in lines.by_ref() {
        if line.unwrap().is_empty() {
            break;
        }
    }
    let (code, _) = http_post(
        ingest,
        "/ingest",
        &[],
        [reading(7, 1), reading(8, 1)].join("\n").as_bytes(),
    );
    assert_eq!(code, 200);
    let mut updates = Vec::new();
    for line in lines {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            updates.push(serde_json::from_str::<serde_json::Value>(data).unwrap());
            if updates.len() == 2 {
                break;
            }
        }
    }
    let keys: Vec<&str> = updates.iter().map(|u| u["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["dev-00007", "dev-00008"]);
    assert_eq!(updates[0]["value"]["value"]["round"], 1);

    // schemathesis (PyPI) generates requests from the OpenAPI document the host serves.
    let base = format!("http://127.0.0.1:{api}");
    let run = std::process::Command::new("python3")
        .args([
            "-m",
            "schemathesis.cli",
            "run",
            &format!("{base}/v1/openapi.json"),
        ])
        .args([
            "--base-url",
            &base,
            "--checks",
            "not_a_server_error,status_code_conformance",
        ])
        .args(["--hypothesis-max-examples", "100", "--hypothesis-seed", "1"])
        .output()
        .expect("python3 with schemathesis: run scripts/setup");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn two_hosts_writing_one_postgresql_table_serve_one_consistent_table() {
    let postgres = Postgres::start();
    let host = |ingest: u16| {
        Pipeline::start(&format!(
            r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[sinks.latest]
type = "serving"
inputs = ["ingest"]
table = "shared"
key = "device_id"
keep = 2
public = true
postgres = "{}"
"#,
            postgres.connection()
        ))
    };
    let (ingest_a, ingest_b) = (free_port(), free_port());
    let (a, b) = (host(ingest_a), host(ingest_b));
    // Both hosts write every key, alternating rounds: 0 and 2 through A, 1 and 3 through B.
    let post = |port: u16, round: u64| {
        let lines: Vec<String> = (0..1_000).map(|device| reading(device, round)).collect();
        let (status, answer) = http_post(port, "/ingest", &[], lines.join("\n").as_bytes());
        assert_eq!(status, 200, "{answer}");
    };
    for round in 0..4 {
        post(if round % 2 == 0 { ingest_a } else { ingest_b }, round);
    }
    assert_eq!(
        postgres.query("SELECT count(*) FROM sluice_serving_shared"),
        "1000"
    );
    for api in [a.host.api_port, b.host.api_port] {
        for device in (0..1_000).step_by(37) {
            let (status, body) = get(
                api,
                &format!("/v1/tables/shared/keys/dev-{device:05}"),
                None,
            );
            assert_eq!(status, 200, "{body}");
            let rounds: Vec<&serde_json::Value> = body["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| &v["value"]["round"])
                .collect();
            assert_eq!(
                rounds,
                [3, 2],
                "both hosts serve the same newest two: {body}"
            );
        }
        let (_, listed) = get(api, "/v1/tables/shared/keys?prefix=dev-0099&limit=20", None);
        assert_eq!(listed["keys"].as_array().unwrap().len(), 10);
    }
}

/// `[sinks.NAME]` writing public table NAME, keyed on `device_id`, in PostgreSQL when
/// `postgres` is a connection string.
fn serving_sink(name: &str, keep: usize, postgres: Option<&str>) -> String {
    let backend = postgres.map_or(String::new(), |pg| format!("postgres = \"{pg}\"\n"));
    format!(
        "[sinks.{name}]\ntype = \"serving\"\ninputs = [\"in\"]\ntable = \"{name}\"\n\
         key = \"device_id\"\nkeep = {keep}\npublic = true\n{backend}"
    )
}

/// The (n, timestamp_ms) of each value of `key` in `table`, as served.
fn history(api: u16, table: &str, key: &str) -> Vec<(u64, i64)> {
    let (status, body) = get(api, &format!("/v1/tables/{table}/keys/{key}"), None);
    assert_eq!(status, 200, "{table}/{key}: {body}");
    body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let n = v["value"]["n"].as_u64().unwrap();
            (n, v["timestamp_ms"].as_i64().unwrap())
        })
        .collect()
}

#[test]
fn events_out_of_order_keep_the_same_history_in_postgresql_as_in_the_embedded_table() {
    let postgres = Postgres::start();
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    let pg = postgres.connection();
    let host = Pipeline::start(&format!(
        "[sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"{}\"\ngroup_id = \"serving\"\n\
         topics = [\"readings\"]\n{GROUP_OPTIONS}\n{}{}{}{}",
        tansu.bootstrap(),
        serving_sink("embedded_last", 1, None),
        serving_sink("embedded_three", 3, None),
        serving_sink("postgres_last", 1, Some(&pg)),
        serving_sink("postgres_three", 3, Some(&pg)),
    ));
    // Record times in seconds after `T`, in the order produced: `a` comes out of order
    // (and twice at 4 s), `b` in order but for a late oldest one; `done` comes last.
    const T: i64 = 1_795_948_920_000;
    let produced = [
        ("a", 5),
        ("a", 1),
        ("b", 1),
        ("a", 3),
        ("b", 2),
        ("a", 4),
        ("b", 3),
        ("a", 2),
        ("a", 4),
        ("b", 0),
        ("done", 9),
    ];
    tansu.produce_at(
        "readings",
        produced.iter().enumerate().map(|(n, (device, secs))| {
            let payload = format!(r#"{{"device_id":"{device}","n":{n}}}"#);
            (device.to_string(), payload.into_bytes(), T + secs * 1000)
        }),
    );
    let api = host.host.api_port;
    let tables = [
        "embedded_last",
        "embedded_three",
        "postgres_last",
        "postgres_three",
    ];
    wait_until(
        Duration::from_secs(60),
        "every table to hold `done`",
        || {
            tables
                .iter()
                .all(|table| get(api, &format!("/v1/tables/{table}/keys/done"), None).0 == 200)
        },
    );
    let at = |secs: i64| T + secs * 1000;
    let expected: [(&str, Vec<(u64, i64)>); 2] = [
        // Newest first; of the two at 4 s, the later write (n = 8) first.
        ("a", vec![(0, at(5)), (8, at(4)), (5, at(4))]),
        ("b", vec![(6, at(3)), (4, at(2)), (2, at(1))]),
    ];
    for (key, last_three) in expected {
        assert_eq!(history(api, "embedded_three", key), last_three, "{key}");
        assert_eq!(
            history(api, "postgres_three", key),
            last_three,
            "PostgreSQL keeps what the embedded table keeps: {key}"
        );
        assert_eq!(history(api, "embedded_last", key), last_three[..1], "{key}");
        assert_eq!(history(api, "postgres_last", key), last_three[..1], "{key}");
    }
}

#[test]
fn a_postgresql_row_that_cannot_be_read_is_a_server_error_naming_its_key() {
    let postgres = Postgres::start();
    let ingest = free_port();
    let host = Pipeline::start(&format!(
        "[sources.in]\ntype = \"http\"\nlisten = \"127.0.0.1:{ingest}\"\n{}",
        serving_sink("stored", 2, Some(&postgres.connection()))
    ));
    let body = "{\"device_id\":\"dev-1\",\"n\":1}\n{\"device_id\":\"dev-2\",\"n\":2}";
    let (status, answer) = http_post(ingest, "/ingest", &[], body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let api = host.host.api_port;
    assert_eq!(history(api, "stored", "dev-1").len(), 1);
    // A row damaged outside the host: JSON, but not a list of values.
    postgres.query(
        r#"UPDATE sluice_serving_stored SET vals = '{"not": "a list"}' WHERE key = 'dev-1'"#,
    );

    let (status, body) = get(api, "/v1/tables/stored/keys/dev-1", None);
    assert_eq!(status, 500, "not an absent or empty key: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("the stored values of key `dev-1`"), "{body}");
    let (status, body) = get(api, "/v1/tables/stored/keys?prefix=dev-", None);
    assert_eq!(status, 500, "a listing does not skip it: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`dev-1`"),
        "{body}"
    );
    let others: Vec<u64> = history(api, "stored", "dev-2")
        .iter()
        .map(|v| v.0)
        .collect();
    assert_eq!(others, [2], "the other keys are served");
}
