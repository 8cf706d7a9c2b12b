//! The HTTP source answers 429 when the pipeline pushes back; a sink whose writes fail
//! retries until they succeed, and nothing is lost meanwhile.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;

fn post(port: u16, body: &str) -> u16 {
    http_post(port, "/ingest", &[], body.as_bytes()).0
}

/// Requests wait for delivery at most this long before the source answers 503.
const SOURCE: &str = "delivery_timeout_ms = 1500";

#[test]
fn http_ingest_answers_429_when_the_pipeline_pushes_back() {
    // Nobody reads the console sink's pipe: once it is full the sink blocks, its channel
    // fills, and the source must refuse rather than queue.
    let sink = "[sinks.screen]\ntype = \"console\"\ninputs = [\"ingest\"]\n";
    let pipeline = HttpPipeline::start(SOURCE, sink, Stdio::piped());
    let ingest = pipeline.ingest;
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
    drop(pipeline);
}

#[test]
fn a_failing_sink_retries_until_its_write_succeeds() {
    let sink =
        "[sinks.out]\ntype = \"file\"\ninputs = [\"ingest\"]\npath = \"out\"\nmax_age_secs = 1\n";
    let pipeline = HttpPipeline::start(SOURCE, sink, Stdio::null());
    let (ingest, host, out) = (pipeline.ingest, &pipeline.host, pipeline.data("out"));
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
