//! How the central host's cost grows with its devices: N simulated devices (N = 100,
//! 1,000, 5,000), each on its own MQTT connection to the host's embedded broker with
//! its fleet credentials, publishing one reading a second (QoS 1, spread evenly over the
//! second) to `sensors/{device}/telemetry`, through MQTT source → Wasm filter → HTTP
//! sink to a receiver in this process. Beside it, in the same run, its limit: the same
//! N clients against a plain Mosquitto relaying to one subscriber.
//!
//! After a warm-up, over a steady window: the broker process's RSS per connected device
//! (over the same process with its pipeline warmed and no device connected), its CPU
//! per reading delivered, and the latency from a reading's send to its arrival at the
//! consumer (p50, p99). Every reading sent is accounted for: a missing one is counted
//! as lost. The clients run on one tokio runtime in this process, whose own CPU is
//! printed, so that a saturated load generator shows.
//!
//! Run: `cargo build --release -p sluice && cargo bench -p sluice-e2e --bench scaling_devices`.
//! Prints the table and writes the plot to `docs/benchmarks/scaling-devices.svg`.
//! `SCALING_DEVICES=5000` measures that N alone (e.g. under `perf`), and writes no plot.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/plot.rs"]
mod plot;
#[path = "support/process.rs"]
mod process;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::{Host, Mosquitto, free_port, plugin};
use plot::{Axis, Panel, Series};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const DEVICES: [usize; 3] = [100, 1000, 5000];
/// From the last device's first reading to the start of the window.
const WARM_UP: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(20);
/// How long, after the last send, the consumer may take to see every reading.
const DRAIN: Duration = Duration::from_secs(30);
/// Readings sent through the pipeline (or relay) by one local client before the
/// baseline RSS, so that the baseline holds the pipeline's working buffers.
const WARM_UP_READINGS: u64 = 1000;
/// Devices connecting at once; the next batch starts once these are connected.
const CONNECT_BATCH: usize = 200;

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// What the consumer saw: each distinct reading's send and arrival time.
#[derive(Default)]
struct Arrivals {
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    readings: HashSet<(u32, u32)>,
    /// (sent, arrived) in µs since the epoch, one per distinct reading.
    times: Vec<(u64, u64)>,
    duplicates: u64,
    warm_up: u64,
}

impl Arrivals {
    /// Record one message body: a reading, or a JSON array of them (the HTTP sink's
    /// batches).
    fn record(&self, body: &[u8], arrived: u64) {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let mut seen = self.inner.lock().unwrap();
        let mut one = |reading: &serde_json::Value| match reading["device"].as_u64() {
            None => seen.warm_up += 1,
            Some(device) => {
                let seq = reading["seq"].as_u64().unwrap() as u32;
                if seen.readings.insert((device as u32, seq)) {
                    let sent = reading["sent_us"].as_u64().unwrap();
                    seen.times.push((sent, arrived));
                } else {
                    seen.duplicates += 1;
                }
            }
        };
        match &value {
            serde_json::Value::Array(readings) => readings.iter().for_each(&mut one),
            reading => one(reading),
        }
    }

    fn distinct(&self) -> u64 {
        self.inner.lock().unwrap().readings.len() as u64
    }

    fn warm_up(&self) -> u64 {
        self.inner.lock().unwrap().warm_up
    }
}

/// What the devices did, summed over all of them.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    sent: AtomicU64,
    acknowledged: AtomicU64,
    /// Connection errors and publishes the client could not queue.
    errors: AtomicU64,
}

