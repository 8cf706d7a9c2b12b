//! The HTTP source answers 429 when the pipeline pushes back; a sink whose writes fail
//! retries until they succeed, and nothing is lost meanwhile.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;

fn post(port: u16, body: &str) -> u16 {
    http_post(port, "/ingest", &[], body.as_bytes()).0
}

fn write_config(dir: &std::path::Path, api: u16, ingest: u16, sink: &str) -> std::path::PathBuf {
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
             [sources.ingest]\ntype = \"http\"\nlisten = \"127.0.0.1:{ingest}\"\ndelivery_timeout_ms = 1500\n{sink}",
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn http_ingest_answers_429_when_the_pipeline_pushes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (api, ingest) = (free_port(), free_port());
    let config = write_config(
        dir.path(),
        api,
        ingest,
        "[sinks.screen]\ntype = \"console\"\ninputs = [\"ingest\"]\n",
    );
    // Nobody reads the console sink's pipe: once it is full the sink blocks, its channel
    // fills, and the source must refuse rather than queue.
    let host = Host::start(&config, api, Stdio::piped());
    let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(2000));
    let body = line.repeat(100);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| post(ingest, &body)))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(statuses.contains(&429), "no 429 among {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 429, 503].contains(s)),
        "{statuses:?}"
    );
    drop(host);
}

#[test]
fn a_failing_sink_retries_until_its_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (api, ingest) = (free_port(), free_port());
    let out = dir.path().join("data/out");
    let sink =
        "[sinks.out]\ntype = \"file\"\ninputs = [\"ingest\"]\npath = \"out\"\nmax_age_secs = 1\n";
    let host = Host::start(
        &write_config(dir.path(), api, ingest, sink),
        api,
        Stdio::null(),
    );
    assert_eq!(post(ingest, "{\"seq\":1}"), 200);
    // Take the directory away: the next write rotates into a new file there and fails.
    std::fs::remove_dir_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let second = std::thread::spawn(move || post(ingest, "{\"seq\":2}"));
    wait_until(Duration::from_secs(10), "a failed write", || {
        host.log_text().contains("write failed, retrying")
    });
    std::fs::create_dir_all(&out).unwrap();
    // The retry lands the event; the client, which waited, is told it was delivered
    // (or, if the wait outlasted its timeout, may retry safely).
    let status = second.join().unwrap();
    assert!([200, 503].contains(&status), "{status}");
    wait_until(Duration::from_secs(10), "the retried event", || {
        seq_counts(&read_lines(&out)).contains_key(&2)
    });
}
