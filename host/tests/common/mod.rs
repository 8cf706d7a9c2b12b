//! Helpers shared by the host's integration tests. Plugins come from
//! `scripts/build-plugins` (in `target/plugins`, or `$SLUICE_PLUGIN_DIR`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use sluice::event::Event;
use sluice::runtime::{Grants, InstancePool, Limits, Runtime, RuntimeOptions, StageSpec, World};
use sluice::state::StateStore;

pub fn plugin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("SLUICE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins first",
        path.display()
    );
    path
}

/// A runtime whose compile cache lives in the build tree: large interpreter
/// components (Python, JavaScript) compile once for all tests.
pub fn runtime() -> Arc<Runtime> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let cache = target.join("component-cache");
    Runtime::new(RuntimeOptions {
        cache_dir: Some(cache),
        fuel: false,
    })
    .unwrap()
}

pub fn spec(stage: &str, config: Value) -> StageSpec {
    StageSpec {
        stage: Arc::from(stage),
        config: config.to_string(),
        limits: Limits::default(),
        grants: Grants::default(),
        state: StateStore::in_memory(),
        models: Default::default(),
    }
}

pub fn pool(runtime: &Runtime, plugin: &str, world: World, spec: StageSpec) -> InstancePool {
    let loaded = runtime.load(plugin, &plugin_path(plugin), None).unwrap();
    InstancePool::new(runtime, loaded, world, spec, 1).unwrap()
}

pub fn events(payloads: &[&str]) -> Vec<Event> {
    payloads
        .iter()
        .map(|p| Event::new(p.as_bytes().to_vec(), "test"))
        .collect()
}

pub fn payloads(processed: &sluice::runtime::Processed) -> Vec<String> {
    processed
        .emitted
        .iter()
        .map(|e| String::from_utf8_lossy(&e.event.payload).into_owned())
        .collect()
}

/// The problems of a config that must be refused (`${TOKEN}` is set).
pub fn errors(text: &str) -> sluice::config::ConfigErrors {
    sluice::config::Config::from_text(std::path::Path::new("pipeline.toml"), text, |name| {
        (name == "TOKEN").then(|| "t0k".to_owned())
    })
    .expect_err("the config should be refused")
}

/// The (line, column) of the first occurrence of `needle` in `text`.
pub fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the config"));
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The one diagnostic of `errors`: (message, hint, position).
pub fn only(errors: &sluice::config::ConfigErrors) -> (String, Option<String>, (usize, usize)) {
    assert_eq!(errors.diagnostics.len(), 1, "{errors}");
    let d = &errors.diagnostics[0];
    (
        d.message.clone(),
        d.hint.clone(),
        errors.positions()[0].expect("a position"),
    )
}
