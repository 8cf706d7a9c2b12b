//! The admin page draws the pipeline in a real browser (Debian's Chromium, headless):
//! two sources, a `map` stage that dead-letters readings it cannot convert, a router
//! with a named route and three sinks. Every stage is a node of the SVG, laid out in
//! layers; every edge of the config joins its two nodes and carries a live rate; the
//! sparklines have points from the moment the page opens; the failing stage is red;
//! the dead-letter browser finds a letter by part of its reason and shows its payload.
//! A screenshot is kept as a test artifact.

mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::browser::Browser;
use harness::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A reading `map` cannot convert (its temperature is a word).
const UNCONVERTIBLE: &str = r#"{"device_id":"probe-1","temperature":"scorching"}"#;
/// A reading `map` cannot read at all (not an object): another reason.
const NOT_AN_OBJECT: &str = r#"["probe-2", 21.5]"#;

/// The stages' nodes: name → (x, y) of their box in the drawing.
fn nodes(page: &mut Browser) -> BTreeMap<String, (f64, f64)> {
    let nodes = page.eval(
        "Object.fromEntries([...document.querySelectorAll('#graph g.node')].map((g) => {
            const m = g.querySelector('rect.box').getCTM(); return [g.dataset.stage, [m.e, m.f]]; }))",
    );
    serde_json::from_value(nodes).unwrap()
}

/// The drawn edges: (from, route, to), whether the line starts on the right side of
/// `from`'s box and ends on the left side of `to`'s, and the rate shown.
fn edges(page: &mut Browser) -> Vec<((String, String, String), bool, f64)> {
    let edges = page.eval(
        "(() => {
            const box = (name) => {
                const rect = document.querySelector(`#graph g.node[data-stage='${name}'] rect.box`);
                const m = rect.getCTM();
                return { x: m.e, y: m.f, width: rect.width.baseVal.value, height: rect.height.baseVal.value };
            };
            const on = (point, x, b) => Math.abs(point.x - x) < 1 && point.y >= b.y && point.y <= b.y + b.height;
            return [...document.querySelectorAll('#graph g.edge')].map((g) => {
                const path = g.querySelector('path');
                const start = path.getPointAtLength(0), end = path.getPointAtLength(path.getTotalLength());
                const from = box(g.dataset.from), to = box(g.dataset.to);
                const joins = on(start, from.x + from.width, from) && on(end, to.x, to);
                return [[g.dataset.from, g.dataset.route, g.dataset.to], joins, Number(g.dataset.edgeRate)];
            });
        })()",
    );
    serde_json::from_value(edges).unwrap()
}

fn edge_rate(page: &mut Browser, from: &str, route: &str) -> f64 {
    edges(page)
        .into_iter()
        .find(|((f, r, _), _, _)| f == from && r == route)
        .map_or(0.0, |(_, _, rate)| rate)
}

