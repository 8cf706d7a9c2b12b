//! `sysstat`: CPU, memory and load of the machine, read from `/proc`.
//!
//! The plugin reads files only: the stage must grant the host's `/proc` read-only at the
//! guest path `proc_dir` (default `/proc`). CPU usage is the busy share of CPU time
//! between two ticks, so the first tick reports none.
//!
//! ```toml
//! [plugins.sysstat]
//! path = "sysstat.wasm"
//! grants.dirs = [{ host = "/proc", guest = "/proc" }]
//! ```

use serde::{Deserialize, Serialize};
use sluice_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_proc_dir")]
    pub proc_dir: String,
    /// Name reported in the `host` field.
    #[serde(default)]
    pub host: Option<String>,
}

fn default_proc_dir() -> String {
    "/proc".to_owned()
}

#[derive(Serialize)]
struct Stats<'a> {
    host: &'a str,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_percent: Option<f64>,
    mem_total_kb: u64,
    mem_available_kb: u64,
    mem_used_percent: f64,
    load1: f64,
    load5: f64,
    load15: f64,
}

pub struct Sysstat {
    proc_dir: String,
    host: String,
    last_cpu: Option<CpuTimes>,
}

#[derive(Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl Sysstat {
    fn read(&self, file: &str) -> Result<String, Error> {
        let path = format!("{}/{file}", self.proc_dir);
        std::fs::read_to_string(&path).map_err(|error| {
            Error::new(format!(
                "cannot read {path}: {error} (is it granted to this stage?)"
            ))
        })
    }
}

/// Aggregate CPU times from the first line of `/proc/stat`.
fn parse_cpu(stat: &str) -> Result<CpuTimes, Error> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no `cpu` line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 4 {
        return Err(Error::new("short `cpu` line in /proc/stat"));
    }
    let total: u64 = fields.iter().sum();
    // idle + iowait are not busy.
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy: total - idle,
        total,
    })
}

fn parse_meminfo(meminfo: &str, name: &str) -> Result<u64, Error> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::new(format!("no `{name}` in /proc/meminfo")))
}

fn parse_loadavg(loadavg: &str) -> Result<[f64; 3], Error> {
    let mut numbers = loadavg.split_whitespace().map(str::parse::<f64>);
    let mut next = || {
        numbers
            .next()
            .and_then(Result::ok)
            .ok_or("malformed /proc/loadavg")
    };
    Ok([next()?, next()?, next()?])
}

impl Collector for Sysstat {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        let host = config.host.unwrap_or_else(|| "localhost".to_owned());
        Ok(Sysstat {
            proc_dir: config.proc_dir.trim_end_matches('/').to_owned(),
            host,
            last_cpu: None,
        })
    }

    fn collect(&mut self, out: &mut Output) -> Result<(), Error> {
        let cpu = parse_cpu(&self.read("stat")?)?;
        let cpu_percent = self.last_cpu.and_then(|last| {
            let total = cpu.total.checked_sub(last.total).filter(|t| *t > 0)?;
            Some(
                (cpu.busy.saturating_sub(last.busy) as f64 * 10000.0 / total as f64).round()
                    / 100.0,
            )
        });
        self.last_cpu = Some(cpu);
        let meminfo = self.read("meminfo")?;
        let total = parse_meminfo(&meminfo, "MemTotal")?;
        let available = parse_meminfo(&meminfo, "MemAvailable")?;
        let [load1, load5, load15] = parse_loadavg(&self.read("loadavg")?)?;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        let stats = Stats {
            host: &self.host,
            ts,
            cpu_percent,
            mem_total_kb: total,
            mem_available_kb: available,
            mem_used_percent: ((total - available.min(total)) as f64 * 10000.0
                / total.max(1) as f64)
                .round()
                / 100.0,
            load1,
            load5,
            load15,
        };
        let mut event = NewEvent::json(&stats)?;
        event.key = Some(self.host.clone().into_bytes());
        event.timestamp_ms = ts;
        event.origin = "sysstat".to_owned();
        out.push(&event, None);
        Ok(())
    }
}

sluice_sdk::export_collector!(Sysstat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpu = parse_cpu("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!((cpu.busy, cpu.total), (150, 1000));
        assert_eq!(
            parse_meminfo(
                "MemTotal:  2048 kB\nMemAvailable: 1024 kB\n",
                "MemAvailable"
            )
            .unwrap(),
            1024
        );
        assert_eq!(
            parse_loadavg("0.50 0.25 0.10 1/100 42").unwrap(),
            [0.5, 0.25, 0.1]
        );
    }
}
