//! Pipeline throughput: MQTT → filter + map (Wasm) → file, against the raw relay
//! MQTT → file and against the same flow in Node-RED (`mqtt in` → `function` → `file`),
//! in one run against one real Mosquitto.
//!
//! Run: `scripts/bench-setup && cargo build --release -p sluice && \
//!       cargo bench -p sluice-e2e --bench pipeline_relay`
//!
//! Backlog runs queue `EVENTS` messages in the broker for the host's persistent session
//! while it is down, then start it and time how long it takes to have every event in
//! its files. Live runs (the comparison with Node-RED, which drops what a persistent
//! session delivers before its `mqtt in` node has subscribed again, so it cannot take a
//! backlog) publish while the subscriber runs and time from the first publish. Each
//! run records the CPU time the process used and its peak RSS. Variants alternate; the
//! best run of each counts, and the relay comparison is also given as the median of the
//! ratios of back-to-back runs.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/process.rs"]
mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;

const EVENTS: u64 = 100_000;
/// Backlog runs of each Sluice variant. The relay swings by a third between runs with
/// Mosquitto's delivery, so the comparison takes more of them than the live runs.
const BACKLOG_RUNS: usize = 6;
const LIVE_RUNS: usize = 3;

const RELAY: &str = r#"
[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"
"#;

const FILTER_MAP: &str = r#"
[plugins.filter]
path = "{filter}"
[plugins.map]
path = "{map}"

[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["in"]
config = { when = { field = "temperature", gte = 0 } }

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["hot"]
config = { rename = { temperature = "temperature_c" }, convert = { temperature_c = "celsius_to_fahrenheit" }, set = { site = "plant-1" } }

[sinks.out]
type = "file"
inputs = ["shape"]
path = "{out}"
"#;

/// One run: events per second, CPU seconds per 100k events, peak RSS in MiB.
#[derive(Clone, Copy, Default)]
struct Measured {
    rate: f64,
    cpu_per_100k: f64,
    peak_rss_mib: f64,
}

impl Measured {
    fn best(self, other: Measured) -> Measured {
        if other.rate > self.rate { other } else { self }
    }
}

/// CPU seconds (user + system) and peak RSS (MiB) of process `pid`, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    (
        process::cpu_seconds(pid),
        process::peak_rss_bytes(pid) as f64 / 1048576.0,
    )
}

/// Lines in the files of a directory, counted from what was appended since the last
/// look (so the bench's own reading stays off the measured CPU).
#[derive(Default)]
struct Lines {
    seen: HashMap<PathBuf, (u64, u64)>,
}

impl Lines {
    fn count(&mut self, dir: &Path) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let (offset, lines) = self.seen.entry(path.clone()).or_default();
                if let Ok(mut file) = std::fs::File::open(&path) {
                    file.seek(SeekFrom::Start(*offset)).unwrap();
                    let mut new = Vec::new();
                    file.read_to_end(&mut new).unwrap();
                    // Complete lines only.
                    let end = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    *lines += new[..end].iter().filter(|b| **b == b'\n').count() as u64;
                    *offset += end as u64;
                }
            }
        }
        self.seen.values().map(|(_, lines)| lines).sum()
    }

    /// Wait until `dir` holds `target` lines; `EVENTS` of them came since `started`,
    /// when process `pid` had used `cpu_before` seconds.
    fn wait(
        &mut self,
        dir: &Path,
        target: u64,
        pid: u32,
        started: Instant,
        cpu_before: f64,
    ) -> Measured {
        while self.count(dir) < target {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "every event on disk"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (cpu_after, peak_rss_mib) = usage(pid);
        Measured {
            rate: EVENTS as f64 / elapsed,
            cpu_per_100k: (cpu_after - cpu_before) * 100_000.0 / EVENTS as f64,
            peak_rss_mib,
        }
    }
}

