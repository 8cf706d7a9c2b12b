//! The Grafana dashboard in `docs/` reads only metrics the host emits: a metric renamed
//! in the code breaks this test, not a dashboard in production.

use std::collections::BTreeSet;
use std::path::Path;

/// Every `"sluice_..."` metric name registered in the host's sources.
fn emitted(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            emitted(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("\"sluice_").skip(1) {
                if let Some(name) = piece.split('"').next()
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    names.insert(format!("sluice_{name}"));
                }
            }
        }
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_one_the_host_emits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = BTreeSet::new();
    emitted(&root.join("src"), &mut names);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("../docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for piece in expr.split("sluice_").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                // Histograms are queried by their series.
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name)
                    .to_owned();
                queried.insert(format!("sluice_{name}"));
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let unknown: Vec<_> = queried.difference(&names).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics nobody emits: {unknown:?}"
    );
}