#[test]
fn the_admin_page_draws_the_pipeline_with_rates_sparklines_failures_and_dead_letters() {
    let ingest = free_port();
    let host = Pipeline::start(&format!(
        r#"
[plugins.sensor-sim]
path = "{sim}"

[plugins.map]
path = "{map}"

[plugins.router]
path = "{router}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 50
config = {{ devices = 6 }}

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["sensors", "ingest"]
config = {{ convert = {{ temperature = "float" }} }}

[transforms.route]
type = "wasm"
plugin = "router"
inputs = ["shape"]
routes = ["hot"]
config = {{ routes = [{{ name = "hot", when = {{ field = "temperature", gt = 22.0 }} }}] }}

[sinks.hot]
type = "file"
inputs = ["route.hot"]
path = "hot"

[sinks.readings]
type = "file"
inputs = ["route"]
path = "readings"

[sinks.rejects]
type = "file"
inputs = ["shape.dead_letter"]
path = "rejects"
"#,
        sim = plugin("sensor-sim"),
        map = plugin("map"),
        router = plugin("router"),
    ));
    let api = host.host.api_port;

    // Readings `map` refuses keep coming while the page is looked at.
    let posting = Arc::new(AtomicBool::new(true));
    let poster = {
        let posting = posting.clone();
        std::thread::spawn(move || {
            while posting.load(Ordering::Relaxed) {
                let body = format!("{UNCONVERTIBLE}\n{NOT_AN_OBJECT}\n");
                let (status, answer) = http_post(ingest, "/ingest", &[], body.as_bytes());
                assert_eq!(status, 200, "{answer}");
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // The history is kept by the host, not the page: it is there before a page opens.
    let overview = || -> Value {
        let (status, body) = http_get(api, "/v1/admin/overview").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_until(WAIT, "two samples of history per stage", || {
        overview()["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|stage| stage["history"].as_array().unwrap().len() >= 2)
    });

    let mut page = Browser::open(&format!("http://127.0.0.1:{api}/admin"), None);
    wait_until(WAIT, "the graph drawn", || nodes(&mut page).len() == 7);
    let at = nodes(&mut page);
    let names: Vec<&str> = at.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "hot", "ingest", "readings", "rejects", "route", "sensors", "shape"
        ]
    );
    // Layers: the sources, then `shape`, then `route`, then every sink.
    let x = |stage: &str| at[stage].0;
    assert_eq!(x("sensors"), x("ingest"));
    assert!(x("sensors") < x("shape") && x("shape") < x("route") && x("route") < x("hot"));
    assert_eq!(x("hot"), x("readings"));
    assert_eq!(x("hot"), x("rejects"));

    let mut drawn: Vec<(String, String, String)> = edges(&mut page)
        .into_iter()
        .map(|(edge, joins, _)| {
            assert!(
                joins,
                "{edge:?} runs from the right of its source's box to the left of its reader's"
            );
            edge
        })
        .collect();
    drawn.sort();
    let expected = [
        ("ingest", "", "shape"),
        ("route", "", "readings"),
        ("route", "hot", "hot"),
        ("sensors", "", "shape"),
        ("shape", "", "route"),
        ("shape", "dead_letter", "rejects"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(from, route, to)| (from.to_string(), route.to_string(), to.to_string()))
        .collect();
    assert_eq!(drawn, expected);

    wait_until(WAIT, "events flowing on the edges", || {
        edge_rate(&mut page, "sensors", "") > 0.0 && edge_rate(&mut page, "shape", "") > 0.0
    });
    let route_label = page.text("#graph g.edge[data-route='hot'] text");
    assert!(route_label.starts_with("hot · "), "{route_label}");

    let points = page.eval(
        "document.querySelector(\"#graph g.node[data-stage='shape'] polyline.sparkline\")
            ?.getAttribute('points').split(' ').length ?? 0",
    );
    assert!(
        points.as_u64().unwrap() >= 2,
        "a sparkline with points: {points}"
    );

    let red = "rgb(179, 38, 30)";
    let stroke = |page: &mut Browser, stage: &str| {
        page.eval(&format!(
            "getComputedStyle(document.querySelector(\"#graph g.node[data-stage='{stage}'] rect.box\")).stroke"
        ))
    };
    wait_until(WAIT, "the failing stage drawn in red", || {
        stroke(&mut page, "shape") == red
    });
    assert_ne!(stroke(&mut page, "sensors"), red);
    let failures = page.text("#graph g.node[data-stage='shape'] text.failures");
    assert!(failures.contains("dead letters "), "{failures}");

    // The dead-letter browser: part of a reason finds only the letters with it.
    page.click("#dl-filter");
    page.type_text("cannot convert");
    let reasons = |page: &mut Browser| -> Vec<String> {
        let reasons = page.eval(
            "[...document.querySelectorAll('#dl-table tr[data-id]')].map((row) => row.cells[2].textContent)",
        );
        serde_json::from_value(reasons).unwrap()
    };
    wait_until(WAIT, "the filtered dead letters", || {
        let found = reasons(&mut page);
        !found.is_empty() && found.iter().all(|reason| reason.contains("cannot convert"))
    });
    page.click("#dl-table tr[data-id] button.preview");
    wait_until(WAIT, "the payload shown", || {
        page.text("#dl-table pre.payload") == UNCONVERTIBLE
    });
    assert_eq!(
        page.text("#dl-table tr[data-id] td"),
        "shape",
        "the stage of the letter"
    );

    posting.store(false, Ordering::Relaxed);
    poster.join().unwrap();

    // The screenshot, for a person to look at.
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("admin-graph.png");
    let url = format!("http://127.0.0.1:{api}/admin");
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
