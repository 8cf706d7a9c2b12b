//! Step one of a start: load every plugin and build every stage. Nothing is spawned or
//! connected here, so a stage that cannot be built leaves nothing behind.

use super::{StartError, prepare};
use crate::component::{BuildContext, BuildError, Role};
use crate::config::{Config, DEAD_LETTER};
use crate::inference::Models;
use crate::sinks::file::FileSinkConfig;
use crate::sinks::{Sink, SinkConfig};
use crate::sources::Source;
use crate::state::StateStore;
use crate::transforms::Transform;

/// The sink that takes dead letters no configured stage reads.
pub const DEFAULT_DEAD_LETTER_SINK: &str = "_dead_letter";

/// Every stage of a pipeline, built and not yet running.
pub(super) struct Built {
    pub sources: Vec<(String, Box<dyn Source>)>,
    pub transforms: Vec<(String, Box<dyn Transform>)>,
    /// The configured sinks, and the dead-letter fallback when some stage needs it.
    pub sinks: Vec<(String, Box<dyn Sink>)>,
}

pub(super) fn build(config: &Config, role: Role) -> Result<Built, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    // A job's pipeline may share the host's data directory, whose state file the host
    // holds open; and a replay is a batch run that must not move the live stream's
    // windows and dedup keys.
    let state = match role {
        Role::Host => StateStore::open(&config.data_dir.join("state.redb"))?,
        Role::Job => StateStore::in_memory(),
    };
    let runtime = prepare::runtime(config)?;
    let (plugins, failures) = prepare::load_plugins(&runtime, config);
    if let Some(failure) = failures.into_iter().next() {
        return Err(failure.into());
    }
    let models = Models::load(&config.models, &config.inference, Some(&config.data_dir))
        .map_err(BuildError::Model)?;
    let context = |stage| BuildContext {
        stage,
        runtime: &runtime,
        plugins: &plugins,
        state: &state,
        models: &models,
        data_dir: &config.data_dir,
        role,
    };

    let fallback = needs_dead_letter_fallback(config).then(FileSinkConfig::dead_letter_fallback);
    let sink_configs = config
        .sinks
        .iter()
        .map(|(name, stage)| (name.as_str(), &*stage.config))
        .chain(
            fallback
                .as_ref()
                .map(|sink| (DEFAULT_DEAD_LETTER_SINK, sink as &dyn SinkConfig)),
        );
    let mut sinks = Vec::new();
    for (name, sink) in sink_configs {
        sinks.push((name.to_owned(), sink.build(&context(name))?));
    }
    let mut transforms = Vec::new();
    for (name, stage) in &config.transforms {
        transforms.push((name.clone(), stage.config.build(&context(name))?));
    }
    let mut sources = Vec::new();
    for (name, stage) in &config.sources {
        sources.push((name.clone(), stage.config.build(&context(name))?));
    }
    Ok(Built {
        sources,
        transforms,
        sinks,
    })
}

/// Whether some stage's `dead_letter` route has no reader in the config.
fn needs_dead_letter_fallback(config: &Config) -> bool {
    let consumers = config.graph().consumers();
    config
        .sources
        .keys()
        .chain(config.transforms.keys())
        .chain(
            config
                .sinks
                .iter()
                .filter(|(_, stage)| stage.config.declare().rejects)
                .map(|(name, _)| name),
        )
        .any(|name| !consumers.contains_key(&(name.clone(), Some(DEAD_LETTER.to_owned()))))
}
