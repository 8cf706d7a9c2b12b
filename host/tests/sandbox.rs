//! The sandbox holds against hostile plugins: each misbehaviour becomes a typed error
//! that names the stage and plugin, and the host goes on serving the next batch.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sluice::runtime::{CallFailure, Limits, PluginError, Runtime, RuntimeOptions, World};

const GOOD: &str = r#"{"ok":true}"#;
const POISON: &str = r#"{"poison":true}"#;

fn hostile(
    runtime: &Runtime,
    behaviour: &str,
    target: &str,
    limits: Limits,
) -> sluice::runtime::InstancePool {
    let mut spec = spec(
        "hostile-stage",
        json!({"behaviour": behaviour, "target": target}),
    );
    spec.limits = limits;
    pool(runtime, "fixture-hostile", World::Processor, spec)
}

fn failure(result: Result<sluice::runtime::Processed, PluginError>) -> (CallFailure, String) {
    let error = result.expect_err("the batch should fail");
    let message = error.to_string();
    assert!(message.contains("stage `hostile-stage`"), "{message}");
    assert!(message.contains("plugin `fixture-hostile`"), "{message}");
    (error.failure().expect("a call failure").clone(), message)
}

/// After any failure the same pool must process a good batch correctly.
fn still_serves(pool: &sluice::runtime::InstancePool) {
    let processed = pool
        .process(&events(&[GOOD, GOOD]))
        .expect("the pool recovers");
    assert_eq!(payloads(&processed), [GOOD, GOOD]);
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let runtime = runtime();
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let pool = hostile(&runtime, "loop", "", limits);
    let (failure, message) = failure(pool.process(&events(&[POISON])));
    assert_eq!(
        failure,
        CallFailure::Timeout(Duration::from_millis(50)),
        "{message}"
    );
    assert!(message.contains("deadline"), "{message}");
    still_serves(&pool);
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_when_fuel_is_metered() {
    let runtime = Runtime::new(RuntimeOptions {
        fuel: true,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let limits = Limits {
        fuel: Some(5_000_000),
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let pool = hostile(&runtime, "loop", "", limits);
    let (failure, _) = failure(pool.process(&events(&[POISON])));
    assert_eq!(failure, CallFailure::OutOfFuel(5_000_000));
    still_serves(&pool);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let runtime = runtime();
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let pool = hostile(&runtime, "alloc", "", limits);
    let (failure, message) = failure(pool.process(&events(&[POISON])));
    match failure {
        CallFailure::OutOfMemory { limit, desired } => {
            assert_eq!(limit, 16 << 20);
            assert!(desired > limit);
        }
        other => panic!("expected out of memory, got {other:?}: {message}"),
    }
    still_serves(&pool);
}

#[test]
fn files_outside_the_grants_cannot_be_read() {
    let runtime = runtime();
    let pool = hostile(&runtime, "read-file", "/etc/passwd", Limits::default());
    let processed = pool.process(&events(&[POISON])).unwrap();
    assert!(
        processed.emitted.is_empty(),
        "leaked: {:?}",
        payloads(&processed)
    );
    assert_eq!(processed.rejected.len(), 1);
    assert!(
        processed.rejected[0]
            .reason
            .starts_with("read /etc/passwd:"),
        "{:?}",
        processed.rejected
    );
}

#[test]
fn granted_directories_are_readable_but_not_more() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allowed.txt"), "granted").unwrap();
    let runtime = runtime();
    let mut spec = spec(
        "hostile-stage",
        json!({"behaviour": "read-file", "target": "/data/allowed.txt"}),
    );
    spec.grants.dirs.push(sluice::runtime::DirGrant {
        host: dir.path().to_owned(),
        guest: "/data".into(),
        writable: false,
    });
    let pool = pool(&runtime, "fixture-hostile", World::Processor, spec.clone());
    assert_eq!(
        payloads(&pool.process(&events(&[POISON])).unwrap()),
        ["granted"]
    );
    spec.config = json!({"behaviour": "read-file", "target": "/data/../../etc/passwd"}).to_string();
    let escaping = common::pool(&runtime, "fixture-hostile", World::Processor, spec);
    let processed = escaping.process(&events(&[POISON])).unwrap();
    assert!(
        processed.emitted.is_empty(),
        "escaped the granted directory"
    );
}

#[test]
fn sockets_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let runtime = runtime();
    let pool = hostile(&runtime, "socket", &target, Limits::default());
    let processed = pool.process(&events(&[POISON])).unwrap();
    assert!(processed.emitted.is_empty(), "the plugin connected");
    assert!(
        processed.rejected[0]
            .reason
            .starts_with(&format!("connect {target}:")),
        "{:?}",
        processed.rejected
    );
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
}

#[test]
fn environment_variables_need_a_grant() {
    let runtime = runtime();
    let pool = hostile(&runtime, "env", "PATH", Limits::default());
    let processed = pool.process(&events(&[POISON])).unwrap();
    assert!(processed.emitted.is_empty(), "read an ungranted variable");
    assert!(processed.rejected[0].reason.starts_with("env PATH:"));

    let mut granted = spec(
        "hostile-stage",
        json!({"behaviour": "env", "target": "PATH"}),
    );
    granted.grants.env.push("PATH".into());
    let pool = common::pool(&runtime, "fixture-hostile", World::Processor, granted);
    assert_eq!(
        payloads(&pool.process(&events(&[POISON])).unwrap()),
        [std::env::var("PATH").unwrap()]
    );
}

#[test]
fn a_panic_is_a_trap_that_carries_the_panic_message() {
    let runtime = runtime();
    let pool = hostile(&runtime, "panic", "", Limits::default());
    let (failure, message) = failure(pool.process(&events(&[POISON])));
    match failure {
        CallFailure::Trap { stderr, .. } => assert!(
            stderr.contains("hostile plugin panics on purpose"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    still_serves(&pool);
}

#[test]
fn malformed_output_is_refused() {
    let runtime = runtime();
    let pool = hostile(&runtime, "malformed", "", Limits::default());
    let (failure, message) = failure(pool.process(&events(&[POISON])));
    assert!(
        matches!(failure, CallFailure::MalformedOutput(_)),
        "{message}"
    );
    assert!(message.contains("outside the data buffer"), "{message}");
    still_serves(&pool);
}

#[test]
fn a_failing_batch_gives_up_only_its_bad_events() {
    let runtime = runtime();
    let pool = hostile(&runtime, "panic", "", Limits::default());
    let mut input: Vec<String> = (0..10).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    input[3] = r#"{"n":3,"poison":1}"#.into();
    input[8] = r#"{"n":8,"poison":1}"#.into();
    let refs: Vec<&str> = input.iter().map(String::as_str).collect();
    let (processed, _) = pool.process_isolating(&events(&refs)).unwrap();
    let inputs: Vec<usize> = processed.emitted.iter().map(|e| e.input).collect();
    assert_eq!(inputs, [0, 1, 2, 4, 5, 6, 7, 9]);
    let rejected: Vec<usize> = processed.rejected.iter().map(|r| r.input).collect();
    assert_eq!(rejected, [3, 8]);
    assert!(
        processed
            .rejected
            .iter()
            .all(|r| r.reason.contains("panics on purpose"))
    );
}

#[test]
fn a_file_that_is_not_wasm_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "just some text").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let runtime = runtime();
    let error = runtime
        .load("notes", &text, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("plugin `notes`") && error.contains("magic bytes"),
        "{error}"
    );
    let error = runtime.load("core", &core, None).err().unwrap().to_string();
    assert!(error.contains("core WebAssembly module"), "{error}");
}

#[test]
fn a_plugin_of_the_wrong_world_is_refused() {
    let runtime = runtime();
    let collector = runtime
        .load("sensor-sim", &plugin_path("sensor-sim"), None)
        .unwrap();
    let error = sluice::runtime::InstancePool::new(
        &runtime,
        collector,
        World::Processor,
        spec("transform-1", json!({})),
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        error,
        "plugin `sensor-sim` exports `init`, `collect` so it is a `collector`, but stage `transform-1` needs a `processor` plugin"
    );
}

#[test]
fn a_pin_mismatch_stops_the_load() {
    let runtime = runtime();
    let error = runtime
        .load("filter", &plugin_path("filter"), Some(&"0".repeat(64)))
        .err()
        .unwrap()
        .to_string();
    assert!(error.starts_with("plugin `filter` ("), "{error}");
    assert!(
        error.contains(&format!("but the config pins {}", "0".repeat(64))),
        "{error}"
    );
}

#[test]
fn compiled_plugins_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: Some(cache.path().to_owned()),
        fuel: false,
    };
    let first = Runtime::new(options.clone()).unwrap();
    assert!(!first.load("map", &plugin_path("map"), None).unwrap().cached);
    drop(first);
    let restarted = Runtime::new(options).unwrap();
    assert!(
        restarted
            .load("map", &plugin_path("map"), None)
            .unwrap()
            .cached,
        "a restart must not recompile"
    );
    let fuel = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().to_owned()),
        fuel: true,
    })
    .unwrap();
    assert!(
        !fuel.load("map", &plugin_path("map"), None).unwrap().cached,
        "other engine settings compile afresh"
    );
}

