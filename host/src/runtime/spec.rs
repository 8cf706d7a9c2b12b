//! What a stage decides about its plugin instances, read by the instance and by every
//! capability's host state.

use std::sync::Arc;

use super::capabilities::StageContext;
use super::grants::Grants;
use super::limits::Limits;
use crate::inference::StageModels;
use crate::state::StateStore;

/// Everything a stage decides about its plugin instances.
#[derive(Clone)]
pub struct StageSpec {
    pub stage: Arc<str>,
    /// The plugin's config, a JSON object.
    pub config: String,
    pub limits: Limits,
    pub grants: Grants,
    pub state: Arc<StateStore>,
    /// The models the stage is granted (`grants.models`), loaded.
    pub models: StageModels,
}

impl StageSpec {
    /// What the capabilities' host states are built from.
    pub(crate) fn context(&self) -> StageContext<'_> {
        StageContext {
            stage: &self.stage,
            limits: &self.limits,
            state: &self.state,
            models: &self.models,
        }
    }
}
