//! Typed errors of the plugin runtime. Every message names the plugin, and the stage
//! where one is involved, so that an operator can find the culprit from the log line.

use std::path::PathBuf;
use std::time::Duration;

use super::capabilities::Capability;
use super::world::World;

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

    #[error("plugin `{plugin}` ({path}) cannot run here: {reason}")]
    NoMachineCode {
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
        "plugin `{plugin}`: its precompiled artifact {path} has sha256 {actual} but the config pins {expected}; it is not loaded"
    )]
    ArtifactPinMismatch {
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

    #[error(
        "plugin `{plugin}` imports {}, which stage `{stage}` is not granted; {}",
        capability.interface(),
        capability.how_to_grant()
    )]
    NotGranted {
        plugin: String,
        stage: String,
        capability: Capability,
    },

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
    /// The plugin went past one of its stage's quotas (`[plugins.X] limits`).
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The plugin called a host import with arguments the host refuses (say, a metric
    /// name Prometheus cannot carry).
    #[error("host call refused: {0}")]
    Refused(String),
}

/// A quota that a call went past. Host imports trap with it, and the output check
/// returns it, before the host allocates or commits anything on the plugin's behalf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} exceeds limits.{limit} = {allowed}")]
pub struct LimitExceeded {
    /// The config key under `[plugins.X] limits`, e.g. `state_value_bytes`.
    pub limit: &'static str,
    /// What the plugin attempted, e.g. "state value of 8388608 bytes".
    pub what: String,
    pub allowed: u64,
}

impl LimitExceeded {
    pub(crate) fn new(limit: &'static str, what: impl Into<String>, allowed: u64) -> Self {
        LimitExceeded {
            limit,
            what: what.into(),
            allowed,
        }
    }
}

/// A host import's refusal of its arguments; traps the guest like [`LimitExceeded`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub String);

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (plugin stderr: {stderr})")
    }
}
