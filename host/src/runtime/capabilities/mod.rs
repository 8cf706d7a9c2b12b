//! Host capabilities: the WIT interfaces the host implements for plugins. Each is one
//! module with its own host state (`LogCtx`, `MetricsCtx`, `StateCtx`, `LimitsCtx`,
//! `InferenceCtx`),
//! its own quotas, and its own `add_to_linker` that reaches that state through a view
//! trait — the shape of wasmtime-wasi's `WasiView`. A stage's linker holds only the
//! capabilities its grants list, and a plugin that imports one more fails to start with
//! an error that says which grant to add.

pub mod inference;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod state;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::bindings::types;
use super::error::PluginError;
use super::limits::Limits;
use super::plugin::Plugin;

/// One host interface a stage may grant its plugin (`grants.capabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Log,
    Metrics,
    State,
    Limits,
    /// Linked exactly when the stage is granted a model (`grants.models`).
    Inference,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::Log,
        Capability::Metrics,
        Capability::State,
        Capability::Limits,
        Capability::Inference,
    ];

    /// The name in `grants.capabilities`, which is also the WIT interface's name.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Metrics => "metrics",
            Capability::State => "state",
            Capability::Limits => "limits",
            Capability::Inference => "inference",
        }
    }

    /// What to add to the config to grant it.
    pub fn how_to_grant(self) -> String {
        match self {
            Capability::Inference => {
                "grant it a model: grants.models = [\"NAME\"] with a [models.NAME]".to_owned()
            }
            other => format!("add \"{other}\" to grants.capabilities"),
        }
    }

    /// The WIT interface, without its version.
    pub fn interface(self) -> String {
        format!("{PACKAGE}/{}", self.name())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const PACKAGE: &str = "sluice:plugin";

/// Link the shared data model and the `granted` capabilities into `linker`.
pub fn add_to_linker<T>(
    linker: &mut Linker<T>,
    granted: &BTreeSet<Capability>,
) -> wasmtime::Result<()>
where
    T: types::Host
        + log::LogView
        + metrics::MetricsView
        + state::StateView
        + limits::LimitsView
        + inference::InferenceView
        + 'static,
{
    // `types` declares records only; every plugin imports it.
    types::add_to_linker::<T, HasSelf<T>>(linker, |data| data)?;
    for capability in granted {
        match capability {
            Capability::Log => log::add_to_linker(linker)?,
            Capability::Metrics => metrics::add_to_linker(linker)?,
            Capability::State => state::add_to_linker(linker)?,
            Capability::Limits => limits::add_to_linker(linker)?,
            Capability::Inference => inference::add_to_linker(linker)?,
        }
    }
    Ok(())
}

/// Fail unless every `sluice:plugin` capability that `plugin` imports is `granted`.
/// Checked before linking, so the error names the grant rather than a missing import.
pub fn check_imports(
    plugin: &Plugin,
    engine: &wasmtime::Engine,
    stage: &str,
    granted: &BTreeSet<Capability>,
) -> Result<(), PluginError> {
    let ty = plugin.component.component_type();
    for (name, _) in ty.imports(engine) {
        let Some(interface) = name
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            continue;
        };
        let interface = interface.split('@').next().unwrap_or(interface);
        // Interfaces this host does not know are the linker's to report.
        let wanted = Capability::ALL.into_iter().find(|c| c.name() == interface);
        if let Some(capability) = wanted
            && !granted.contains(&capability)
        {
            return Err(PluginError::NotGranted {
                plugin: plugin.name.clone(),
                stage: stage.to_owned(),
                capability,
            });
        }
    }
    Ok(())
}

/// What the instances of one stage share, so that per-stage quotas hold whatever the
/// stage's parallelism: the log rate and the metric series.
#[derive(Clone)]
pub struct StageShared {
    pub log: Arc<log::LogBudget>,
    pub metrics: Arc<metrics::StageSeries>,
}

impl StageShared {
    pub fn new(stage: &Arc<str>, limits: &Limits) -> Self {
        StageShared {
            log: Arc::new(log::LogBudget::new(stage.clone(), limits)),
            metrics: Arc::new(metrics::StageSeries::new(limits)),
        }
    }
}
