//! The plugin checks of `sluice validate`: load every plugin and start one instance of
//! every plugin stage with its config (running `init`) — what a start would do first —
//! without running anything.

use super::prepare;
use crate::component::BuildContext;
use crate::config::Config;
use crate::inference::Models;
use crate::state::StateStore;

/// Every problem found, one message each (naming the plugin and the stage).
pub fn try_start_plugins(config: &Config) -> Vec<String> {
    let runtime = match prepare::runtime(config) {
        Ok(runtime) => runtime,
        Err(error) => return vec![error.to_string()],
    };
    let (plugins, failures) = prepare::load_plugins(&runtime, config);
    let mut problems: Vec<String> = failures.iter().map(ToString::to_string).collect();
    let state = StateStore::in_memory();
    // The config's own files: validating keeps no versions and switches nothing.
    let models = match Models::load(&config.models, &config.inference, None) {
        Ok(models) => models,
        Err(error) => {
            problems.push(error.to_string());
            return problems;
        }
    };
    for (stage, _, declaration) in config.declarations() {
        let Some(plugin) = declaration.plugin else {
            continue;
        };
        // A plugin that did not load was reported above.
        if !plugins.contains_key(plugin.name.get_ref()) {
            continue;
        }
        let context = BuildContext {
            stage,
            runtime: &runtime,
            plugins: &plugins,
            state: &state,
            models: &models,
            data_dir: &config.data_dir,
            role: crate::component::Role::Host,
        };
        if let Err(error) = context.pool(plugin.name.get_ref(), plugin.world, plugin.config, 1) {
            problems.push(error.to_string());
        }
    }
    problems
}
