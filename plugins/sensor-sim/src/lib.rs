//! `sensor-sim`: synthetic telemetry from a fleet of simulated devices, standing in
//! for real sensors in demos, tests and benchmarks.
//!
//! Each tick emits `events_per_device` readings per device:
//! `{"device_id","seq","ts","temperature","vibration","battery"}` keyed by the device id.
//! A reading is anomalous (overheating and shaking) with probability `anomaly_rate`;
//! the simulator marks those with the header `sim-anomaly: true` as ground truth.
//! Sequence numbers live in stage state, so they keep counting across restarts.
//!
//! ```toml
//! [sources.devices.config]
//! devices = 5
//! anomaly_rate = 0.02
//! ```

use serde::{Deserialize, Serialize};
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_devices")]
    pub devices: u32,
    #[serde(default = "default_prefix")]
    pub device_prefix: String,
    #[serde(default = "default_anomaly_rate")]
    pub anomaly_rate: f64,
    #[serde(default = "default_events_per_device")]
    pub events_per_device: u32,
    /// Fixed seed for reproducible runs; otherwise seeded from the clock.
    #[serde(default)]
    pub seed: Option<u64>,
}

fn default_devices() -> u32 {
    3
}
fn default_prefix() -> String {
    "sensor-".to_owned()
}
fn default_anomaly_rate() -> f64 {
    0.02
}
fn default_events_per_device() -> u32 {
    1
}

#[derive(Serialize)]
struct Reading<'a> {
    device_id: &'a str,
    seq: u64,
    ts: i64,
    temperature: f64,
    vibration: f64,
    battery: f64,
}

struct Device {
    id: String,
    battery: f64,
    baseline: f64,
}

pub struct SensorSim {
    devices: Vec<Device>,
    anomaly_rate: f64,
    events_per_device: u32,
    rng: SplitMix64,
}

impl Collector for SensorSim {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&config.anomaly_rate) {
            return Err(Error::new(format!(
                "`anomaly_rate` must be within 0..=1, got {}",
                config.anomaly_rate
            )));
        }
        if config.devices == 0 {
            return Err(Error::new("`devices` must be at least 1"));
        }
        let seed = config.seed.unwrap_or_else(|| now_ms() as u64);
        let mut rng = SplitMix64(seed);
        let devices = (0..config.devices)
            .map(|n| Device {
                id: format!("{}{n:03}", config.device_prefix),
                battery: 60.0 + rng.next_f64() * 40.0,
                baseline: 19.0 + rng.next_f64() * 6.0,
            })
            .collect();
        Ok(SensorSim {
            devices,
            anomaly_rate: config.anomaly_rate,
            events_per_device: config.events_per_device,
            rng,
        })
    }

    fn collect(&mut self, out: &mut Output) -> Result<(), Error> {
        let ts = now_ms();
        for device in &mut self.devices {
            let seq_key = format!("seq/{}", device.id);
            let mut seq = state::get(&seq_key)
                .and_then(|v| v.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            for _ in 0..self.events_per_device {
                let anomaly = self.rng.next_f64() < self.anomaly_rate;
                let noise = self.rng.next_f64() - 0.5;
                let (temperature, vibration) = if anomaly {
                    (
                        85.0 + self.rng.next_f64() * 35.0,
                        8.0 + self.rng.next_f64() * 7.0,
                    )
                } else {
                    (
                        device.baseline + noise * 2.0,
                        0.5 + self.rng.next_f64() * 1.5,
                    )
                };
                device.battery = (device.battery - 0.01).max(0.0);
                seq += 1;
                let reading = Reading {
                    device_id: &device.id,
                    seq,
                    ts,
                    temperature: round2(temperature),
                    vibration: round2(vibration),
                    battery: round2(device.battery),
                };
                let mut event = NewEvent::json(&reading)?;
                event.key = Some(device.id.clone().into_bytes());
                event.timestamp_ms = ts;
                event.origin = "sensor-sim".to_owned();
                if anomaly {
                    event
                        .headers
                        .push(("sim-anomaly".to_owned(), b"true".to_vec()));
                }
                out.push(&event, None);
            }
            state::put(&seq_key, &seq.to_le_bytes());
        }
        Ok(())
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A small, fast, seedable generator (SplitMix64); simulation needs no crypto.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

sluice_sdk::export_collector!(SensorSim);
