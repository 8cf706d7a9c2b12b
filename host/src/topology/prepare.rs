//! What every stage is built with, prepared one way for a start and for `validate`: the
//! runtime (metering fuel when any plugin sets a fuel limit) and every plugin loaded.

use std::collections::HashMap;
use std::sync::Arc;

use crate::component::LoadedPlugin;
use crate::config::Config;
use crate::runtime::{PluginError, Runtime, RuntimeOptions};

/// The runtime for `config`'s plugins.
pub(super) fn runtime(config: &Config) -> Result<Arc<Runtime>, PluginError> {
    Runtime::new(RuntimeOptions {
        fuel: config.meters_fuel(),
        ..RuntimeOptions::with_default_cache()
    })
}

/// Every plugin of `config` that loads, and why each other one did not.
pub(super) fn load_plugins(
    runtime: &Runtime,
    config: &Config,
) -> (HashMap<String, LoadedPlugin>, Vec<PluginError>) {
    let mut plugins = HashMap::new();
    let mut failures = Vec::new();
    for (name, def) in &config.plugins {
        let loaded = runtime.load_with(
            name,
            &def.path,
            def.sha256.as_deref(),
            def.precompiled
                .as_deref()
                .map(|path| crate::runtime::precompiled::Precompiled {
                    path,
                    sha256: def.precompiled_sha256.as_deref(),
                }),
        );
        match loaded {
            Ok(plugin) => {
                let loaded = LoadedPlugin {
                    plugin,
                    limits: def.limits.clone(),
                    grants: def.grants.clone(),
                };
                plugins.insert(name.clone(), loaded);
            }
            Err(error) => failures.push(error),
        }
    }
    (plugins, failures)
}
