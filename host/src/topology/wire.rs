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
pub(crate) type Input = mpsc::Receiver<Batch>;

/// A sink, its input, and its dead-letter outputs if it may refuse events.
pub(super) type WiredSink = (String, Box<dyn Sink>, Input, Option<Outputs>);

/// Built stages with their channels: ready to spawn.
pub(super) struct Wired {
    pub sources: Vec<(String, Box<dyn Source>, Outputs)>,
    pub transforms: Vec<(Box<dyn Transform>, Input, Outputs)>,
    pub sinks: Vec<WiredSink>,
}

pub(super) fn wire(config: &Config, built: Built) -> Wired {
    let readers = built
        .transforms
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(built.sinks.iter().map(|(name, _)| name.as_str()));
    let (channels, mut receivers) = Channels::open(config, readers);
    let outputs_of = |stage: &str, routes: Vec<String>| -> Outputs {
        channels.outputs(stage, routes, |route, readers| {
            if route == Some(DEAD_LETTER) && readers.is_empty() {
                channels
                    .inlet(DEFAULT_DEAD_LETTER_SINK)
                    .into_iter()
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            }
        })
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
            let outputs = outputs_of(&name, declared_routes(config, &name));
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

/// The named routes transform `name` declares.
pub(crate) fn declared_routes(config: &Config, name: &str) -> Vec<String> {
    config.transforms[name]
        .config
        .declare()
        .routes
        .iter()
        .map(|route| route.get_ref().clone())
        .collect()
}

/// The inputs of a pipeline's reading stages, and which stages read each output.
pub(crate) struct Channels {
    consumers: BTreeMap<(String, Option<String>), Vec<String>>,
    inlets: BTreeMap<String, Inlet>,
}

impl Channels {
    /// A bounded input for each of `readers`: the sending ends stay here, the receiving
    /// ends are returned by reader.
    pub(crate) fn open<'a>(
        config: &Config,
        readers: impl IntoIterator<Item = &'a str>,
    ) -> (Channels, BTreeMap<String, Input>) {
        let mut receivers = BTreeMap::new();
        let mut inlets = BTreeMap::new();
        for name in readers {
            let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
            inlets.insert(name.to_owned(), Inlet::new(Arc::from(name), sender));
            receivers.insert(name.to_owned(), receiver);
        }
        let channels = Channels {
            consumers: config.graph().consumers(),
            inlets,
        };
        (channels, receivers)
    }

    /// The input of `stage`, if it was opened.
    pub(crate) fn inlet(&self, stage: &str) -> Option<&Inlet> {
        self.inlets.get(stage)
    }

    /// The inputs of the opened stages that read `stage`'s `route` (`None`: its default
    /// output).
    pub(crate) fn readers(&self, stage: &str, route: Option<&str>) -> Vec<Inlet> {
        self.consumers
            .get(&(stage.to_owned(), route.map(str::to_owned)))
            .map(|readers| {
                readers
                    .iter()
                    .filter_map(|reader| self.inlets.get(reader).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `stage`'s outputs: its default output, `routes` and `dead_letter`, each to its
    /// readers and to what `also` adds given the route and those readers.
    pub(crate) fn outputs(
        &self,
        stage: &str,
        routes: Vec<String>,
        mut also: impl FnMut(Option<&str>, &[Inlet]) -> Vec<Inlet>,
    ) -> Outputs {
        let mut to = |route: Option<&str>| {
            let mut inlets = self.readers(stage, route);
            let more = also(route, &inlets);
            inlets.extend(more);
            inlets
        };
        let routes: HashMap<String, Vec<Inlet>> = routes
            .into_iter()
            .map(|route| {
                let inlets = to(Some(&route));
                (route, inlets)
            })
            .collect();
        let dead = to(Some(DEAD_LETTER));
        Outputs::new(Arc::from(stage), to(None), routes, dead)
    }
}
