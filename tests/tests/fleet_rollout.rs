//! A staged rollout over ten agents in three waves (2 devices, 50%, 100%). Release 2's
//! plugin fails to start on the devices: the first wave refuses it, the rollout halts
//! naming the device and the release, the first wave runs release 1 on, and the other
//! eight devices are never offered release 2. Release 3, healthy, then reaches every
//! device wave by wave, in device-id order, and the rollout completes, as
//! `sluice fleet status` shows.

mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::fleet::*;
use harness::*;

fn ids() -> Vec<String> {
    (0..10).map(|n| format!("dev{n:02}")).collect()
}

/// The group's config `name`: a slow simulated sensor into a file sink on the device,
/// through the hostile fixture with a config it cannot read when `failing` (its init
/// fails: the pipeline cannot start).
fn group_config(dir: &Path, name: &str, interval_ms: u64, failing: bool) -> PathBuf {
    let mut text = format!(
        r#"
[plugins.sensor-sim]
path = "{sim}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = {interval_ms}
config = {{ devices = 1 }}
"#,
        sim = plugin("sensor-sim")
    );
    let input = if failing {
        text.push_str(&format!(
            r#"
[plugins.hostile]
path = "{hostile}"

[transforms.checked]
type = "wasm"
plugin = "hostile"
inputs = ["sensors"]
config = {{}}
"#,
            hostile = plugin("fixture-hostile")
        ));
        "checked"
    } else {
        "sensors"
    };
    text.push_str(&format!(
        "\n[sinks.out]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"out\"\n"
    ));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn rollout(api: u16) -> serde_json::Value {
    admin_get(api, "/fleet/v1/rollouts")["edge"].clone()
}

/// `/fleet/v1/devices` every 200 ms, with when it was read, until dropped.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(api: u16) -> Sampler {
        let sampler = Sampler {
            samples: Arc::default(),
            stop: Arc::default(),
        };
        let (samples, stop) = (sampler.samples.clone(), sampler.stop.clone());
        std::thread::spawn(move || {
            let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
            while !stop.load(Ordering::SeqCst) {
                if let Some((200, body)) = http_get_with(api, "/fleet/v1/devices", &[&auth])
                    && let Ok(devices) = serde_json::from_str(&body)
                {
                    samples.lock().unwrap().push((Instant::now(), devices));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        sampler
    }

    fn samples(&self) -> Vec<(Instant, serde_json::Value)> {
        self.samples.lock().unwrap().clone()
    }

    /// When each device was first seen with `field` (`applied`, `offered`) `id`.
    fn first_seen(&self, field: &str, id: &str) -> BTreeMap<String, Instant> {
        let mut first = BTreeMap::new();
        for (at, devices) in self.samples() {
            for (device, status) in devices.as_object().unwrap() {
                if status[field] == id {
                    first.entry(device.clone()).or_insert(at);
                }
            }
        }
        first
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_failing_release_halts_on_its_first_wave_and_a_healthy_one_reaches_every_wave_in_order() {
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    let (key, trust) = keygen(&dir.join("keys"));
    let releases = dir.join("releases");
    let first = make_release(
        &group_config(dir, "v1.toml", 500, false),
        "edge",
        &key,
        &releases,
    );
    let r1 = release_id(&first);
    let api = free_port();
    let devices_and_tokens: Vec<(String, String)> = ids()
        .into_iter()
        .map(|id| {
            let token = format!("{id}-token");
            (id, token)
        })
        .collect();
    let config = central_config(
        dir,
        api,
        "rollout = { waves = [2, \"50%\", \"100%\"], soak_secs = 3, max_wave_secs = 60 }",
        &devices_and_tokens,
    );
    let _central = Host::start(&config, api, Stdio::null());
    let central = format!("http://127.0.0.1:{api}");
    let agents: BTreeMap<String, Agent> = devices_and_tokens
        .iter()
        .map(|(id, token)| (id.clone(), start_agent(&central, id, token, &trust)))
        .collect();
    let all_run = |release: &str| {
        let devices = devices(api);
        ids().iter().all(|id| devices[id]["applied"] == release)
    };
    wait_until(Duration::from_secs(40), "every device on release 1", || {
        all_run(&r1) && agents.values().all(|agent| agent.lines("out") > 0)
    });
    let sampler = Sampler::start(api);

    // Release 2: its plugin cannot start on the devices.
    let second = make_release(
        &group_config(dir, "v2.toml", 500, true),
        "edge",
        &key,
        &releases,
    );
    let r2 = release_id(&second);
    wait_until(
        Duration::from_secs(30),
        "the rollout of release 2 to halt",
        || rollout(api)["state"] == "halted",
    );
    let halted = rollout(api);
    assert_eq!(
        (halted["from"].as_u64(), halted["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(halted["wave"], 0, "{halted}");
    let reason = halted["reason"].as_str().unwrap();
    assert!(
        reason == "device `dev00` refused release 2"
            || reason == "device `dev01` refused release 2",
        "{halted}"
    );
    // The first wave runs release 1 on, and is told so: nothing left to report.
    wait_until(
        Duration::from_secs(15),
        "the first wave back on release 1",
        || {
            let devices = devices(api);
            ["dev00", "dev01"].iter().all(|id| {
                let status = &devices[id];
                status["applied"] == r1.as_str()
                    && status["offered"] == r1.as_str()
                    && status["error"].is_null()
            })
        },
    );
    // The device the reason names refused it, its plugin failing to start; its wave's
    // other device refused it too, or halted first, was never offered it.
    let named = if reason.contains("dev00") {
        "dev00"
    } else {
        "dev01"
    };
    for id in ["dev00", "dev01"] {
        let agent = &agents[id];
        let log = agent.log();
        let mentions: Vec<&str> = log.lines().filter(|line| line.contains(&r2)).collect();
        assert!(
            mentions
                .iter()
                .all(|line| line.contains("refused a release")
                    && line.contains("(plugin `hostile`): init failed")),
            "{id} only ever refused release 2:\n{log}"
        );
        assert!(
            id != named || !mentions.is_empty(),
            "{id} refused release 2:\n{log}"
        );
        let before = agent.lines("out");
        wait_until(Duration::from_secs(10), "release 1 writing on", || {
            agent.lines("out") > before
        });
    }
    // A few polls of the halted rollout.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rollout(api)["state"], "halted");

    // Release 3, healthy: from release 1 (the stable one), wave by wave.
    let third = make_release(
        &group_config(dir, "v3.toml", 400, false),
        "edge",
        &key,
        &releases,
    );
    let r3 = release_id(&third);
    wait_until(
        Duration::from_secs(60),
        "the rollout of release 3 to complete",
        || {
            let rollout = rollout(api);
            rollout["to"] == 3 && rollout["state"] == "completed"
        },
    );
    let completed = rollout(api);
    assert_eq!(completed["from"], 1, "{completed}");
    assert_eq!(
        completed["waves"].as_array().map(Vec::len),
        Some(3),
        "{completed}"
    );
    assert!(all_run(&r3), "{}", devices(api));
    sampler.stop.store(true, Ordering::SeqCst);

    // The devices past the first wave never had release 2: not offered, not run, not
    // refused.
    let ids = ids();
    let (first_wave, later) = ids.split_at(2);
    assert!(!sampler.samples().is_empty());
    for (at, devices) in sampler.samples() {
        for id in later {
            let status = &devices[id];
            assert!(
                status["offered"] != r2.as_str() && status["applied"] != r2.as_str(),
                "{id} at {at:?}: {status}"
            );
        }
        for id in first_wave {
            assert_ne!(
                devices[id]["applied"],
                r2.as_str(),
                "{id} never ran release 2"
            );
        }
    }
    for id in later {
        let log = agents[id].log();
        assert!(!log.contains(&r2), "{id} heard of release 2:\n{log}");
    }

    // Release 3's waves in order: dev00-01, then dev02-04 (50%), then dev05-09.
    let offered = sampler.first_seen("offered", &r3);
    let applied = sampler.first_seen("applied", &r3);
    let waves = [&ids[0..2], &ids[2..5], &ids[5..10]];
    for id in &ids {
        assert!(applied.contains_key(id), "{id} ran release 3: {applied:?}");
    }
    for pair in waves.windows(2) {
        let (earlier, next) = (pair[0], pair[1]);
        let done = earlier.iter().map(|id| applied[id]).max().unwrap();
        let started = next.iter().map(|id| offered[id]).min().unwrap();
        assert!(
            done < started,
            "wave {earlier:?} ran release 3 before wave {next:?} was offered it \
             (offered {offered:?}, applied {applied:?})"
        );
    }

    // `sluice fleet status` shows the completed rollout.
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let output = Command::new(sluice_binary())
        .args(["fleet", "status", "--central", &central, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .any(|row| row[..] == ["edge", "1", "3", "3/3", "completed"]),
        "{stdout}"
    );
    for id in &ids {
        assert!(
            rows.iter()
                .any(|row| row.len() >= 4 && row[0] == id && row[2] == r3 && row[3] == r3),
            "{id} on release 3 in:\n{stdout}"
        );
    }
}
