//! The admin page's jobs in a real browser (Debian's Chromium, headless, driven with the
//! mouse): `extract` succeeds every 2 s and `load`, after it, fails until a file exists.
//! The page shows both with their schedules, `load`'s failed run and its log; pausing
//! `extract` and retrying the failed run once the file is there makes it succeeded.

mod harness;

use std::time::Duration;

use harness::browser::Browser;
use harness::*;

const TOKEN: &str = "jobs-admin-token";
const WAIT: Duration = Duration::from_secs(30);

/// The text of the cells of `job`'s row in the jobs table.
fn row(page: &mut Browser, job: &str) -> Option<Vec<String>> {
    let rows = page.eval(
        "[...document.querySelectorAll('#job-table tr')].slice(1)
            .map((row) => [...row.cells].map((cell) => cell.textContent))",
    );
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    rows.into_iter().find(|row| row[0] == job)
}

#[test]
fn the_admin_page_shows_jobs_their_runs_and_logs_and_retries_a_failed_run() {
    // `admin_token` goes on in the harness's `[api]`; the jobs run beside a pipeline, as
    // on a central host.
    let host = Pipeline::start(&format!(
        r#"admin_token = "{TOKEN}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[sinks.ingested]
type = "file"
inputs = ["ingest"]
path = "ingested"

[jobs.extract]
type = "command"
every = "2s"
command = "sh"
args = ["-c", "echo extracted {{slot_end}}"]

[jobs.load]
type = "command"
depends_on = ["extract"]
retries = 0
command = "sh"
args = ["-c", "test -e ok || {{ echo 'load: ok is missing' >&2; exit 1; }}"]
"#,
        ingest = free_port()
    ));
    let api = host.host.api_port;
    let bearer = format!("Authorization: Bearer {TOKEN}");
    for path in ["/admin", "/v1/jobs", "/v1/jobs/load/runs"] {
        let (status, _) = http_get(api, path).unwrap();
        assert_eq!(status, 401, "{path} without the admin token");
        assert_eq!(
            http_get_with(api, path, &[&bearer]).unwrap().0,
            200,
            "{path}"
        );
    }
    assert_eq!(http_post(api, "/v1/jobs/load/retry", &[], b"").0, 401);

    let mut page = Browser::open(&format!("http://127.0.0.1:{api}/admin"), Some(TOKEN));
    wait_until(WAIT, "both jobs drawn", || row(&mut page, "load").is_some());
    let extract = row(&mut page, "extract").unwrap();
    assert_eq!(extract[1..3], ["command", "every 2s"], "{extract:?}");
    assert!(extract[3].contains("(in "), "the next run: {extract:?}");
    assert_eq!(extract[4], "scheduled");
    let load = row(&mut page, "load").unwrap();
    assert_eq!(load[2], "after extract (every 2s)");

    // A failed run with its status written out, and its log a click away.
    let failed = r#"#job-table button[data-key^="load "][data-status="failed"]"#;
    wait_until(WAIT, "a failed run of load", || {
        page.text(failed) == "failed"
    });
    page.click(r#"button[data-key="extract Pause"]"#);
    wait_until(WAIT, "extract paused", || {
        row(&mut page, "extract").is_some_and(|row| row[4] == "paused")
    });
    page.click(failed);
    wait_until(WAIT, "the failed run's log", || {
        page.text("#run-log").contains("load: ok is missing")
    });
    assert!(page.text("#run-title").contains("failed"));
    let slot = page.eval(&format!(
        "document.querySelector({}).dataset.slot",
        serde_json::json!(format!("{failed}[aria-pressed=true]"))
    ));

    // A refusal shows beside the job's buttons: extract has no failed run.
    page.click(r#"button[data-key="extract Retry"]"#);
    wait_until(WAIT, "the refusal", || {
        row(&mut page, "extract").is_some_and(|row| row[6].contains("no failed run to retry"))
    });

    // Retried once the file is there, the selected run succeeds.
    std::fs::write(host.dir.path().join("ok"), "").unwrap();
    page.click(r#"button[data-key="load Retry with downstream"]"#);
    let chip = format!(r#"button[data-key="load {}"]"#, slot.as_str().unwrap());
    wait_until(WAIT, "the retried run succeeded", || {
        page.text(&chip) == "succeeded" && page.text("#run-title").contains("succeeded")
    });
    let log = page.text("#run-log");
    assert!(!log.contains("ok is missing"), "{log}");
}
