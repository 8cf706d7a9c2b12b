//! Step two of a start: join the built stages with bounded channels. Every stage that
//! reads gets an input; every stage that produces gets [`Outputs`] wired to the inputs
//! of its readers, route by route, with its dead letters going to their readers or to
//! the fallback sink.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::build::{Built, DEFAULT_DEAD_LETTER_SINK};
use crate::config::{Config, DEAD_LETTER};
use crate::pipeline::{Batch, Inlet, Outputs};
use crate::sinks::Sink;
use crate::sources::Source;
use crate::transforms::Transform;

/// Batches a stage's input holds before its upstream waits: the backpressure bound.
pub const CHANNEL_BATCHES: usize = 4;

/// A stage's input.
type Input = mpsc::Receiver<Batch>;

/// A sink, its input, and its dead-letter outputs if it may refuse events.
pub(super) type WiredSink = (String, Box<dyn Sink>, Input, Option<Outputs>);

/// Built stages with their channels: ready to spawn.
pub(super) struct Wired {
    pub sources: Vec<(String, Box<dyn Source>, Outputs)>,
    pub transforms: Vec<(Box<dyn Transform>, Input, Outputs)>,
    pub sinks: Vec<WiredSink>,
}

pub(super) fn wire(config: &Config, built: Built) -> Wired {
    let mut receivers: BTreeMap<String, mpsc::Receiver<Batch>> = BTreeMap::new();
    let mut inlets: BTreeMap<String, Inlet> = BTreeMap::new();
    let readers = built
        .transforms
        .iter()
        .map(|(name, _)| name)
        .chain(built.sinks.iter().map(|(name, _)| name));
    for name in readers {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let stage = Arc::from(name.as_str());
        inlets.insert(name.clone(), Inlet::new(stage, sender));
        receivers.insert(name.clone(), receiver);
    }

    let consumers = config.graph().consumers();
    let inlets_of = |stage: &str, route: Option<&str>| -> Vec<Inlet> {
        consumers
            .get(&(stage.to_owned(), route.map(str::to_owned)))
            .map(|readers| readers.iter().map(|r| inlets[r].clone()).collect())
            .unwrap_or_default()
    };
    let outputs_of = |stage: &str, routes: Vec<String>| -> Outputs {
        let routes: HashMap<String, Vec<Inlet>> = routes
            .into_iter()
            .map(|route| {
                let readers = inlets_of(stage, Some(&route));
                (route, readers)
            })
            .collect();
        let mut dead = inlets_of(stage, Some(DEAD_LETTER));
        if dead.is_empty() {
            dead.push(inlets[DEFAULT_DEAD_LETTER_SINK].clone());
        }
        Outputs::new(Arc::from(stage), inlets_of(stage, None), routes, dead)
    };

    let sources = built
        .sources
        .into_iter()
        .map(|(name, source)| {
            let outputs = outputs_of(&name, Vec::new());
            (name, source, outputs)
        })
        .collect();
    let transforms = built
        .transforms
        .into_iter()
        .map(|(name, transform)| {
            let routes = config.transforms[&name]
                .config
                .declare()
                .routes
                .iter()
                .map(|route| route.get_ref().clone())
                .collect();
            let outputs = outputs_of(&name, routes);
            let input = receivers
                .remove(&name)
                .expect("every transform has an input");
            (transform, input, outputs)
        })
        .collect();
    let sinks = built
        .sinks
        .into_iter()
        .map(|(name, sink)| {
            let input = receivers.remove(&name).expect("every sink has an input");
            let rejects = config
                .sinks
                .get(&name)
                .is_some_and(|stage| stage.config.declare().rejects);
            let dead_letters = rejects.then(|| outputs_of(&name, Vec::new()));
            (name, sink, input, dead_letters)
        })
        .collect();
    Wired {
        sources,
        transforms,
        sinks,
    }
}
