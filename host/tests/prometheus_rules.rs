//! The Prometheus alerting rules that `docs/` ships for the host's metrics: promtool
//! accepts them (`check rules`), they fire as their unit tests say (`test rules`), every
//! alert has such a test, and every `sluice_*` series they read is one the host serves.
//!
//! promtool comes from Debian's `prometheus` package (`scripts/setup` installs it). A
//! machine without it fails here rather than skipping: rules nobody checked would ship.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/prometheus")
}

/// Run `promtool ARGS` in `docs/prometheus`, and fail with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(docs())
        .output()
        .unwrap_or_else(|error| {
            panic!("promtool cannot run ({error}): install Debian's `prometheus` (scripts/setup)")
        });
    assert!(
        output.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(name: &str) -> String {
    std::fs::read_to_string(docs().join(name)).unwrap()
}

/// The words following `key: ` on the lines of `text` that have it.
fn values_of<'a>(text: &'a str, key: &str) -> BTreeSet<&'a str> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
        .collect()
}

/// Every `sluice_…` name in `text`.
fn sluice_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sluice_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn promtool_accepts_the_rules() {
    promtool(&["check", "rules", "sluice-alerts.yml"]);
}

#[test]
fn the_rules_fire_as_their_unit_tests_say() {
    promtool(&["test", "rules", "sluice-alerts.test.yml"]);
}

#[test]
fn every_alert_has_a_unit_test() {
    let (rules, tests) = (read("sluice-alerts.yml"), read("sluice-alerts.test.yml"));
    let alerts = values_of(&rules, "- alert");
    let tested = values_of(&tests, "alertname");
    assert!(alerts.len() >= 8, "{alerts:?}");
    let untested: Vec<_> = alerts.difference(&tested).collect();
    assert!(untested.is_empty(), "alerts without a test: {untested:?}");
}

#[test]
fn the_rules_read_only_series_the_host_serves() {
    let mut served = BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                served.extend(
                    sluice_names(&source)
                        .into_iter()
                        .filter(|name| source.contains(&format!("\"{name}\""))),
                );
            }
        }
    }
    let rules = read("sluice-alerts.yml");
    let unknown: Vec<_> = sluice_names(&rules)
        .into_iter()
        .filter(|name| !served.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the rules read series the host does not serve: {unknown:?}"
    );
}
