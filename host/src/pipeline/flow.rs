//! Events sent on each output of each stage, per route: what the admin page's edges
//! show. A process-wide registry of counters, looked up once when a stage's
//! [`Outputs`](super::Outputs) are made, so that counting a batch costs one relaxed add.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The route every stage's dead letters leave on (`STAGE.dead_letter`).
const DEAD_LETTER: &str = "dead_letter";

/// An output of a stage: its name and its route (`None`: the default output).
type OutputKey = (Arc<str>, Option<Arc<str>>);

fn registry() -> &'static Mutex<HashMap<OutputKey, Arc<AtomicU64>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<OutputKey, Arc<AtomicU64>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// The events sent on one output (the same counter every time it is looked up, so
/// that a reloaded pipeline counts on).
#[derive(Clone)]
pub struct FlowCounter(Arc<AtomicU64>);

impl FlowCounter {
    pub fn lookup(stage: &str, route: Option<&str>) -> FlowCounter {
        let key = (Arc::from(stage), route.map(Arc::from));
        FlowCounter(registry().lock().unwrap().entry(key).or_default().clone())
    }

    pub fn add(&self, events: usize) {
        self.0.fetch_add(events as u64, Ordering::Relaxed);
    }
}

/// The counters of every output of one stage.
pub struct Flow {
    pub default: FlowCounter,
    routes: HashMap<String, FlowCounter>,
    pub dead_letter: FlowCounter,
}

impl Flow {
    pub fn new<'r>(stage: &str, routes: impl IntoIterator<Item = &'r String>) -> Flow {
        Flow {
            default: FlowCounter::lookup(stage, None),
            routes: routes
                .into_iter()
                .map(|route| (route.clone(), FlowCounter::lookup(stage, Some(route))))
                .collect(),
            dead_letter: FlowCounter::lookup(stage, Some(DEAD_LETTER)),
        }
    }

    /// The counter of a declared route.
    pub fn route(&self, route: &str) -> &FlowCounter {
        &self.routes[route]
    }
}

/// Events sent so far on every output that was ever counted: (stage, route) → events.
pub fn totals() -> BTreeMap<(String, Option<String>), u64> {
    registry()
        .lock()
        .unwrap()
        .iter()
        .map(|((stage, route), count)| {
            (
                (stage.to_string(), route.as_deref().map(str::to_owned)),
                count.load(Ordering::Relaxed),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_of_a_stage_counts_its_own_events() {
        let routes = ["hot".to_owned(), "cold".to_owned()];
        let flow = Flow::new("flow-test-router", &routes);
        flow.default.add(3);
        flow.route("hot").add(2);
        flow.route("hot").add(5);
        flow.dead_letter.add(1);
        // Looked up again (a reload), the counters are the same.
        Flow::new("flow-test-router", &routes).default.add(1);

        let totals = totals();
        let of = |route: Option<&str>| {
            totals[&("flow-test-router".to_owned(), route.map(str::to_owned))]
        };
        assert_eq!(of(None), 4);
        assert_eq!(of(Some("hot")), 7);
        assert_eq!(of(Some("cold")), 0);
        assert_eq!(of(Some("dead_letter")), 1);
    }
}
