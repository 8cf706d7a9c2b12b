//! What building any stage needs: the loaded plugins, the state store, the data
//! directory; and the error a stage that cannot be built reports.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::PluginDef;
use crate::runtime::{InstancePool, Plugin, PluginError, Runtime, StageSpec, World};
use crate::state::StateStore;

pub struct BuildContext<'a> {
    pub runtime: &'a Arc<Runtime>,
    pub plugins: &'a HashMap<String, (Arc<Plugin>, PluginDef)>,
    pub state: &'a Arc<StateStore>,
    pub data_dir: &'a Path,
}

/// A stage that cannot be built; nothing of the pipeline starts.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("stage `{stage}`: {message}")]
    Stage { stage: String, message: String },
}

impl BuildError {
    pub fn stage(stage: &str, message: impl std::fmt::Display) -> Self {
        BuildError::Stage {
            stage: stage.to_owned(),
            message: message.to_string(),
        }
    }
}

impl BuildContext<'_> {
    /// Start the instance pool of a stage that runs plugin `plugin`.
    pub fn pool(
        &self,
        stage: &str,
        plugin: &str,
        world: World,
        config: &serde_json::Value,
        size: usize,
    ) -> Result<Arc<InstancePool>, BuildError> {
        let (loaded, def) = self
            .plugins
            .get(plugin)
            .ok_or_else(|| BuildError::stage(stage, format!("unknown plugin `{plugin}`")))?;
        let spec = StageSpec {
            stage: Arc::from(stage),
            config: config.to_string(),
            limits: def.limits.clone(),
            grants: def.grants.clone(),
            state: self.state.clone(),
        };
        Ok(Arc::new(InstancePool::new(
            self.runtime,
            loaded.clone(),
            world,
            spec,
            size,
        )?))
    }
}

/// The default `config` of a plugin stage: an empty JSON object.
pub fn empty_config() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
