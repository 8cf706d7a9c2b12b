//! The contract's versioning holds: a plugin built against the frozen 0.1.0 contract
//! (`tests/fixtures/contract-0.1.0`) loads and runs on this host, whose contract is
//! later (0.1.z), with every import resolved semver-compatibly; and plugins built
//! against the live contract use what it added.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use sluice::runtime::World;
use sluice::state::Transaction;

/// The live contract's version, from `wit/plugin.wit`.
fn live_version() -> String {
    let wit = include_str!("../../wit/plugin.wit");
    let line = wit
        .lines()
        .find_map(|l| l.strip_prefix("package sluice:plugin@"))
        .expect("a package line");
    line.trim_end_matches(';').to_owned()
}

#[test]
fn a_plugin_built_against_0_1_0_runs_on_this_host() {
    assert_ne!(live_version(), "0.1.0", "the live contract has moved on");
    let runtime = runtime();
    let loaded = runtime
        .load(
            "contract-0.1.0",
            &plugin_path("fixture-contract-0-1-0"),
            None,
        )
        .unwrap();
    let imports: Vec<String> = loaded
        .imports(&runtime)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("sluice:plugin/"))
        .collect();
    for interface in ["log", "metrics", "state"] {
        assert!(
            imports.contains(&format!("sluice:plugin/{interface}@0.1.0")),
            "the fixture should import {interface}@0.1.0: {imports:?}"
        );
    }
    let spec = spec("old-plugin", json!({}));
    let store = spec.state.clone();
    let pool = sluice::runtime::InstancePool::new(&runtime, loaded, World::Processor, spec, 1)
        .expect("0.1.0 links against this host");
    let first = pool
        .process(&events(&[r#"{"a":1}"#, r#"{"a":2}"#]))
        .unwrap();
    assert_eq!(payloads(&first), [r#"{"a":1}"#, r#"{"a":2}"#]);
    pool.process(&events(&[r#"{"a":3}"#])).unwrap();
    let count = Transaction::new(store, Arc::from("old-plugin"))
        .get("count")
        .unwrap()
        .expect("the plugin's state");
    assert_eq!(u64::from_le_bytes(count.try_into().unwrap()), 3);
}

#[test]
fn plugins_built_against_the_live_contract_import_its_version() {
    let runtime = runtime();
    let loaded = runtime
        .load("fixture-hostile", &plugin_path("fixture-hostile"), None)
        .unwrap();
    let version = live_version();
    let names: Vec<String> = loaded
        .imports(&runtime)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(
        names.contains(&format!("sluice:plugin/limits@{version}")),
        "{names:?}"
    );
}
