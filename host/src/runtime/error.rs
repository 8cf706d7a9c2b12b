//! Typed errors of the plugin runtime. Every message names the plugin, and the stage
//! where one is involved, so that an operator can find the culprit from the log line.

use std::path::PathBuf;
use std::time::Duration;

use super::plugin::World;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}`: cannot read {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("plugin `{plugin}` ({path}) is not a WebAssembly component: {reason}")]
    NotAComponent {
        plugin: String,
        path: PathBuf,
        reason: String,
    },

    #[error("plugin `{plugin}` ({path}): sha256 is {actual} but the config pins {expected}")]
    PinMismatch {
        plugin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "plugin `{plugin}` exports {exports} so it is {}, but stage `{stage}` needs a `{expected}` plugin",
        match actual { Some(world) => format!("a `{world}`"), None => "no Sluice world".to_owned() }
    )]
    WrongWorld {
        plugin: String,
        stage: String,
        expected: World,
        actual: Option<World>,
        exports: String,
    },

    #[error("plugin `{plugin}` cannot be linked: {reason}")]
    Link { plugin: String, reason: String },

    #[error("stage `{stage}`: cannot grant {what}: {reason}")]
    Grant {
        stage: String,
        what: String,
        reason: String,
    },

    #[error("stage `{stage}` (plugin `{plugin}`): {failure}")]
    Call {
        stage: String,
        plugin: String,
        failure: CallFailure,
    },

    #[error("plugin cache: {0}")]
    Cache(String),
}

impl PluginError {
    /// The call failure, if this error is one.
    pub fn failure(&self) -> Option<&CallFailure> {
        match self {
            PluginError::Call { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// Why one call into a plugin failed. The instance that failed is discarded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    #[error("init failed: {0}")]
    Init(String),
    #[error("timed out: the call ran past its {0:?} deadline")]
    Timeout(Duration),
    #[error(
        "out of memory: the plugin tried to grow its memory to {desired} bytes, over its {limit}-byte limit"
    )]
    OutOfMemory { desired: u64, limit: u64 },
    #[error("out of fuel: the call used up its {0} units of fuel")]
    OutOfFuel(u64),
    #[error("trapped: {message}{}", stderr_suffix(.stderr))]
    Trap { message: String, stderr: String },
    #[error("returned an error: {0}")]
    Returned(String),
    #[error("malformed output: {0}")]
    MalformedOutput(String),
    #[error("state store failed: {0}")]
    State(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (plugin stderr: {stderr})")
    }
}
