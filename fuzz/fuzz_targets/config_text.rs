#![no_main]
//! Config text through what `sluice validate` does with it: `Config::from_text` (parse,
//! interpolate `${VAR}`s, validate), then the report of its diagnostics, or the graph of
//! the config it accepted. Nothing may panic, and a refused config says why.

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sluice::config::Config;

/// Variables named `SET…` are defined, each with its name in lower case as its value;
/// every other one is unset.
fn env(name: &str) -> Option<String> {
    name.starts_with("SET").then(|| name.to_lowercase())
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // A folder that does not exist: relative plugin and model paths resolve to nothing.
    let path = Path::new("/nonexistent/sluice-fuzz/sluice.toml");
    match Config::from_text(path, text, env) {
        Ok(config) => {
            let graph = config.graph();
            let _ = graph.topological_order();
            let _ = graph.to_dot();
            let _ = graph.to_mermaid();
            let _ = config.declarations().count();
        }
        Err(errors) => {
            assert!(!errors.diagnostics.is_empty(), "refused without a reason");
            let _ = errors.positions();
            assert!(errors.report().contains("error:"));
        }
    }
});
