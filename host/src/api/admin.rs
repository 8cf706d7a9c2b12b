//! The admin page (`GET /admin`), served by the host itself: the pipeline's stages in
//! columns with their live rates, errors, dead letters and queue depth; the plugins
//! with their sha256; the models; the fleet's devices; the alert stages' firing alerts
//! and the newest resolved ones; the jobs, when the config has some, with their newest
//! runs, a run's log, and buttons to run, retry, pause and resume them. A static page
//! (no framework) that polls `GET /v1/admin/overview` every second and `GET /v1/jobs`
//! every two.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::config::Config;
use crate::config::NodeKind;

const PAGE: &str = include_str!("admin.html");

/// What the page shows that does not change while the pipeline runs, and the last
/// counter sample, from which rates are computed.
pub struct Overview {
    stages: Vec<Stage>,
    plugins: Vec<Plugin>,
    models: Vec<Model>,
    fleet: Option<Arc<crate::fleet::registry::FleetState>>,
    sample: Mutex<Sample>,
}

#[derive(Clone, Serialize)]
struct Stage {
    name: String,
    kind: &'static str,
    component: String,
    inputs: Vec<String>,
}

#[derive(Serialize)]
struct Plugin {
    name: String,
    path: String,
    sha256: String,
}

#[derive(Serialize)]
struct Model {
    name: String,
    path: String,
}

struct Sample {
    at: Instant,
    counts: BTreeMap<String, (u64, u64)>,
    rates: BTreeMap<String, (f64, f64)>,
}

/// Rates are recomputed at most this often; polls in between get the last ones.
const MIN_SAMPLE_SECS: f64 = 0.5;

impl Overview {
    pub fn new(
        config: &Config,
        fleet: Option<Arc<crate::fleet::registry::FleetState>>,
    ) -> Arc<Overview> {
        let stages = config
            .graph()
            .nodes
            .iter()
            .map(|node| Stage {
                name: node.name.clone(),
                kind: match node.kind {
                    NodeKind::Source => "source",
                    NodeKind::Transform => "transform",
                    NodeKind::Sink => "sink",
                },
                component: node.component.clone(),
                inputs: node.inputs.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let plugins = config
            .plugins
            .iter()
            .map(|(name, plugin)| Plugin {
                name: name.clone(),
                path: plugin.path.display().to_string(),
                sha256: std::fs::read(&plugin.path)
                    .map(|bytes| crate::runtime::sha256_hex(&bytes))
                    .unwrap_or_default(),
            })
            .collect();
        let models = config
            .models
            .iter()
            .map(|(name, model)| Model {
                name: name.clone(),
                path: model.path.display().to_string(),
            })
            .collect();
        Arc::new(Overview {
            stages,
            plugins,
            models,
            fleet,
            sample: Mutex::new(Sample {
                at: Instant::now(),
                counts: BTreeMap::new(),
                rates: BTreeMap::new(),
            }),
        })
    }

    fn snapshot(&self) -> serde_json::Value {
        use crate::counters::{DEAD_LETTERED, ERRORS, EVENTS_IN, EVENTS_OUT, QUEUE_DEPTH, totals};
        let (taken, sent) = (totals(EVENTS_IN), totals(EVENTS_OUT));
        let (errors, dead) = (totals(ERRORS), totals(DEAD_LETTERED));
        let queued = totals(QUEUE_DEPTH);
        let count = |map: &BTreeMap<String, u64>, stage: &str| map.get(stage).copied().unwrap_or(0);
        let rates = {
            let mut sample = self.sample.lock().unwrap();
            let elapsed = sample.at.elapsed().as_secs_f64();
            if elapsed >= MIN_SAMPLE_SECS {
                let counts: BTreeMap<String, (u64, u64)> = self
                    .stages
                    .iter()
                    .map(|s| {
                        (
                            s.name.clone(),
                            (count(&taken, &s.name), count(&sent, &s.name)),
                        )
                    })
                    .collect();
                sample.rates = counts
                    .iter()
                    .map(|(stage, (now_in, now_out))| {
                        let (was_in, was_out) = sample.counts.get(stage).copied().unwrap_or((0, 0));
                        let rate = |now: u64, was: u64| now.saturating_sub(was) as f64 / elapsed;
                        (
                            stage.clone(),
                            (rate(*now_in, was_in), rate(*now_out, was_out)),
                        )
                    })
                    .collect();
                sample.counts = counts;
                sample.at = Instant::now();
            }
            sample.rates.clone()
        };
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .map(|stage| {
                let (rate_in, rate_out) = rates.get(&stage.name).copied().unwrap_or((0.0, 0.0));
                serde_json::json!({
                    "name": stage.name, "kind": stage.kind, "component": stage.component,
                    "inputs": stage.inputs,
                    "events_in": count(&taken, &stage.name), "events_out": count(&sent, &stage.name),
                    "rate_in": rate_in, "rate_out": rate_out,
                    "errors": count(&errors, &stage.name), "dead_lettered": count(&dead, &stage.name),
                    "queue_depth": count(&queued, &stage.name),
                })
            })
            .collect();
        serde_json::json!({
            "stages": stages,
            "plugins": self.plugins,
            "models": self.models,
            "devices": self.fleet.as_ref().map(|fleet| fleet.devices()),
            "rollouts": self.fleet.as_ref().map(|fleet| fleet.rollouts()),
            "alerts": crate::transforms::alert::board::snapshot(),
        })
    }
}

pub fn routes(overview: Arc<Overview>) -> Router {
    Router::new()
        .route(
            "/admin",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/v1/admin/overview",
            get(move || {
                let overview = overview.clone();
                async move { Json(overview.snapshot()).into_response() }
            }),
        )
}
