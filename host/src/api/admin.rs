//! The admin page (`GET /admin`), served by the host itself: the pipeline drawn as a
//! graph, its stages with their live rates, errors, dead letters, queue depth, mean call
//! time and a sparkline of their last five minutes, its edges with their rates; the
//! newest dead letters, searchable ([`dead_letters`]); the plugins with their sha256;
//! the models; the fleet's devices; the alert stages' firing alerts and the newest
//! resolved ones; the jobs, when the config has some, with their newest runs, a run's
//! log, and buttons to run, retry, pause and resume them. A static page (no framework,
//! nothing fetched from elsewhere) that polls `GET /v1/admin/overview` every second and
//! `GET /v1/jobs` and `GET /v1/dead-letters` every two.

mod dead_letters;
mod history;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::config::Config;
use crate::config::NodeKind;

use history::Sampler;

const PAGE: &str = include_str!("admin.html");

/// What the page shows that does not change while the pipeline runs, and the sampler
/// of what does.
pub struct Overview {
    stages: Vec<Stage>,
    edges: Vec<Edge>,
    plugins: Vec<Plugin>,
    models: Vec<Model>,
    fleet: Option<Arc<crate::fleet::registry::FleetState>>,
    sampler: Arc<Sampler>,
}

#[derive(Clone, Serialize)]
struct Stage {
    name: String,
    kind: &'static str,
    component: String,
    inputs: Vec<String>,
}

/// A stage reading an output of another: `route` is `None` for the default output.
#[derive(Serialize)]
struct Edge {
    from: String,
    route: Option<String>,
    to: String,
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

impl Overview {
    /// The overview of `config`'s pipeline, sampling its counters until it is dropped.
    /// Needs a Tokio runtime.
    pub fn new(
        config: &Config,
        fleet: Option<Arc<crate::fleet::registry::FleetState>>,
    ) -> Arc<Overview> {
        let graph = config.graph();
        let stages: Vec<Stage> = graph
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
        let edges = graph
            .nodes
            .iter()
            .flat_map(|node| {
                node.inputs.iter().map(|input| Edge {
                    from: input.stage.clone(),
                    route: input.route.clone(),
                    to: node.name.clone(),
                })
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
        let sampler = Sampler::start(stages.iter().map(|stage| &stage.name));
        Arc::new(Overview {
            stages,
            edges,
            plugins,
            models,
            fleet,
            sampler,
        })
    }

    fn snapshot(&self) -> serde_json::Value {
        use crate::counters::{DEAD_LETTERED, ERRORS, EVENTS_IN, EVENTS_OUT, QUEUE_DEPTH, totals};
        let (taken, sent) = (totals(EVENTS_IN), totals(EVENTS_OUT));
        let (errors, dead) = (totals(ERRORS), totals(DEAD_LETTERED));
        let queued = totals(QUEUE_DEPTH);
        let count = |map: &std::collections::BTreeMap<String, u64>, stage: &str| {
            map.get(stage).copied().unwrap_or(0)
        };
        let rates = self.sampler.live();
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .map(|stage| {
                let live = rates.stages.get(&stage.name).copied().unwrap_or_default();
                serde_json::json!({
                    "name": stage.name, "kind": stage.kind, "component": stage.component,
                    "inputs": stage.inputs,
                    "events_in": count(&taken, &stage.name), "events_out": count(&sent, &stage.name),
                    "rate_in": live.rate_in, "rate_out": live.rate_out,
                    "errors": count(&errors, &stage.name), "dead_lettered": count(&dead, &stage.name),
                    "errors_per_s": live.errors_per_s, "dead_letters_per_s": live.dead_letters_per_s,
                    "queue_depth": count(&queued, &stage.name),
                    "call_ms": live.call_ms,
                    "history": self.sampler.history(&stage.name),
                })
            })
            .collect();
        let edges: Vec<serde_json::Value> = self
            .edges
            .iter()
            .map(|edge| {
                let output = (edge.from.clone(), edge.route.clone());
                let rate = rates.outputs.get(&output).copied().unwrap_or(0.0);
                serde_json::json!({ "from": edge.from, "route": edge.route, "to": edge.to, "rate": rate })
            })
            .collect();
        serde_json::json!({
            "stages": stages,
            "edges": edges,
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
        .route("/v1/dead-letters", get(dead_letters::list))
}
