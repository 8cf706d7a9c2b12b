//! Step one of a start: load every plugin and build every stage. Nothing is spawned or
//! connected here, so a stage that cannot be built leaves nothing behind.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{StartError, prepare};
use crate::component::{BuildContext, BuildError, LoadedPlugin, Role};
use crate::config::{Config, DEAD_LETTER};
use crate::inference::Models;
use crate::runtime::Runtime;
use crate::sinks::file::FileSinkConfig;
use crate::sinks::{Sink, SinkConfig};
use crate::sources::Source;
use crate::state::StateStore;
use crate::transforms::Transform;

/// The sink that takes dead letters no configured stage reads.
pub const DEFAULT_DEAD_LETTER_SINK: &str = "_dead_letter";

/// A built transform and its stage's name.
pub(crate) type NamedTransform = (String, Box<dyn Transform>);

/// Every stage of a pipeline, built and not yet running.
pub(super) struct Built {
    pub sources: Vec<(String, Box<dyn Source>)>,
    pub transforms: Vec<NamedTransform>,
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
    let toolkit = Toolkit::prepare(config, Some(&config.data_dir), role)?;
    let context = |stage| toolkit.context(stage, &state, &config.data_dir);

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
    let transforms = toolkit.transforms(config, &state, &config.data_dir)?;
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

/// What the stages of a config are built with: the runtime, every plugin loaded, every
/// model loaded. A start prepares it once; `sluice test` builds each test's transforms
/// from one.
pub(crate) struct Toolkit {
    runtime: Arc<Runtime>,
    plugins: HashMap<String, LoadedPlugin>,
    models: Models,
    role: Role,
}

impl Toolkit {
    /// Load `config`'s plugins and models; the first plugin that does not load fails it.
    /// `models_dir` keeps the models' live versions (`None`: the config's files only).
    pub(crate) fn prepare(
        config: &Config,
        models_dir: Option<&Path>,
        role: Role,
    ) -> Result<Toolkit, StartError> {
        let runtime = prepare::runtime(config)?;
        let (plugins, failures) = prepare::load_plugins(&runtime, config);
        if let Some(failure) = failures.into_iter().next() {
            return Err(failure.into());
        }
        let models = Models::load(&config.models, &config.inference, models_dir)
            .map_err(BuildError::Model)?;
        Ok(Toolkit {
            runtime,
            plugins,
            models,
            role,
        })
    }

    /// The context `stage` is built in, its state in `state` and its relative paths in
    /// `data_dir`.
    pub(crate) fn context<'a>(
        &'a self,
        stage: &'a str,
        state: &'a Arc<StateStore>,
        data_dir: &'a Path,
    ) -> BuildContext<'a> {
        BuildContext {
            stage,
            runtime: &self.runtime,
            plugins: &self.plugins,
            state,
            models: &self.models,
            data_dir,
            role: self.role,
        }
    }

    /// Build every transform of `config`.
    pub(crate) fn transforms(
        &self,
        config: &Config,
        state: &Arc<StateStore>,
        data_dir: &Path,
    ) -> Result<Vec<NamedTransform>, BuildError> {
        config
            .transforms
            .iter()
            .map(|(name, stage)| {
                let transform = stage.config.build(&self.context(name, state, data_dir))?;
                Ok((name.clone(), transform))
            })
            .collect()
    }

    /// Plugin `name` as loaded, if the config declares it.
    pub(crate) fn plugin(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
    }
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