#[test]
fn a_precompiled_artifact_runs_when_it_fits_and_the_wasm_is_compiled_when_it_does_not() {
    use sluice::runtime::precompiled::{Precompiled, TARGET, precompile};
    let wasm = std::fs::read(plugin_path("map")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, target: &str, fuel: bool| {
        let path = dir.path().join(name);
        std::fs::write(&path, precompile(&wasm, target, fuel).unwrap()).unwrap();
        path
    };
    let native = write("native.cwasm", TARGET, false);
    let foreign = write("aarch64.cwasm", "aarch64-unknown-linux-gnu", false);
    let no_cache = |fuel| {
        Runtime::new(RuntimeOptions {
            cache_dir: None,
            fuel,
        })
        .unwrap()
    };
    let load = |runtime: &Runtime, path| {
        let artifact = Precompiled { path, sha256: None };
        runtime
            .load_with("map", &plugin_path("map"), None, Some(artifact))
            .unwrap()
            .cached
    };
    assert!(
        load(&no_cache(false), &native),
        "this machine's artifact is run"
    );
    assert!(
        !load(&no_cache(false), &foreign),
        "another CPU's is compiled afresh"
    );
    assert!(
        !load(&no_cache(true), &native),
        "so are other engine settings"
    );
    // The pin still holds with an artifact beside the Wasm.
    let error = no_cache(false)
        .load_with(
            "map",
            &plugin_path("map"),
            Some(&"0".repeat(64)),
            Some(Precompiled {
                path: &native,
                sha256: None,
            }),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("but the config pins"), "{error}");

    // An artifact with a pin is hashed before it loads: the right bytes run, other
    // bytes are refused rather than loaded (or compiled around).
    let native_sha = sluice::runtime::sha256_hex(&std::fs::read(&native).unwrap());
    let pinned = |sha256: &str| {
        no_cache(false).load_with(
            "map",
            &plugin_path("map"),
            None,
            Some(Precompiled {
                path: &native,
                sha256: Some(sha256),
            }),
        )
    };
    assert!(pinned(&native_sha).unwrap().cached);
    let error = pinned(&"0".repeat(64)).err().unwrap().to_string();
    assert!(
        error.contains("its precompiled artifact") && error.contains("it is not loaded"),
        "{error}"
    );
    let mut bytes = std::fs::read(&native).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&native, bytes).unwrap();
    let error = pinned(&native_sha).err().unwrap().to_string();
    assert!(error.contains("but the config pins"), "{error}");
}

