//! The pipeline config: one TOML file in the model of Vector — named `sources`,
//! `transforms` and `sinks`, each with a `type` and `inputs`, plus `plugins`.
//!
//! Loading checks everything it can before anything runs and reports **every** problem
//! with its file, line and column ([`ConfigErrors`]). Each component kind owns its
//! config struct (in `sources/`, `transforms/`, `sinks/`); this module reads the common
//! keys (`type`, `inputs`) and hands the rest of a stage's table to that struct.

pub mod broker;
mod diagnostics;
pub mod fleet;
mod graph;
mod interpolate;
#[cfg(feature = "jobs")]
mod jobs;
mod loader;
mod resources;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use broker::{BrokerConfig, BrokerUser};
pub use diagnostics::{ConfigErrors, Diagnostic, did_you_mean};
pub use graph::{Graph, Node, NodeKind};
#[cfg(feature = "jobs")]
pub use jobs::roots as job_roots;

use crate::component::Declaration;
use crate::connect::token::BearerToken;
use crate::inference::{InferenceConfig, ModelDef};
use crate::runtime::{Grants, Limits};
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::TransformConfig;

/// A loaded, validated config.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    /// Where state, dead letters and default outputs live (relative paths resolve
    /// against the config file's directory).
    pub data_dir: PathBuf,
    pub api: Option<ApiConfig>,
    pub broker: Option<BrokerConfig>,
    pub plugins: BTreeMap<String, PluginDef>,
    /// ONNX models (`[models.NAME]`), paths resolved; loaded at startup.
    pub models: BTreeMap<String, ModelDef>,
    /// Where ONNX Runtime comes from (`[inference]`).
    pub inference: InferenceConfig,
    pub sources: BTreeMap<String, Stage<dyn SourceConfig>>,
    pub transforms: BTreeMap<String, Stage<dyn TransformConfig>>,
    pub sinks: BTreeMap<String, Stage<dyn SinkConfig>>,
    /// Devices managed from this config (`[fleet]`), served on the API port.
    pub fleet: Option<fleet::FleetConfig>,
    /// Scheduled work beside the pipeline (`[jobs.NAME]`).
    #[cfg(feature = "jobs")]
    pub jobs: BTreeMap<String, crate::jobs::JobDef>,
    /// Where the jobs' runs are kept (`[scheduler]`).
    #[cfg(feature = "jobs")]
    pub scheduler: crate::jobs::SchedulerConfig,
}

crate::connect::listener::listener_config! {
    /// `[api]`: the HTTP endpoint for `/metrics`, `/health`, `/ready`, the tables, the
    /// admin page and the fleet, with the keys of every listener (`tls`, `insecure`, ...).
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiConfig {
        /// Guards `/admin`, `/v1/admin/overview`, `/fleet/v1/devices` and `/metrics`.
        /// Without it those are open: allowed on a loopback address only (or `insecure`).
        #[serde(default)]
        pub admin_token: Option<BearerToken>,
        /// May read `/metrics` besides the admin token (Prometheus's scrape token).
        #[serde(default)]
        pub metrics_token: Option<BearerToken>,
        /// Client certificates (verified against `tls.client_ca_file`) naming one of
        /// these are admins as the admin token is.
        #[serde(default)]
        pub admin_certificates: Vec<String>,
    }
}

impl ApiConfig {
    /// Whether the admin routes need credentials (a token or a client certificate).
    pub fn authenticates(&self) -> bool {
        self.admin_token.is_some() || !self.admin_certificates.is_empty()
    }
}

/// `[plugins.NAME]`: a Wasm component and what stages using it may do.
#[derive(Debug, Clone)]
pub struct PluginDef {
    pub path: PathBuf,
    pub sha256: Option<String>,
    /// The plugin compiled ahead of time for this machine (`runtime::precompiled`):
    /// what a build without a compiler runs; a compiler falls back to the Wasm.
    pub precompiled: Option<PathBuf>,
    /// The sha256 `precompiled` must have: hashed before each load, refused if it differs.
    pub precompiled_sha256: Option<String>,
    pub limits: Limits,
    pub grants: Grants,
    path_span: Range<usize>,
    pin_span: Option<Range<usize>>,
}

/// One named stage with its kind-specific config.
#[derive(Debug)]
pub struct Stage<C: ?Sized> {
    pub name: String,
    /// Where the stage's table starts in the file.
    pub span: Range<usize>,
    /// Its `type`.
    pub kind: &'static str,
    pub inputs: Vec<Input>,
    pub config: Box<C>,
}

/// One entry of `inputs`: a stage's default output, or one of its routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub stage: String,
    pub route: Option<String>,
    pub span: Range<usize>,
}

impl Input {
    fn parse(text: &str, span: Range<usize>) -> Input {
        match text.split_once('.') {
            Some((stage, route)) => Input {
                stage: stage.to_owned(),
                route: Some(route.to_owned()),
                span,
            },
            None => Input {
                stage: text.to_owned(),
                route: None,
                span,
            },
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.route {
            Some(route) => write!(f, "{}.{route}", self.stage),
            None => f.write_str(&self.stage),
        }
    }
}

/// The route every stage has for events it could not handle.
pub const DEAD_LETTER: &str = "dead_letter";

impl Config {
    /// Whether a plugin sets a fuel limit: the runtime then meters fuel for all of them
    /// (and the machine code is compiled for it).
    pub fn meters_fuel(&self) -> bool {
        self.plugins
            .values()
            .any(|plugin| plugin.limits.fuel.is_some())
    }

    /// Read, interpolate and validate the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, |name| std::env::var(name).ok())
    }

    /// [`Config::load`], taking `${VAR}`s from `env`.
    pub fn load_with(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigErrors {
            file: path.to_owned(),
            text: String::new(),
            diagnostics: vec![Diagnostic::new(
                None,
                format!("cannot read the config: {error}"),
            )],
        })?;
        Config::from_text(path, &text, env)
    }

    /// Validate `text` as if read from `path`, taking `${VAR}`s from `env`.
    pub fn from_text(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        loader::load(path, text, env)
    }

    /// The stage graph (inputs resolved), for running and drawing.
    pub fn graph(&self) -> Graph {
        Graph::from_config(self)
    }

    /// What every stage declares (sources, then transforms, then sinks), with the
    /// stage's name and where its table starts.
    pub fn declarations(&self) -> impl Iterator<Item = (&str, &Range<usize>, Declaration<'_>)> {
        fn each<'c, C: ?Sized>(
            stages: &'c BTreeMap<String, Stage<C>>,
            declare: fn(&'c C) -> Declaration<'c>,
        ) -> impl Iterator<Item = (&'c str, &'c Range<usize>, Declaration<'c>)> {
            stages
                .values()
                .map(move |stage| (stage.name.as_str(), &stage.span, declare(&stage.config)))
        }
        each(&self.sources, |c| c.declare())
            .chain(each(&self.transforms, |c| c.declare()))
            .chain(each(&self.sinks, |c| c.declare()))
    }
}
