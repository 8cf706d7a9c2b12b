//! The admin page in a real browser (Debian's Chromium, headless): it loads from the
//! host, draws every stage of the pipeline as a node of its graph with a rate above zero
//! while events flow, and lists the plugins with their sha256. A screenshot is kept as a
//! test artifact (`admin_graph.rs` checks the graph's layout, edges and colours).

mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::*;

#[test]
fn the_admin_page_shows_every_stage_with_live_rates_in_chromium() {
    let host = Pipeline::start(&format!(
        r#"
[plugins.sensor-sim]
path = "{}"

[plugins.filter]
path = "{}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 50
config = {{ devices = 5 }}

[transforms.plausible]
type = "wasm"
plugin = "filter"
inputs = ["sensors"]
config = {{ when = {{ field = "temperature", gt = -40.0 }} }}

[sinks.readings]
type = "file"
inputs = ["plausible"]
path = "readings"
"#,
        plugin("sensor-sim"),
        plugin("filter")
    ));
    let api = host.host.api_port;
    wait_until(Duration::from_secs(20), "events flowing", || {
        read_lines(&host.data("readings")).len() > 50
    });
    let url = format!("http://127.0.0.1:{api}/admin");
    let dump = chromium(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dom.contains("live ·"), "the page reached the host:\n{dom}");
    let (stages, rates) = admin_page(&dom);
    assert_eq!(stages, ["sensors", "plausible", "readings"], "{dom}");
    assert_eq!(
        dom.matches("<g class=\"node").count(),
        3,
        "each stage a node of the graph:\n{dom}"
    );
    assert_eq!(rates.len(), 3, "{dom}");
    assert!(
        rates.iter().all(|rate| *rate > 0.0),
        "rates above zero: {rates:?}"
    );
    let sha = dom
        .split("<td>")
        .filter_map(|cell| cell.split("</td>").next())
        .find(|cell| cell.len() == 64 && cell.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(sha.is_some(), "plugins listed with their sha256:\n{dom}");

    // The screenshot, for a person to look at.
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("admin-page.png");
    let taken = chromium(&[&format!("--screenshot={}", shot.display())], &url);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real picture"
    );
}
