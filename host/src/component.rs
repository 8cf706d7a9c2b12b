//! What every component kind shares: the context a stage is built from, what its config
//! declares before anything is built, the error a stage that cannot be built reports,
//! and the registration of kinds.
//!
//! A kind (a source, transform or sink `type`) is a config struct that implements its
//! family's config trait (`SourceConfig`, `TransformConfig`, `SinkConfig`) and one line
//! in that family's [`registry!`]. The topology and `validate` know only the traits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use crate::inference::Models;
use crate::runtime::{
    Grants, InstancePool, Limits, Plugin, PluginError, Runtime, StageSpec, World,
};
use crate::state::StateStore;

/// Everything building one stage may use. Building has no side effects: nothing is
/// spawned or connected until every stage of the pipeline is built.
pub struct BuildContext<'a> {
    /// The stage being built.
    pub stage: &'a str,
    pub runtime: &'a Arc<Runtime>,
    pub plugins: &'a HashMap<String, LoadedPlugin>,
    pub state: &'a Arc<StateStore>,
    /// Every configured model, loaded; a stage gets those its plugin is granted.
    pub models: &'a Models,
    pub data_dir: &'a Path,
    /// Whose pipeline the stage is part of.
    pub role: Role,
}

/// Whose pipeline is built: the host's own, or a job's running beside it in the same
/// process (a replay job). What a pipeline makes visible to the whole process (the
/// serving tables the API serves) belongs to the host's; a job's pipeline uses what
/// the host's has and takes nothing from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// `sluice run`, `sluice replay`: a serving table the pipeline writes is the one the
    /// API serves, replacing one a previous config of the host registered.
    #[default]
    Host,
    /// A job's pipeline: it writes into the host's registered serving table of the same
    /// name (one database file is opened once, and the API keeps the host's tokens),
    /// registers none of its own, and keeps its plugins' state in memory, apart from
    /// the live stream's.
    Job,
}

/// A plugin ready for stages: its code and what its `[plugins.NAME]` table allows.
pub struct LoadedPlugin {
    pub plugin: Arc<Plugin>,
    pub limits: Limits,
    pub grants: Grants,
}

/// A stage that cannot be built; nothing of the pipeline starts.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Model(#[from] crate::inference::InferenceError),
    #[error(transparent)]
    Settings(#[from] crate::connect::SettingsError),
    #[error("stage `{stage}`: {message}")]
    Invalid { stage: String, message: String },
    #[error("stage `{stage}`: cannot {what}")]
    Io {
        stage: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// The stage's config is wrong in a way only building finds.
    pub fn stage(stage: &str, message: impl std::fmt::Display) -> Self {
        BuildError::Invalid {
            stage: stage.to_owned(),
            message: message.to_string(),
        }
    }

    /// The stage could not take an operating-system resource (a port, a directory).
    pub fn io(stage: &str, what: impl std::fmt::Display, source: std::io::Error) -> Self {
        BuildError::Io {
            stage: stage.to_owned(),
            what: what.to_string(),
            source,
        }
    }
}

impl BuildContext<'_> {
    /// Start the instance pool of this stage, which runs plugin `plugin`.
    pub fn pool(
        &self,
        plugin: &str,
        world: World,
        config: &serde_json::Value,
        size: usize,
    ) -> Result<Arc<InstancePool>, BuildError> {
        let stage = self.stage;
        let loaded = self
            .plugins
            .get(plugin)
            .ok_or_else(|| BuildError::stage(stage, format!("unknown plugin `{plugin}`")))?;
        let spec = StageSpec {
            stage: Arc::from(stage),
            config: config.to_string(),
            limits: loaded.limits.clone(),
            grants: loaded.grants.clone(),
            state: self.state.clone(),
            models: self.models.grant(stage, &loaded.grants.models)?,
        };
        Ok(Arc::new(InstancePool::new(
            self.runtime,
            loaded.plugin.clone(),
            world,
            spec,
            size,
        )?))
    }

    /// A path of this stage's config: relative paths live in the data directory.
    pub fn data_path(&self, path: &Path) -> PathBuf {
        self.data_dir.join(path)
    }
}

