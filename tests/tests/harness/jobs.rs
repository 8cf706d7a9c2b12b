//! A running host's scheduled jobs (`[jobs.NAME]`), as an operator sees them: over the
//! API (`/v1/jobs`) and through `sluice jobs`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{http_get, http_post, sluice_binary, wait_until};

/// `job`'s runs (up to 500), oldest slot first, as `GET /v1/jobs/{job}/runs` lists them.
pub fn runs(api: u16, job: &str) -> Vec<Value> {
    let (status, body) = http_get(api, &format!("/v1/jobs/{job}/runs?limit=500"))
        .unwrap_or_else(|| panic!("the API on port {api} does not answer"));
    assert_eq!(status, 200, "GET /v1/jobs/{job}/runs: {body}");
    let mut runs: Vec<Value> = serde_json::from_str(&body).unwrap();
    runs.reverse();
    runs
}

/// The run of `job`'s slot ending at `slot_end_ms`, if there is one.
pub fn run_of(api: u16, job: &str, slot_end_ms: i64) -> Option<Value> {
    runs(api, job)
        .into_iter()
        .find(|run| run["slot_end_ms"].as_i64() == Some(slot_end_ms))
}

/// The run of `job`'s slot ending at `slot_end_ms` with its log, once it is over
/// (waiting for it to be created, for a job depending on others).
pub fn wait_final(api: u16, job: &str, slot_end_ms: i64, timeout: Duration) -> Value {
    let path = format!("/v1/jobs/{job}/runs/{slot_end_ms}");
    let mut last = Value::Null;
    wait_until(
        timeout,
        &format!("{job}'s run of slot {slot_end_ms} to end"),
        || {
            last = match http_get(api, &path) {
                Some((200, body)) => serde_json::from_str(&body).unwrap(),
                _ => Value::Null,
            };
            !last.is_null() && is_final(&last)
        },
    );
    last
}

/// `POST /v1/jobs/{job}/{action}` (`run`, `retry`, `pause`, `resume`): the answer.
pub fn operate(api: u16, job: &str, action: &str) -> Value {
    let (status, body) = http_post(api, &format!("/v1/jobs/{job}/{action}"), &[], b"");
    assert_eq!(status, 200, "POST /v1/jobs/{job}/{action}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A run's status (`waiting`, `running`, `succeeded`, `skipped`...).
pub fn status(run: &Value) -> &str {
    run["status"].as_str().unwrap_or_default()
}

/// Whether a run is over: neither waiting, running nor retrying.
pub fn is_final(run: &Value) -> bool {
    !matches!(status(run), "waiting" | "running" | "retrying")
}

/// `sluice jobs ARGS --api http://127.0.0.1:API`, which must succeed: what it printed.
pub fn cli(api: u16, args: &[&str]) -> String {
    let output = Command::new(sluice_binary())
        .arg("jobs")
        .args(args)
        .args(["--api", &format!("http://127.0.0.1:{api}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice jobs {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
