//! The pipeline against a real Mosquitto: MQTT in, Wasm transforms, files out. At least
//! once end to end: counts are exact in normal operation, and nothing is lost when the
//! broker restarts, when the host is killed, when a plugin traps, or when a sink is slow.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::*;

struct Setup {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    api_port: u16,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_broker(Mosquitto::start())
    }

    fn with_broker(broker: Mosquitto) -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            broker,
            api_port: free_port(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a pipeline config: MQTT `e2e/#` through `transforms` into files at `out/`,
    /// dead letters into `dlq/`. `transforms` is TOML whose last stage is `last`.
    fn config(&self, transforms: &str, last: &str, extra_sinks: &str) -> PathBuf {
        let text = format!(
            r#"
data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"

[plugins.filter]
path = "{filter}"

[plugins.map]
path = "{map}"

[plugins.hostile]
path = "{hostile}"

[sources.in]
type = "mqtt"
url = "{url}"
topics = ["e2e/#"]
client_id = "sluice-e2e-host"

{transforms}

[sinks.out]
type = "file"
inputs = ["{last}"]
path = "{out}"

{extra_sinks}
"#,
            data = self.path("data").display(),
            api = self.api_port,
            filter = plugin("filter"),
            map = plugin("map"),
            hostile = plugin("fixture-hostile"),
            url = self.broker.url(),
            out = self.path("out").display(),
        );
        let path = self.path("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Start the host and wait until its subscription stands (a new session subscribes;
    /// a resumed one has it already): a message published before that has no
    /// subscriber, and the broker drops it.
    fn host(&self, config: &Path) -> Host {
        let host = Host::start(config, self.api_port, Stdio::null());
        wait_until(Duration::from_secs(30), "the subscription", || {
            let log = host.log_text();
            log.contains("subscribed") || log.contains("session_present=true")
        });
        host
    }
}

/// Keep everything (a real predicate, two instances in parallel), then reshape: two
/// Wasm stages.
const FILTER_AND_MAP: &str = r#"
[transforms.keep]
type = "wasm"
plugin = "filter"
inputs = ["in"]
parallelism = 2
config = { when = { field = "seq", gte = 0 } }

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["keep"]
config = { set = { via = "sluice" }, drop = ["pad"] }
"#;

fn telemetry(seq: u64) -> Vec<u8> {
    payload(seq, 160)
}

/// Wait until every seq in `0..n` is in `out/`; return how many arrived twice or more.
fn wait_for_all(setup: &Setup, n: u64, host: Option<&Host>) -> usize {
    let out = setup.path("out");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let counts = seq_counts(&read_lines(&out));
        if (0..n).all(|seq| counts.contains_key(&seq)) {
            return counts.values().filter(|c| **c > 1).count();
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<u64> = (0..n)
                .filter(|s| !counts.contains_key(s))
                .take(10)
                .collect();
            panic!(
                "{} of {n} events missing (first: {missing:?})\n{}",
                (0..n).filter(|s| !counts.contains_key(s)).count(),
                host.map(Host::log_text).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric(metrics: &str, name: &str, stage: &str) -> Option<f64> {
    let prefix = format!("{name}{{stage=\"{stage}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

#[test]
fn a_hundred_thousand_events_arrive_exactly_once() {
    let setup = Setup::new();
    let config = setup.config(FILTER_AND_MAP, "shape", "");
    let host = setup.host(&config);
    publish(
        setup.broker.port,
        "e2e/telemetry",
        0..100_000,
        telemetry,
        0,
        || (),
    );
    let duplicates = wait_for_all(&setup, 100_000, Some(&host));
    assert_eq!(duplicates, 0, "duplicates in normal operation");
    let lines = read_lines(&setup.path("out"));
    assert_eq!(lines.len(), 100_000);
    assert_eq!(lines[0]["via"], "sluice", "the map stage ran");
    assert!(lines[0].get("pad").is_none());
    let metrics = host.metrics();
    assert_eq!(
        metric(&metrics, "sluice_events_in_total", "in"),
        Some(100_000.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sluice_events_out_total", "shape"),
        Some(100_000.0)
    );
    assert_eq!(
        metric(&metrics, "sluice_events_in_total", "out"),
        Some(100_000.0)
    );
    assert_eq!(
        metric(&metrics, "sluice_acks_unsettled_total", "pipeline"),
        Some(0.0),
        "every event's token ended with a verdict"
    );
    assert!(host.stop().success());
}

/// A backlog far larger than the MQTT client's request channel (10,000 requests) waits
/// in the host's persistent session on a broker that sends all of it at once, so the
/// PUBACKs pile up faster than the connection writes them. None may be dropped: a clean
/// restart afterwards must receive nothing again, and no acknowledgement is given up on.
#[test]
fn a_backlog_far_larger_than_the_ack_channel_is_acknowledged_in_full() {
    const BACKLOG: u64 = 50_000;
    let setup = Setup::with_broker(Mosquitto::with_inflight_window(0));
    let config = setup.config(FILTER_AND_MAP, "shape", "");
    let port = setup.broker.port;
    // A first run creates the persistent session and its subscription.
    let host = setup.host(&config);
    publish(port, "e2e/telemetry", 0..1, telemetry, 0, || ());
    wait_for_all(&setup, 1, Some(&host));
    let (status, log) = host.interrupt();
    assert!(status.success(), "{log}");

    // The broker queues the backlog for the session while the host is down.
    publish(port, "e2e/telemetry", 1..BACKLOG + 1, telemetry, 0, || ());
    let host = setup.host(&config);
    let started = std::time::Instant::now();
    let drain_duplicates = wait_for_all(&setup, BACKLOG + 1, Some(&host));
    let full = metric(&host.metrics(), "sluice_mqtt_ack_channel_full_total", "in");
    eprintln!(
        "backlog of {BACKLOG} drained in {:?}, {drain_duplicates} more than once; \
         PUBACKs found the client's request channel full {full:?} times",
        started.elapsed()
    );
    let (status, drained) = host.interrupt();
    assert!(status.success(), "{drained}");
    let before_restart = read_lines(&setup.path("out")).len();

    // A clean restart: whatever the broker still holds unacknowledged comes again.
    let host = setup.host(&config);
    std::thread::sleep(Duration::from_secs(3));
    let (status, restarted) = host.interrupt();
    assert!(status.success(), "{restarted}");
    assert!(
        restarted.contains("session_present=true"),
        "the restarted host did not resume its session:\n{restarted}"
    );
    let lines = read_lines(&setup.path("out"));
    let counts = seq_counts(&lines);
    let repeated_after_restart = lines.len() - before_restart;
    let given_up = |log: &str| log.lines().filter(|l| l.contains("PUBACK")).count();
    eprintln!(
        "clean restart after the backlog: {repeated_after_restart} events received again; \
         log lines about a PUBACK: {} while draining, {} after the restart",
        given_up(&drained),
        given_up(&restarted)
    );
    assert_eq!(
        counts.len() as u64,
        BACKLOG + 1,
        "distinct events delivered"
    );
    assert_eq!(
        repeated_after_restart, 0,
        "events acknowledged-but-dropped and redelivered after a clean restart"
    );
    assert_eq!(drain_duplicates, 0, "duplicates while draining the backlog");
    for log in [&drained, &restarted] {
        assert_eq!(
            given_up(log),
            0,
            "an acknowledgement was given up on:\n{log}"
        );
    }
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let mut setup = Setup::new();
    let config = setup.config(FILTER_AND_MAP, "shape", "");
    let host = setup.host(&config);
    let port = setup.broker.port;
    publish(port, "e2e/telemetry", 0..20_000, telemetry, 8_000, || {
        setup.broker.restart()
    });
    let duplicates = wait_for_all(&setup, 20_000, Some(&host));
    eprintln!("broker restart: all 20000 events arrived, {duplicates} more than once");
}

#[test]
fn a_host_killed_with_sigkill_and_restarted_loses_nothing() {
    let setup = Setup::new();
    let config = setup.config(FILTER_AND_MAP, "shape", "");
    // Small batches (one fsync each) keep the stream going long enough that the kill
    // surely lands mid-stream.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "client_id = \"sluice-e2e-host\"",
            "client_id = \"sluice-e2e-host\"\nbatch_size = 20",
        ),
    )
    .unwrap();
    let host = setup.host(&config);
    let out = setup.path("out");
    let port = setup.broker.port;
    std::thread::scope(|scope| {
        scope.spawn(|| publish(port, "e2e/telemetry", 0..20_000, telemetry, 0, || ()));
        // Kill while events are still streaming in and through the pipeline.
        wait_until(Duration::from_secs(60), "the first events on disk", || {
            read_lines(&out).len() > 3_000
        });
        host.kill_9();
        let at_kill = read_lines(&out).len();
        eprintln!("killed with {at_kill} events on disk");
        assert!(at_kill < 20_000, "the stream was over before the kill");
    });
    let restarted = setup.host(&config);
    let duplicates = wait_for_all(&setup, 20_000, Some(&restarted));
    eprintln!("kill -9: all 20000 events arrived, {duplicates} more than once");
    assert!(restarted.stop().success());
}

#[test]
fn events_that_make_a_plugin_trap_go_to_the_dead_letter_sink_with_the_reason() {
    let setup = Setup::new();
    let transforms = r#"
[transforms.fragile]
type = "wasm"
plugin = "hostile"
inputs = ["in"]
config = { behaviour = "panic" }
"#;
    let dlq = format!(
        "[sinks.dlq]\ntype = \"file\"\ninputs = [\"fragile.dead_letter\"]\npath = \"{}\"\n",
        setup.path("dlq").display()
    );
    let config = setup.config(transforms, "fragile", &dlq);
    let host = setup.host(&config);
    let poisoned = |seq: u64| seq % 100 == 7;
    publish(
        setup.broker.port,
        "e2e/telemetry",
        0..2_000,
        move |seq| {
            let mut value: serde_json::Value = serde_json::from_slice(&payload(seq, 100)).unwrap();
            if poisoned(seq) {
                value["poison"] = true.into();
            }
            serde_json::to_vec(&value).unwrap()
        },
        0,
        || (),
    );
    wait_until(Duration::from_secs(120), "20 dead letters", || {
        read_lines(&setup.path("dlq")).len() >= 20
    });
    let dead = read_lines(&setup.path("dlq"));
    assert_eq!(dead.len(), 20, "{dead:?}");
    for letter in &dead {
        assert_eq!(letter["stage"], "fragile");
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("hostile plugin panics on purpose"),
            "{letter}"
        );
        let original: serde_json::Value =
            serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
        assert!(poisoned(original["seq"].as_u64().unwrap()));
    }
    wait_until(Duration::from_secs(60), "the good events", || {
        read_lines(&setup.path("out")).len() >= 1_980
    });
    let good = seq_counts(&read_lines(&setup.path("out")));
    assert_eq!(good.len(), 1_980);
    assert!(
        (0..2_000)
            .filter(|s| !poisoned(*s))
            .all(|s| good.contains_key(&s))
    );
    assert_eq!(
        metric(
            &host.metrics(),
            "sluice_events_dead_lettered_total",
            "fragile"
        ),
        Some(20.0)
    );
}

/// Look a series up, or fail with the whole scrape and the host's log: a missing
/// series is a failure, never a zero.
fn series(host: &Host, metrics: &str, name: &str, stage: &str) -> f64 {
    metric(metrics, name, stage).unwrap_or_else(|| {
        panic!(
            "no {name} series for stage `{stage}`:\n{metrics}\n{}",
            host.log_text()
        )
    })
}

/// Batches a stage's input holds before its upstream waits (`CHANNEL_BATCHES` in the
/// topology).
const CHANNEL_BOUND: f64 = 4.0;

#[test]
fn a_slow_sink_bounds_memory_and_slows_the_source() {
    let setup = Setup::new();
    let text = format!(
        r#"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[sources.in]
type = "mqtt"
url = "{url}"
topics = ["e2e/#"]
client_id = "sluice-e2e-slow"
[sinks.screen]
type = "console"
inputs = ["in"]
"#,
        data = setup.path("data").display(),
        api = setup.api_port,
        url = setup.broker.url(),
    );
    let config = setup.path("slow.toml");
    std::fs::write(&config, text).unwrap();
    // Nobody reads the console's pipe until the end: the sink blocks once it is full.
    // It blocks in a write on a runtime thread, which stalls the API as well, so this
    // test reads the process, not /metrics (the stalled-stage test reads the gauges).
    let mut host = Host::start(&config, setup.api_port, Stdio::piped());
    let baseline = host.rss_bytes();
    const EVENTS: u64 = 40_000;
    const SIZE: usize = 2_000; // 80 MB in all, far more than the pipeline may hold
    publish(
        setup.broker.port,
        "e2e/bulk",
        0..EVENTS,
        |seq| payload(seq, SIZE),
        0,
        || (),
    );
    std::thread::sleep(Duration::from_secs(2));
    let grown = host.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < 60 << 20,
        "memory grew by {} MiB while the sink was stuck",
        grown >> 20
    );

    // Unblock the sink: every event must still arrive.
    let stdout = host.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = std::collections::HashSet::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            seen.insert(value["seq"].as_u64().unwrap());
            if seen.len() as u64 == EVENTS {
                break;
            }
        }
        seen.len() as u64
    });
    assert_eq!(reader.join().unwrap(), EVENTS);
}

/// A stage that makes no progress (every call runs into its deadline) fills its input
/// to the channel bound and no further, and the source stops taking events: the queue
/// depth gauge shows the backpressure where it is.
#[test]
fn a_stalled_stage_fills_its_input_to_the_bound_and_stops_the_source() {
    let setup = Setup::new();
    let text = format!(
        r#"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[plugins.hostile]
path = "{hostile}"
limits = {{ timeout_ms = 1000 }}
[sources.in]
type = "mqtt"
url = "{url}"
topics = ["e2e/#"]
client_id = "sluice-e2e-stalled"
# Batches small enough that the broker's in-flight window (1,000) fills the stalled
# stage's input many times over.
batch_size = 20
[transforms.stalled]
type = "wasm"
plugin = "hostile"
inputs = ["in"]
config = {{ behaviour = "loop" }}
[sinks.out]
type = "file"
inputs = ["stalled", "stalled.dead_letter"]
path = "{out}"
"#,
        data = setup.path("data").display(),
        api = setup.api_port,
        hostile = plugin("fixture-hostile"),
        url = setup.broker.url(),
        out = setup.path("out").display(),
    );
    let config = setup.path("stalled.toml");
    std::fs::write(&config, text).unwrap();
    let host = Host::start(&config, setup.api_port, Stdio::null());
    const EVENTS: u64 = 5_000;
    // Every event is poisoned: each call loops until its deadline.
    publish(
        setup.broker.port,
        "e2e/stall",
        0..EVENTS,
        |seq| {
            let mut value: serde_json::Value = serde_json::from_slice(&payload(seq, 100)).unwrap();
            value["poison"] = true.into();
            serde_json::to_vec(&value).unwrap()
        },
        0,
        || (),
    );
    std::thread::sleep(Duration::from_secs(1));
    let metrics = host.metrics();
    let taken = series(&host, &metrics, "sluice_events_in_total", "in");
    assert!(
        taken > 0.0 && taken < 1_000.0,
        "the source took {taken} events while the next stage was stalled"
    );
    std::thread::sleep(Duration::from_secs(1));
    let later = host.metrics();
    assert_eq!(
        series(&host, &later, "sluice_events_in_total", "in"),
        taken,
        "the source kept taking events while the next stage was stalled"
    );
    // The last send that got through before the source had to wait left the stalled
    // stage's input full: the gauge reads the bound, never more.
    assert_eq!(
        series(&host, &later, "sluice_queue_depth", "stalled"),
        CHANNEL_BOUND,
        "the stalled stage's input is not at its bound"
    );
}

#[test]
fn a_sighup_mid_stream_reloads_the_config_and_loses_nothing() {
    let setup = Setup::new();
    // A serving table too: its database must pass from the old pipeline to the new.
    let serving = "[sinks.latest]\ntype = \"serving\"\ninputs = [\"shape\"]\ntable = \"latest\"\nkey = \"device_id\"\npublic = true\n";
    let config = setup.config(FILTER_AND_MAP, "shape", serving);
    let host = setup.host(&config);
    let out = setup.path("out");
    let port = setup.broker.port;
    std::thread::scope(|scope| {
        scope.spawn(|| publish(port, "e2e/telemetry", 0..20_000, telemetry, 0, || ()));
        wait_until(Duration::from_secs(60), "the first events on disk", || {
            read_lines(&out).len() > 3_000
        });
        // The new config tags every event differently from then on.
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace(r#"via = "sluice""#, r#"via = "reloaded""#),
        )
        .unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &host.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_until(Duration::from_secs(30), "the reload", || {
            host.log_text().contains("reloaded")
        });
    });
    let duplicates = wait_for_all(&setup, 20_000, Some(&host));
    eprintln!("SIGHUP: all 20000 events arrived, {duplicates} more than once");
    let (status, latest) = http_get(setup.api_port, "/v1/tables/latest/keys/d03").unwrap();
    assert_eq!(
        status, 200,
        "the reloaded pipeline serves its table: {latest}"
    );
    let lines = read_lines(&out);
    let reloaded = lines.iter().filter(|l| l["via"] == "reloaded").count();
    assert!(
        reloaded > 0 && reloaded < lines.len(),
        "both configs wrote: {reloaded} of {}",
        lines.len()
    );

    // A broken config is refused, and the running one goes on.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(r#"inputs = ["keep"]"#, r#"inputs = ["nowhere"]"#),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &host.child.id().to_string()])
        .status()
        .unwrap();
    wait_until(Duration::from_secs(30), "the refusal", || {
        host.log_text().contains("the new config is refused")
    });
    assert!(host.log_text().contains("unknown stage `nowhere`"));
    publish(port, "e2e/telemetry", 20_000..20_100, telemetry, 0, || ());
    wait_for_all(&setup, 20_100, Some(&host));
    assert!(host.stop().success());
}