/// What a stage's config declares before it is built, for `validate`, `graph` and the
/// topology: which plugin it runs, which routes it emits to, what it takes from the
/// machine. Two stages cannot listen on one address or write one directory.
#[derive(Debug, Default)]
pub struct Declaration<'a> {
    pub plugin: Option<PluginUse<'a>>,
    /// Named routes besides the default output and `dead_letter`.
    pub routes: &'a [Spanned<String>],
    /// Where the stage listens, and how.
    pub listens: Vec<Listening>,
    /// Directories the stage writes (relative ones are inside `data_dir`).
    pub writes: Vec<PathBuf>,
    /// A sink that may refuse events it cannot store as they are (e.g. outside a
    /// declared schema): it gets a `dead_letter` route, as every other stage has.
    pub rejects: bool,
    /// What the stage's config gets wrong that its types cannot say (reported by
    /// `validate` at the stage's table, with the hint).
    pub problems: Vec<Problem>,
    /// A persistent QoS 1 MQTT subscription the stage reads through: an embedded broker
    /// it points at keeps the session from the broker's own start.
    pub subscription: Option<DurableSubscription>,
}

/// What a stage subscribes to over MQTT and keeps across restarts (`clean_session =
/// false`, QoS 1), so that an embedded broker can hold its messages before it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscription {
    /// The broker's host as the stage's `url` names it, and its port.
    pub host: String,
    pub port: u16,
    /// `None`: the stage's default client id.
    pub client_id: Option<String>,
    pub filters: Vec<String>,
}

/// A listener a stage serves, for the config's checks: one address per listener, and
/// none open to the network without TLS and authentication unless it says `insecure`.
#[derive(Debug)]
pub struct Listening {
    pub settings: crate::connect::listener::ListenerSettings,
    /// Where its `listen` is written.
    pub span: std::ops::Range<usize>,
    /// Whether it checks a token.
    pub authenticated: bool,
    /// The key that would add authentication, for the hint: `token`.
    pub auth_key: &'static str,
}

/// A problem in a stage's config, and how to fix it.
#[derive(Debug)]
pub struct Problem {
    pub message: String,
    pub hint: String,
}

/// A plugin a stage runs: which, as what world, with which `init` config.
#[derive(Debug)]
pub struct PluginUse<'a> {
    pub name: &'a Spanned<String>,
    pub world: World,
    pub config: &'a serde_json::Value,
}

/// One registered component kind of a family whose config trait is `C`.
pub struct Kind<C: ?Sized> {
    /// The `type` that selects it in the config.
    pub name: &'static str,
    /// Reads the stage's table (without `type` and `inputs`) into the kind's config.
    pub parse: fn(toml::de::ValueDeserializer<'_>) -> Result<Box<C>, toml::de::Error>,
}

impl<C: ?Sized> Kind<C> {
    /// The kind registered as `name`, if any.
    pub fn find(kinds: &'static [Kind<C>], name: &str) -> Option<&'static Kind<C>> {
        kinds.iter().find(|kind| kind.name == name)
    }
}

/// Registers a family's kinds, one line per kind: `"type" => folder::ConfigStruct`
/// declares the kind's module (its folder) and adds it to the family's `KINDS`, gated by
/// the cargo feature that brings the kind's dependencies, if any.
#[macro_export]
macro_rules! registry {
    ($family:ident: $( $(#[$gate:meta])* $name:literal => $module:ident :: $config:ident ),* $(,)?) => {
        $(
            $(#[$gate])*
            pub mod $module;
        )*


        /// Every kind of this family, as `type = "..."` selects it.
        pub static KINDS: &[$crate::component::Kind<dyn $family>] = &[
            $(
                $(#[$gate])*
                $crate::component::Kind {
                    name: $name,
                    parse: |table| {
                        let config: $module::$config = ::serde::Deserialize::deserialize(table)?;
                        Ok(Box::new(config))
                    },
                },
            )*
        ];
    };
}

/// The default `config` of a plugin stage: an empty JSON object.
pub fn empty_config() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