#[test]
fn a_bad_init_config_fails_before_any_event() {
    let runtime = runtime();
    let loaded = runtime
        .load("filter", &plugin_path("filter"), None)
        .unwrap();
    let error = sluice::runtime::InstancePool::new(
        &runtime,
        loaded,
        World::Processor,
        spec("hot", json!({"when": {"field": "t", "hotter": 1}})),
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.starts_with("stage `hot` (plugin `filter`): init failed: invalid plugin config:"),
        "{error}"
    );
    assert!(
        error.contains("unknown operator `hotter` on `t`"),
        "{error}"
    );
}

#[test]
fn a_plugin_that_fails_on_everything_is_not_bisected_forever() {
    let runtime = runtime();
    let pool = hostile(&runtime, "panic", "", Limits::default());
    let poisoned: Vec<&str> = vec![POISON; 256];
    let (processed, _) = pool.process_isolating(&events(&poisoned)).unwrap();
    assert!(processed.emitted.is_empty());
    assert_eq!(
        processed.rejected.len(),
        256,
        "every event is still accounted for"
    );
    assert!(
        processed.rejected.iter().any(|r| r
            .reason
            .ends_with("(not isolated further: the batch used up its isolation calls)")),
        "{:?}",
        processed.rejected.first()
    );
}
