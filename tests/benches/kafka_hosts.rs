//! How throughput grows with hosts in one Kafka group: the `kafka_relay` pipeline
//! (Kafka → `map` (Wasm) → Kafka) run as one `sluice` process and as two in the same
//! consumer group (each gets two of the four partitions), against the raw rdkafka relay
//! run as one consumer and as two in one group (the limit). One local tansu broker.
//!
//! Run: `cargo build --release -p sluice && cargo bench -p sluice-e2e --bench kafka_hosts`.
//! Prints the tables and writes the plot to `docs/benchmarks/scaling-hosts.svg`.
//!
//! The rate is taken from the first output record to the last, so that the start and
//! the group join (about half of `session.timeout.ms` on tansu, the same for every
//! variant) do not count; CPU per process is read from `/proc` over the same span.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/kafka.rs"]
mod kafka;
#[path = "support/plot.rs"]
mod plot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::kafka::Tansu;
use kafka::{PARTITIONS, await_output, fill_input, raw_relay, reader, start_sluice};
use plot::{Axis, Panel, Series};

const EVENTS: u64 = 400_000;
/// Runs of each variant, alternating; the median counts.
const RUNS: usize = 3;
const HOSTS: [usize; 2] = [1, 2];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Variant {
    Raw,
    Sluice,
}

/// One run: events/s from the first output record to the last, and the cores each
/// process used over that span.
struct Measured {
    rate: f64,
    cores: BTreeMap<String, f64>,
}

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, 100 on Linux).
const TICKS: f64 = 100.0;

/// utime + stime of a process, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The tansu broker this bench started: a child of this process.
fn tansu_pid() -> u32 {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let after = stat.rsplit_once(')').map_or("", |(_, after)| after);
                stat.contains("(tansu)") && after.split_whitespace().nth(1) == Some(&me)
            })
        })
        .expect("tansu is a child of the bench")
}

/// Samples the CPU ticks of named processes every 50 ms until stopped.
struct CpuSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, Vec<u64>)>>,
    names: Vec<String>,
}

impl CpuSampler {
    fn start(processes: Vec<(String, u32)>) -> CpuSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let names = processes.iter().map(|(name, _)| name.clone()).collect();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let ticks = processes
                        .iter()
                        .map(|(_, pid)| cpu_ticks(*pid).unwrap_or(0))
                        .collect();
                    samples.push((Instant::now(), ticks));
                    std::thread::sleep(Duration::from_millis(50));
                }
                samples
            })
        };
        CpuSampler {
            stop,
            thread,
            names,
        }
    }

    /// Cores each process used between `from` and `to` (the samples nearest them).
    fn cores(self, from: Instant, to: Instant) -> BTreeMap<String, f64> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap();
        let nearest = |at: Instant| {
            samples
                .iter()
                .min_by_key(|(when, _)| if *when > at { *when - at } else { at - *when })
                .unwrap()
        };
        let ((start, before), (end, after)) = (nearest(from), nearest(to));
        let seconds = (*end - *start).as_secs_f64().max(1e-3);
        self.names
            .into_iter()
            .zip(before.iter().zip(after))
            .map(|(name, (before, after))| (name, (after - before) as f64 / TICKS / seconds))
            .collect()
    }
}