fn run(broker: &Mosquitto, dir: &Path, variant: &str, stages: &str, run: usize) -> Measured {
    let out = dir.join(format!("{variant}-{run}"));
    let api = free_port();
    let client = format!("bench-{variant}-{run}");
    let topic = format!("bench/{variant}/{run}");
    let text = format!(
        "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[sources.in]\ntype = \"mqtt\"\nurl = \"{url}\"\ntopics = [\"{topic}\"]\nclient_id = \"{client}\"\nbatch_size = 1000\n{stages}",
        data = dir.join("data").display(),
        url = broker.url(),
        stages = stages
            .replace("{out}", &out.display().to_string())
            .replace("{filter}", &plugin("filter"))
            .replace("{map}", &plugin("map")),
    );
    let config = dir.join(format!("{variant}-{run}.toml"));
    std::fs::write(&config, text).unwrap();
    // Create the session and subscription, then queue the events while the host is down.
    let first = Host::start(&config, api, Stdio::null());
    wait_until(Duration::from_secs(30), "the subscription", || {
        first.log_text().contains("subscribed")
    });
    first.stop();
    publish(
        broker.port,
        &topic,
        0..EVENTS,
        |seq| payload(seq, 200),
        0,
        || (),
    );
    let host = Host::start(&config, api, Stdio::null());
    let pid = host.child.id();
    let measured = Lines::default().wait(&out, EVENTS, pid, Instant::now(), usage(pid).0);
    host.stop();
    measured
}

/// Live: with the subscriber running, publish `EVENTS` at the publisher's top speed and
/// time from the first publish until every event is in `out`. The subscription is
/// proven first by a probe message coming through.
fn live(broker: &Mosquitto, topic: &str, out: &Path, pid: u32) -> Measured {
    let mut lines = Lines::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines.count(out) == 0 {
        assert!(Instant::now() < deadline, "no probe came through");
        publish(broker.port, topic, 0..1, |seq| payload(seq, 200), 0, || ());
        std::thread::sleep(Duration::from_secs(1));
    }
    let base = lines.count(out);
    let cpu_before = usage(pid).0;
    let started = Instant::now();
    let (port, topic_owned) = (broker.port, topic.to_owned());
    let publisher = std::thread::spawn(move || {
        publish(
            port,
            &topic_owned,
            0..EVENTS,
            |seq| payload(seq, 200),
            0,
            || (),
        )
    });
    let measured = lines.wait(out, base + EVENTS, pid, started, cpu_before);
    publisher.join().unwrap();
    measured
}

/// The Wasm pipeline measured live, as Node-RED is.
fn run_live(broker: &Mosquitto, dir: &Path, run: usize) -> Measured {
    let out = dir.join(format!("live-{run}"));
    let api = free_port();
    let topic = format!("bench/live/{run}");
    let text = format!(
        "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[sources.in]\ntype = \"mqtt\"\nurl = \"{url}\"\ntopics = [\"{topic}\"]\nclient_id = \"bench-live-{run}\"\nbatch_size = 1000\n{stages}",
        data = dir.join("data").display(),
        url = broker.url(),
        stages = FILTER_MAP
            .replace("{out}", &out.display().to_string())
            .replace("{filter}", &plugin("filter"))
            .replace("{map}", &plugin("map")),
    );
    let config = dir.join(format!("live-{run}.toml"));
    std::fs::write(&config, text).unwrap();
    let host = Host::start(&config, api, Stdio::null());
    let measured = live(broker, &topic, &out, host.child.id());
    host.stop();
    measured
}

/// The same filter and map as the Wasm stages, in a Node-RED `function` node.
const NODE_RED_FUNCTION: &str = r#"
const p = JSON.parse(msg.payload);
if (!(typeof p.temperature === "number" && p.temperature >= 0)) { return null; }
const t = p.temperature;
delete p.temperature;
p.temperature_c = Math.round((t * 9 / 5 + 32) * 1e6) / 1e6;
p.site = "plant-1";
msg.payload = JSON.stringify(p);
return msg;
"#;

fn node_red_js() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/node-red/node_modules/node-red/red.js");
    assert!(
        path.exists(),
        "{} is missing: run scripts/bench-setup",
        path.display()
    );
    path
}

