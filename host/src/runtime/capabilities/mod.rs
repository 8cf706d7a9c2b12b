//! Host capabilities: the WIT interfaces the host implements for plugins, listed once in
//! [`capabilities!`]. Each is one module with its own host state, its own quotas, and
//! its own `add_to_linker` that reaches that state through a view trait — the shape of
//! wasmtime-wasi's `WasiView`. A stage's linker holds only the
//! capabilities its grants list, and a plugin that imports one more fails to start with
//! an error that says which grant to add.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::types;
use super::limits::Limits;
use crate::inference::StageModels;
use crate::state::StateStore;

/// What a capability's host state is built from: the stage's side of its spec.
pub struct StageContext<'a> {
    pub stage: &'a Arc<str>,
    pub limits: &'a Limits,
    pub state: &'a Arc<StateStore>,
    /// The models the stage is granted.
    pub models: &'a StageModels,
}

/// A capability's host state: one per instance, built from the stage's context and from
/// what the stage's instances share.
pub trait HostState {
    /// Shared by the instances of one stage, so that per-stage quotas (the log rate,
    /// the metric series) hold whatever the stage's parallelism.
    type Shared: Clone;
    fn shared(spec: &StageContext<'_>) -> Self::Shared;
    fn new(spec: &StageContext<'_>, shared: &Self::Shared) -> Self;
}

/// Gives every capability its own state out of the store's data: the capabilities' view
/// traits are implemented for any `T` that has the [`HostStates`].
pub trait HostStatesView {
    fn host_states(&mut self) -> &mut HostStates;
}

/// Every host capability, once: `Variant => module::HostState, view Trait::accessor`.
/// The module is the WIT interface's name and the name in `grants.capabilities`. From
/// this list come the [`Capability`] enum, its names, the per-stage shared state, the
/// per-instance states with their views, and the linking of the granted ones. Adding a
/// capability is a module (its state, view, `add_to_linker`, quotas) and a line here.
macro_rules! capabilities {
    ($( $(#[$doc:meta])* $variant:ident => $module:ident :: $state:ident, view $view:ident :: $access:ident ),* $(,)?) => {
        $( pub mod $module; )*

        /// One host interface a stage may grant its plugin (`grants.capabilities`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum Capability {
            $( $(#[$doc])* $variant, )*
        }

        impl Capability {
            pub const ALL: [Capability; [$( stringify!($variant) ),*].len()] =
                [$( Capability::$variant ),*];

            /// The name in `grants.capabilities`, which is also the WIT interface's name.
            pub fn name(self) -> &'static str {
                match self {
                    $( Capability::$variant => stringify!($module), )*
                }
            }
        }

        /// What the instances of one stage share, per capability.
        #[derive(Clone)]
        pub struct StageShared {
            $( pub $module: <$module::$state as HostState>::Shared, )*
        }

        impl StageShared {
            pub fn new(spec: &StageContext<'_>) -> Self {
                StageShared {
                    $( $module: <$module::$state as HostState>::shared(spec), )*
                }
            }
        }

        /// One instance's host state of every capability.
        pub struct HostStates {
            $( pub $module: $module::$state, )*
        }

        impl HostStates {
            pub fn new(spec: &StageContext<'_>, shared: &StageShared) -> Self {
                HostStates {
                    $( $module: HostState::new(spec, &shared.$module), )*
                }
            }
        }

        $(
            impl<T: HostStatesView> $module::$view for T {
                fn $access(&mut self) -> &mut $module::$state {
                    &mut self.host_states().$module
                }
            }
        )*

        /// Link the shared data model and the `granted` capabilities into `linker`.
        pub fn add_to_linker<T>(
            linker: &mut Linker<T>,
            granted: &BTreeSet<Capability>,
        ) -> wasmtime::Result<()>
        where
            T: types::Host + HostStatesView + 'static,
        {
            // `types` declares records only; every plugin imports it.
            types::add_to_linker::<T, HasSelf<T>>(linker, |data| data)?;
            for capability in granted {
                match capability {
                    $( Capability::$variant => $module::add_to_linker(linker)?, )*
                }
            }
            Ok(())
        }
    };
}

capabilities! {
    Log => log::LogCtx, view LogView::log,
    Metrics => metrics::MetricsCtx, view MetricsView::metrics,
    State => state::StateCtx, view StateView::state,
    Limits => limits::LimitsCtx, view LimitsView::limits,
    /// Linked exactly when the stage is granted a model (`grants.models`).
    Inference => inference::InferenceCtx, view InferenceView::inference,
}

impl Capability {
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

/// The first `sluice:plugin` capability that `component` imports and is not `granted`.
/// Checked before linking, so the error names the grant rather than a missing import.
pub fn check_imports(
    component: &Component,
    engine: &wasmtime::Engine,
    granted: &BTreeSet<Capability>,
) -> Result<(), Capability> {
    for (name, _) in component.component_type().imports(engine) {
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
            return Err(capability);
        }
    }
    Ok(())
}