/// One run of `variant` with `hosts` members in a fresh group, writing to `output`.
fn measure(
    tansu: &Tansu,
    dir: &std::path::Path,
    variant: Variant,
    hosts: usize,
    output: &str,
) -> Measured {
    tansu.create_topic(output, PARTITIONS);
    let reader = reader(tansu, output);
    let broker = ("tansu".to_owned(), tansu_pid());
    let bench = ("bench (reader, raw relays)".to_owned(), std::process::id());
    let began = Instant::now();
    let (arrivals, cores) =
        match variant {
            Variant::Raw => {
                let relayed = AtomicU64::new(0);
                std::thread::scope(|scope| {
                    let sampler = CpuSampler::start(vec![broker, bench]);
                    for _ in 0..hosts {
                        scope.spawn(|| raw_relay(tansu, output, output, &relayed, EVENTS));
                    }
                    let arrivals = await_output(&reader, EVENTS);
                    let cores = sampler.cores(arrivals.first, arrivals.last);
                    (arrivals, cores)
                })
            }
            Variant::Sluice => {
                // Started together, so that they join the group in one round.
                let started: Vec<_> = std::thread::scope(|scope| {
                    let starting: Vec<_> = (0..hosts)
                        .map(|host| {
                            scope.spawn(move || {
                                let name = format!("{output}-host{host}");
                                start_sluice(tansu, dir, &name, output, output)
                            })
                        })
                        .collect();
                    starting
                        .into_iter()
                        .map(|host| host.join().unwrap())
                        .collect()
                });
                let mut processes = vec![broker, bench];
                processes.extend(started.iter().enumerate().map(|(host, started)| {
                    (format!("sluice host {}", host + 1), started.child.id())
                }));
                let sampler = CpuSampler::start(processes);
                let arrivals = await_output(&reader, EVENTS);
                let cores = sampler.cores(arrivals.first, arrivals.last);
                drop(started);
                (arrivals, cores)
            }
        };
    let rate = EVENTS as f64 / (arrivals.last - arrivals.first).as_secs_f64();
    eprintln!(
        "{variant:?} x{hosts}: {rate:.0} events/s from the first output record, {:.1} s from the start, cores {cores:?}",
        (arrivals.last - began).as_secs_f64()
    );
    Measured { rate, cores }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let tansu = Tansu::start();
    fill_input(&tansu, EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let mut runs: BTreeMap<(Variant, usize), Vec<Measured>> = BTreeMap::new();
    for run in 0..RUNS {
        for variant in [Variant::Raw, Variant::Sluice] {
            for hosts in HOSTS {
                let output = format!("{variant:?}-{hosts}-{run}").to_lowercase();
                let measured = measure(&tansu, dir.path(), variant, hosts, &output);
                runs.entry((variant, hosts)).or_default().push(measured);
            }
        }
    }
    let rate = |variant: Variant, hosts: usize| {
        median(runs[&(variant, hosts)].iter().map(|m| m.rate).collect())
    };
    println!(
        "| {EVENTS} records of ~200 bytes, {PARTITIONS} partitions, tansu; median of {RUNS}; first to last output record | 1 host events/s | 2 hosts events/s | 2 hosts / 1 host |"
    );
    println!("|---|---:|---:|---:|");
    for (variant, name) in [
        (
            Variant::Raw,
            "raw rdkafka relay, consumers in one group (the limit)",
        ),
        (
            Variant::Sluice,
            "Sluice: Kafka → map (Wasm) → Kafka, hosts in one group",
        ),
    ] {
        let (one, two) = (rate(variant, 1), rate(variant, 2));
        println!("| {name} | {one:.0} | {two:.0} | {:.2}× |", two / one);
    }
    println!(
        "| Sluice relative to the raw relay | {:.0}% | {:.0}% | |",
        rate(Variant::Sluice, 1) / rate(Variant::Raw, 1) * 100.0,
        rate(Variant::Sluice, 2) / rate(Variant::Raw, 2) * 100.0
    );
    println!();
    println!("| variant | process | cores used (median, first to last output record) |");
    println!("|---|---|---:|");
    for ((variant, hosts), measured) in &runs {
        let names = measured[0].cores.keys();
        let mut total = 0.0;
        for name in names {
            let cores = median(measured.iter().map(|m| m.cores[name]).collect());
            total += cores;
            println!("| {variant:?} ×{hosts} | {name} | {cores:.2} |");
        }
        println!("| {variant:?} ×{hosts} | all of these (of 2 cores) | {total:.2} |");
    }
    let out =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks/scaling-hosts.svg");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, plot(&rate)).unwrap();
    println!("plot: {}", out.display());
}

/// Events/s over hosts, and the same relative to one host, Sluice beside the raw relay.
fn plot(rate: &dyn Fn(Variant, usize) -> f64) -> String {
    let series = |relative: bool| {
        [(Variant::Sluice, "sluice"), (Variant::Raw, "raw relay")]
            .into_iter()
            .map(|(variant, label)| Series {
                label,
                points: HOSTS
                    .iter()
                    .map(|&hosts| {
                        let value = rate(variant, hosts);
                        let value = if relative {
                            value / rate(variant, 1)
                        } else {
                            value
                        };
                        (hosts as f64, value)
                    })
                    .collect(),
            })
            .collect()
    };
    plot::panels(
        "hosts",
        &HOSTS.map(|hosts| hosts as f64),
        Axis::Linear,
        &[
            Panel {
                title: "events/s (one group, 4 partitions)",
                series: series(false),
                band: None,
                decimals: 0,
            },
            Panel {
                title: "relative to one host",
                series: series(true),
                band: None,
                decimals: 2,
            },
        ],
    )
}
