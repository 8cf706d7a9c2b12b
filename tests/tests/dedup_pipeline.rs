//! `dedup` under `kill -9`, against a real Mosquitto: every seq is published twice (the
//! second pass after the first), the host is killed mid-stream and restarted, and what
//! reaches the file sink is the distinct input: none missing, and at most the one batch
//! in flight at the kill twice. The seen identities are state the dedup call writes;
//! they are committed only once the call's outputs are stored, and the source
//! acknowledges only after that.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;

const DISTINCT: u64 = 5_000;
/// The source's `batch_size`: one dedup call.
const BATCH: usize = 20;

#[test]
fn a_killed_host_loses_nothing_through_dedup_and_repeats_at_most_one_batch() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let out = dir.path().join("out");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"

[plugins.dedup]
path = "{dedup}"

[sources.in]
type = "mqtt"
url = "{url}"
topics = ["e2e/#"]
client_id = "sluice-e2e-dedup"
batch_size = 20

[transforms.once]
type = "wasm"
plugin = "dedup"
inputs = ["in"]
config = {{ field = "seq" }}

[sinks.out]
type = "file"
inputs = ["once"]
path = "{out}"
"#,
            data = dir.path().join("data").display(),
            dedup = plugin("dedup"),
            url = broker.url(),
            out = out.display(),
        ),
    )
    .unwrap();
    let subscribed = |host: &Host| {
        wait_until(Duration::from_secs(30), "the subscription", || {
            let log = host.log_text();
            log.contains("subscribed") || log.contains("session_present=true")
        })
    };
    let host = Host::start(&config, api, Stdio::null());
    subscribed(&host);
    let port = broker.port;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            publish(
                port,
                "e2e/telemetry",
                0..2 * DISTINCT,
                |n| payload(n % DISTINCT, 120),
                0,
                || (),
            )
        });
        wait_until(Duration::from_secs(60), "the first events on disk", || {
            read_lines(&out).len() > 1_500
        });
        host.kill_9();
        let at_kill = read_lines(&out).len();
        assert!(
            (at_kill as u64) < DISTINCT,
            "the stream was over before the kill"
        );
    });
    let restarted = Host::start(&config, api, Stdio::null());
    subscribed(&restarted);
    wait_until(Duration::from_secs(120), "every distinct seq", || {
        seq_counts(&read_lines(&out)).len() as u64 >= DISTINCT
    });
    // Let anything redelivered after the last first arrival come in too.
    std::thread::sleep(Duration::from_secs(2));
    let counts = seq_counts(&read_lines(&out));
    assert_eq!(counts.len() as u64, DISTINCT, "every seq");
    // The one batch between the sink's write and the commit of what dedup saw may pass
    // again after the kill (nothing can make a file write and a state commit one
    // atomic step); more than one batch would mean state ran ahead of or behind the
    // outputs.
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        twice.len() <= BATCH,
        "{} seqs passed dedup twice, more than one batch: {twice:?}",
        twice.len()
    );
    let at_most_twice = counts.values().all(|n| *n <= 2);
    assert!(at_most_twice, "no seq passed three times");
}