/// One device: connects (with `login`, if any), and once `sending` is set publishes a
/// reading at `first_tick` and every second after.
async fn device(
    index: u32,
    port: u16,
    login: Option<(String, String)>,
    first_tick: tokio::time::Instant,
    sending: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let name = format!("dev-{index}");
    let mut options = MqttOptions::new(name.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    if let Some((username, password)) = login {
        options.set_credentials(username, password);
    }
    let (client, mut events) = AsyncClient::new(options, 16);
    let topic = format!("sensors/{name}/telemetry");
    let mut tick = tokio::time::interval_at(first_tick, Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u32;
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = tick.tick() => {
                if !sending.load(Ordering::Relaxed) {
                    continue;
                }
                let reading = format!(
                    "{{\"device_id\":\"{name}\",\"device\":{index},\"seq\":{seq},\"sent_us\":{},\"temperature\":21.5,\"battery\":3.7}}",
                    unix_micros()
                );
                match client.try_publish(&topic, QoS::AtLeastOnce, false, reading) {
                    Ok(()) => {
                        seq += 1;
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// A local client without credentials publishing `WARM_UP_READINGS` readings, each
/// acknowledged before the next.
async fn warm_up(port: u16) {
    let mut options = MqttOptions::new("warm-up", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut acked = 0;
    let mut next = 0;
    while acked < WARM_UP_READINGS {
        if next == acked && next < WARM_UP_READINGS {
            let reading = format!("{{\"seq\":{next},\"temperature\":21.5,\"battery\":3.7}}");
            client
                .publish(
                    "sensors/warm-up/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    reading,
                )
                .await
                .unwrap();
            next += 1;
        }
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}
}

/// Mosquitto's side of the consumer: one subscriber to every device's topic; `subscribed`
/// is told once the broker has granted the subscription.
async fn subscribe(
    port: u16,
    arrivals: Arc<Arrivals>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    let mut options = MqttOptions::new("consumer", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .subscribe("sensors/+/telemetry", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                arrivals.record(&publish.payload, unix_micros());
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(subscribed) = subscribed.take() {
                    let _ = subscribed.send(());
                }
            }
            Ok(_) => {}
            Err(error) => panic!("the subscriber lost its connection: {error}"),
        }
    }
}

/// The HTTP sink's receiver: HTTP/1.1 with keep-alive, every body recorded on arrival
/// and answered 200.
async fn receive(listener: TcpListener, arrivals: Arc<Arrivals>) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(serve(stream, arrivals.clone()));
    }
}

async fn serve(stream: TcpStream, arrivals: Arc<Arrivals>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        arrivals.record(&body, unix_micros());
        (reader.get_mut())
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

/// The broker side under test: the process whose memory and CPU count, the port the
/// devices connect to, and their credentials.
struct Broker {
    pid: u32,
    port: u16,
    logins: Option<Vec<(String, String)>>,
}

/// One run's figures.
struct Measured {
    baseline_rss: u64,
    rss: u64,
    rss_per_device: f64,
    cpu_us_per_reading: f64,
    /// The bench process's CPU over the window, in cores.
    client_cores: f64,
    p50_ms: f64,
    p99_ms: f64,
    sent: u64,
    lost: u64,
    duplicates: u64,
    errors: u64,
    rate: f64,
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

/// Warm the broker's path, connect `devices` devices, let them publish, and measure.
async fn measure(broker: &Broker, devices: usize, arrivals: Arc<Arrivals>) -> Measured {
    warm_up(broker.port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while arrivals.warm_up() < WARM_UP_READINGS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the warm-up readings came through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_rss = process::rss_bytes(broker.pid);

    let counters = Arc::new(Counters::default());
    let sending = Arc::new(AtomicBool::new(false));
    let start = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut fleet = JoinSet::new();
    for index in 0..devices {
        // Spread over the second: device i sends at i/N of it.
        let offset = Duration::from_secs(1).mul_f64(index as f64 / devices as f64);
        let login = broker.logins.as_ref().map(|logins| logins[index].clone());
        fleet.spawn(device(
            index as u32,
            broker.port,
            login,
            start + offset,
            sending.clone(),
            counters.clone(),
        ));
        if (index + 1) % CONNECT_BATCH == 0 {
            let target = (index + 1) as u64;
            while counters.connected.load(Ordering::Relaxed) < target {
                assert!(
                    tokio::time::Instant::now() < deadline + Duration::from_secs(120),
                    "devices connected: {} of {target}",
                    counters.connected.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    while counters.connected.load(Ordering::Relaxed) < devices as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sending.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1) + WARM_UP).await;

    let me = std::process::id();
    let (window_start, cpu_before, mine_before) = (
        unix_micros(),
        process::cpu_seconds(broker.pid),
        process::cpu_seconds(me),
    );
    tokio::time::sleep(WINDOW).await;
    let (window_end, cpu_after, mine_after) = (
        unix_micros(),
        process::cpu_seconds(broker.pid),
        process::cpu_seconds(me),
    );
    let rss = process::rss_bytes(broker.pid);
    sending.store(false, Ordering::Relaxed);

    // Let what was sent arrive (PUBACKs included) before the connections go.
    let drained = tokio::time::Instant::now() + DRAIN;
    let sent = counters.sent.load(Ordering::Relaxed);
    while (arrivals.distinct() < sent || counters.acknowledged.load(Ordering::Relaxed) < sent)
        && tokio::time::Instant::now() < drained
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.abort_all();
    while fleet.join_next().await.is_some() {}

    let seen = std::mem::take(&mut *arrivals.inner.lock().unwrap());
    let delivered_in_window = (seen.times.iter())
        .filter(|(_, arrived)| (window_start..window_end).contains(arrived))
        .count() as f64;
    let mut latencies: Vec<f64> = (seen.times.iter())
        .filter(|(sent, _)| (window_start..window_end).contains(sent))
        .map(|(sent, arrived)| arrived.saturating_sub(*sent) as f64 / 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let window_secs = (window_end - window_start) as f64 / 1e6;
    Measured {
        baseline_rss,
        rss,
        rss_per_device: (rss as f64 - baseline_rss as f64) / devices as f64,
        cpu_us_per_reading: (cpu_after - cpu_before) * 1e6 / delivered_in_window,
        client_cores: (mine_after - mine_before) / window_secs,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        sent,
        lost: sent.saturating_sub(seen.readings.len() as u64),
        duplicates: seen.duplicates,
        errors: counters.errors.load(Ordering::Relaxed),
        rate: delivered_in_window / window_secs,
    }
}

/// `device`'s fleet token: distinct per device, as `sluice fleet` hands them out.
fn token(device: usize) -> String {
    let mut x = (device as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    format!("{x:016x}{:016x}", x.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

/// The central host: its embedded broker admitting the `devices` fleet devices by
/// token (confined to `sensors/{device}/#`), and MQTT source → Wasm filter → HTTP sink
/// in batches to the receiver on `receiver_port`.
fn host_config(
    dir: &Path,
    api: u16,
    broker: u16,
    receiver_port: u16,
    devices: usize,
) -> std::path::PathBuf {
    let mut text = format!(
        r#"data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"

[broker]
listen = "127.0.0.1:{broker}"

[plugins.filter]
path = "{filter}"

[sources.telemetry]
type = "mqtt"
url = "mqtt://127.0.0.1:{broker}"
topics = ["sensors/+/telemetry"]
qos = 1

[transforms.valid]
type = "wasm"
plugin = "filter"
inputs = ["telemetry"]
config = {{ when = {{ all = [{{ field = "temperature", gt = -40.0 }}, {{ field = "battery", gte = 0.0 }}] }} }}

[sinks.out]
type = "http"
inputs = ["valid"]
url = "http://127.0.0.1:{receiver_port}/readings"
mode = "batch"
max_events = 100

[fleet]
groups.sensors = {{ config = "device.toml" }}
"#,
        data = dir.join("data").display(),
        filter = plugin("filter"),
    );
    // What the fleet serves its devices: readings through a durable uplink to this
    // broker, as the simulated devices send them.
    let device = harness::sensors_to_uplink(
        &format!("mqtt://127.0.0.1:{broker}"),
        "${SLUICE_DEVICE_ID}",
        1,
        1000,
        "max_bytes = 16777216",
    );
    std::fs::write(dir.join("device.toml"), device).unwrap();
    for index in 0..devices {
        writeln!(
            text,
            "devices.dev-{index} = {{ group = \"sensors\", token = \"{}\" }}",
            token(index)
        )
        .unwrap();
    }
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_sluice(runtime: &tokio::runtime::Runtime, devices: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let arrivals = Arc::new(Arrivals::default());
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let receiver_port = listener.local_addr().unwrap().port();
    let receiver = runtime.spawn(receive(listener, arrivals.clone()));
    let (api, port) = (free_port(), free_port());
    let config = host_config(dir.path(), api, port, receiver_port, devices);
    let host = Host::start(&config, api, Stdio::null());
    eprintln!("host pid {}", host.child.id());
    let broker = Broker {
        pid: host.child.id(),
        port,
        logins: Some(
            (0..devices)
                .map(|index| (format!("dev-{index}"), token(index)))
                .collect(),
        ),
    };
    let measured = runtime.block_on(measure(&broker, devices, arrivals));
    let log = host.log_text();
    host.stop();
    receiver.abort();
    if measured.lost > 0 {
        eprintln!("the host's log:\n{log}");
    }
    measured
}

fn run_mosquitto(runtime: &tokio::runtime::Runtime, devices: usize) -> Measured {
    let mosquitto = Mosquitto::start();
    let arrivals = Arc::new(Arrivals::default());
    let (subscribed, granted) = tokio::sync::oneshot::channel();
    let subscriber = runtime.spawn(subscribe(mosquitto.port, arrivals.clone(), subscribed));
    runtime.block_on(granted).unwrap();
    let broker = Broker {
        pid: mosquitto.pid(),
        port: mosquitto.port,
        logins: None,
    };
    let measured = runtime.block_on(measure(&broker, devices, arrivals));
    subscriber.abort();
    measured
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only: Option<usize> = std::env::var("SCALING_DEVICES")
        .ok()
        .map(|n| n.parse().expect("SCALING_DEVICES is a number of devices"));
    let mut rows = Vec::new();
    for devices in only.map_or(DEVICES.to_vec(), |n| vec![n]) {
        eprintln!("{devices} devices: Sluice (host pid below)");
        let sluice = run_sluice(&runtime, devices);
        eprintln!("{devices} devices: Mosquitto");
        let mosquitto = run_mosquitto(&runtime, devices);
        rows.push((devices, sluice, mosquitto));
    }
    println!(
        "| devices (1 reading/s each, QoS 1, own connection) | broker | readings/s delivered | RSS MiB (0 devices → N) | RSS KiB per device | CPU µs per reading | latency p50 ms | p99 ms | sent | lost (not received 30 s after the last send) | duplicates | client errors | load generator CPU (cores) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (devices, sluice, mosquitto) in &rows {
        for (name, m) in [
            ("Sluice: embedded broker → filter → HTTP", sluice),
            ("Mosquitto → one subscriber", mosquitto),
        ] {
            println!(
                "| {devices} | {name} | {:.0} | {:.1} → {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {:.2} |",
                m.rate,
                m.baseline_rss as f64 / 1048576.0,
                m.rss as f64 / 1048576.0,
                m.rss_per_device / 1024.0,
                m.cpu_us_per_reading,
                m.p50_ms,
                m.p99_ms,
                m.sent,
                m.lost,
                m.duplicates,
                m.errors,
                m.client_cores,
            );
        }
    }
    println!();
    println!(
        "| devices | RSS per device, Sluice / Mosquitto | CPU per reading, Sluice / Mosquitto | p99 latency, Sluice / Mosquitto |"
    );
    println!("|---:|---:|---:|---:|");
    for (devices, sluice, mosquitto) in &rows {
        println!(
            "| {devices} | {:.1}x | {:.1}x | {:.1}x |",
            sluice.rss_per_device / mosquitto.rss_per_device,
            sluice.cpu_us_per_reading / mosquitto.cpu_us_per_reading,
            sluice.p99_ms / mosquitto.p99_ms,
        );
    }
    if only.is_some() {
        return;
    }
    let out = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/benchmarks/scaling-devices.svg");
    std::fs::write(&out, plot(&rows)).unwrap();
    println!("plot: {}", out.display());
}

/// RSS per device, CPU per reading and p99 latency over N on a log axis, Sluice beside
/// Mosquitto.
fn plot(rows: &[(usize, Measured, Measured)]) -> String {
    let series = |value: fn(&Measured) -> f64| {
        vec![
            Series {
                label: "sluice",
                points: rows.iter().map(|r| (r.0 as f64, value(&r.1))).collect(),
            },
            Series {
                label: "mosquitto",
                points: rows.iter().map(|r| (r.0 as f64, value(&r.2))).collect(),
            },
        ]
    };
    plot::panels(
        "N",
        &DEVICES.map(|n| n as f64),
        Axis::Log10,
        &[
            Panel {
                title: "RSS KiB per device",
                series: series(|m| m.rss_per_device / 1024.0),
                band: None,
                decimals: 1,
            },
            Panel {
                title: "CPU µs per reading",
                series: series(|m| m.cpu_us_per_reading),
                band: None,
                decimals: 0,
            },
            Panel {
                title: "latency p99 ms",
                series: series(|m| m.p99_ms),
                band: None,
                decimals: 1,
            },
        ],
    )
}
