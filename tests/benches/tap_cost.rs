//! The cost of a tap: HTTP ingest → filter → map (Wasm) → file, timed with nobody
//! tapping and with `sluice tap` taking its default 100 events a second from `shape`,
//! the stage every event leaves.
//!
//! Run: `cargo build --release -p sluice && cargo bench -p sluice-e2e --bench tap_cost`
//!
//! One host runs every round. A run posts `EVENTS` readings of ~200 bytes from `POSTERS`
//! threads, `LINES` per request, and is timed from the first post to the last `200`
//! (the HTTP source answers once every event is fsynced in the files): *flat out*, as
//! fast as the host takes them (its throughput), and *paced* at `PACE` events a second
//! (what the same work costs it in CPU at a steady load). Each round runs both
//! variants back to back, in turns first; the host's CPU (user + system, from /proc) is
//! taken over each run. The tap is a real `sluice tap` process, its output counted to
//! prove it was taking events throughout.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::*;

const EVENTS: usize = 200_000;
const LINES: usize = 500;
const POSTERS: usize = 4;
const ROUNDS: usize = 6;
/// The paced runs' load, in events per second.
const PACE: f64 = 50_000.0;

const STAGES: &str = r#"
[plugins.filter]
path = "{filter}"
[plugins.map]
path = "{map}"

[transforms.valid]
type = "wasm"
plugin = "filter"
inputs = ["ingest"]
config = { when = { field = "temperature", gte = 0 } }

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["valid"]
config = { rename = { temperature = "temperature_c" }, set = { site = "plant-1" } }

[sinks.out]
type = "file"
inputs = ["shape"]
path = "out"
"#;

/// One run: events per second, and the host's CPU seconds per 100k events.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    cpu_per_100k: f64,
}

/// CPU seconds (user + system) process `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // SC_CLK_TCK is 100 on Linux.
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Post every body from `POSTERS` threads, each retrying what is pushed back (429); at
/// `pace` events a second, or flat out.
fn post_all(host: &HttpPipeline, bodies: &Arc<Vec<Vec<u8>>>, pace: Option<f64>) -> Measured {
    let next = Arc::new(AtomicUsize::new(0));
    let pid = host.host.child.id();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let posters: Vec<_> = (0..POSTERS)
        .map(|_| {
            let (bodies, next, ingest) = (bodies.clone(), next.clone(), host.ingest);
            std::thread::spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(index) else {
                        return;
                    };
                    if let Some(pace) = pace {
                        let due = started + Duration::from_secs_f64((index * LINES) as f64 / pace);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    loop {
                        match http_post(ingest, "/ingest", &[], body).0 {
                            200 => break,
                            429 => std::thread::sleep(Duration::from_millis(1)),
                            status => panic!("ingest answered {status}"),
                        }
                    }
                }
            })
        })
        .collect();
    for poster in posters {
        poster.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Measured {
        rate: EVENTS as f64 / elapsed,
        cpu_per_100k: (cpu_seconds(pid) - cpu_before) * 100_000.0 / EVENTS as f64,
    }
}

/// A run with `sluice tap … shape` (default rate, no limit) reading throughout.
fn tapped(host: &HttpPipeline, bodies: &Arc<Vec<Vec<u8>>>, pace: Option<f64>) -> Measured {
    let opened = host.host.log_text().matches("tap opened").count();
    let records = host.dir.path().join("tapped.jsonl");
    let mut tap = Command::new(sluice_binary())
        .arg("tap")
        .arg(format!("http://127.0.0.1:{}", host.host.api_port))
        .arg("shape")
        .stdout(std::fs::File::create(&records).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the tap to open", || {
        host.host.log_text().matches("tap opened").count() > opened
    });
    let measured = post_all(host, bodies, pace);
    terminate(&tap);
    tap.wait().unwrap();
    let taken = std::fs::read_to_string(&records).unwrap().lines().count();
    assert!(taken > 0, "the tap took nothing");
    measured
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

fn main() {
    let stages = STAGES
        .replace("{filter}", &plugin("filter"))
        .replace("{map}", &plugin("map"));
    let host = HttpPipeline::start("", &stages, Stdio::null());
    let bodies: Vec<Vec<u8>> = (0..EVENTS / LINES)
        .map(|chunk| {
            let seqs = (chunk * LINES) as u64..((chunk + 1) * LINES) as u64;
            seqs.flat_map(|seq| {
                let mut line = payload(seq, 200);
                line.push(b'\n');
                line
            })
            .collect()
        })
        .collect();
    let bodies = Arc::new(bodies);
    eprintln!("warm-up");
    post_all(&host, &bodies, None);
    for (load, pace) in [("flat out", None), ("paced at 50k/s", Some(PACE))] {
        let (mut plain, mut with_tap) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            eprintln!("{load}: round {}/{ROUNDS}", round + 1);
            if round % 2 == 0 {
                plain.push(post_all(&host, &bodies, pace));
                with_tap.push(tapped(&host, &bodies, pace));
            } else {
                with_tap.push(tapped(&host, &bodies, pace));
                plain.push(post_all(&host, &bodies, pace));
            }
        }
        report(load, &plain, &with_tap);
    }
}

/// The table of one load's runs, and the ratios.
fn report(load: &str, plain: &[Measured], with_tap: &[Measured]) {
    let best = |runs: &[Measured]| runs.iter().map(|m| m.rate).fold(0.0, f64::max);
    let rates = |runs: &[Measured]| runs.iter().map(|m| m.rate).collect::<Vec<_>>();
    let cpu = |runs: &[Measured]| median(runs.iter().map(|m| m.cpu_per_100k).collect());
    let paired = |of: fn(&Measured) -> f64| {
        median(
            plain
                .iter()
                .zip(with_tap)
                .map(|(plain, tapped)| of(tapped) / of(plain))
                .collect(),
        )
    };
    println!(
        "| {load}: HTTP → filter → map (Wasm) → file, {EVENTS} events of ~200 bytes, {ROUNDS} rounds | best events/s | median events/s | median CPU s per 100k events |"
    );
    println!("|---|---:|---:|---:|");
    for (name, runs) in [
        ("nobody tapping", plain),
        ("`sluice tap` on `shape` (100 events/s)", with_tap),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.3} |",
            best(runs),
            median(rates(runs)),
            cpu(runs)
        );
    }
    println!();
    println!("| {load}: tapped relative to untapped | value |");
    println!("|---|---:|");
    println!(
        "| throughput, best run of each | {:.1}% |",
        best(with_tap) / best(plain) * 100.0
    );
    println!(
        "| throughput, median of {ROUNDS} back-to-back pairs | {:.1}% |",
        paired(|m| m.rate) * 100.0
    );
    println!(
        "| CPU per event, median of {ROUNDS} back-to-back pairs | {:.1}% |",
        paired(|m| m.cpu_per_100k) * 100.0
    );
    println!();
}