/// Node-RED with a flow `mqtt in` (QoS 1, persistent session) → `function` → `file`.
fn start_node_red(dir: &Path, port: u16, flows: &Path, log: &Path) -> Child {
    Command::new("node")
        .arg(node_red_js())
        .args(["--port", &port.to_string(), "--userDir"])
        .arg(dir)
        .arg(flows)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_node_red(broker: &Mosquitto, dir: &Path, run: usize) -> Measured {
    let user_dir = dir.join(format!("node-red-{run}"));
    let out = user_dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let topic = format!("bench/node-red/{run}");
    let flows = serde_json::json!([
        // Ids must not equal any property value (Node-RED would take them for
        // references to config nodes).
        {"id": "t1", "type": "tab", "label": "bench"},
        {"id": "b1", "type": "mqtt-broker", "broker": "127.0.0.1", "port": broker.port.to_string(),
         "clientid": format!("node-red-{run}"), "autoConnect": true, "usetls": false,
         "protocolVersion": "4", "keepalive": "60", "cleansession": false},
        {"id": "i1", "type": "mqtt in", "z": "t1", "topic": topic, "qos": "1",
         "datatype": "utf8", "broker": "b1", "nl": false, "rap": true, "rh": 0,
         "inputs": 0, "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "func": NODE_RED_FUNCTION,
         "outputs": 1, "wires": [["o1"]]},
        {"id": "o1", "type": "file", "z": "t1", "filename": out.join("out.jsonl").display().to_string(),
         "filenameType": "str", "appendNewline": true, "createDir": true,
         "overwriteFile": "false", "encoding": "none", "wires": []}
    ]);
    let flow_file = user_dir.join("flows.json");
    std::fs::write(&flow_file, flows.to_string()).unwrap();
    let log = user_dir.join("node-red.log");
    let mut node_red = start_node_red(&user_dir, free_port(), &flow_file, &log);
    let measured = live(broker, &topic, &out, node_red.id());
    terminate(&node_red);
    node_red.wait().unwrap();
    measured
}

fn main() {
    node_red_js();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, mut wasm, mut wasm_live, mut node_red) = Default::default();
    // Each round runs the relay and the pipeline back to back, under the same load.
    let mut paired_ratios = Vec::new();
    for n in 0..BACKLOG_RUNS {
        eprintln!("run {}/{BACKLOG_RUNS}", n + 1);
        let relay_run = run(&broker, dir.path(), "relay", RELAY, n);
        let wasm_run = run(&broker, dir.path(), "filter-map", FILTER_MAP, n);
        paired_ratios.push(wasm_run.rate / relay_run.rate);
        relay = Measured::best(relay, relay_run);
        wasm = Measured::best(wasm, wasm_run);
        if n < LIVE_RUNS {
            wasm_live = Measured::best(wasm_live, run_live(&broker, dir.path(), n));
            node_red = Measured::best(node_red, run_node_red(&broker, dir.path(), n));
        }
    }
    paired_ratios.sort_by(f64::total_cmp);
    let median_ratio =
        (paired_ratios[(BACKLOG_RUNS - 1) / 2] + paired_ratios[BACKLOG_RUNS / 2]) / 2.0;
    println!(
        "| pipeline ({EVENTS} events of ~200 bytes, MQTT QoS 1 → files) | events/s | CPU s per 100k events | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|");
    for (name, m) in [
        ("backlog: Sluice raw relay, MQTT → file (fsynced)", relay),
        (
            "backlog: Sluice, MQTT → filter → map (Wasm) → file (fsynced)",
            wasm,
        ),
        (
            "live: Sluice, MQTT → filter → map (Wasm) → file (fsynced)",
            wasm_live,
        ),
        ("live: Node-RED 4.1, mqtt in → function → file", node_red),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.1} |",
            m.rate, m.cpu_per_100k, m.peak_rss_mib
        );
    }
    println!();
    println!("| ratio | value |");
    println!("|---|---:|");
    println!(
        "| Sluice filter + map relative to the raw relay (throughput, best run of each) | {:.0}% |",
        wasm.rate / relay.rate * 100.0
    );
    println!(
        "| Sluice filter + map relative to the raw relay (throughput, median of {BACKLOG_RUNS} back-to-back pairs) | {:.0}% |",
        median_ratio * 100.0
    );
    println!(
        "| Sluice filter + map relative to the raw relay (CPU per event) | {:.2}x |",
        wasm.cpu_per_100k / relay.cpu_per_100k
    );
    println!(
        "| Sluice filter + map against Node-RED, live (throughput) | {:.1}x |",
        wasm_live.rate / node_red.rate
    );
    println!(
        "| Sluice filter + map against Node-RED, live (CPU per event) | {:.2} |",
        wasm_live.cpu_per_100k / node_red.cpu_per_100k
    );
    println!(
        "| Sluice filter + map against Node-RED, live (peak RSS) | {:.2} |",
        wasm_live.peak_rss_mib / node_red.peak_rss_mib
    );
}
