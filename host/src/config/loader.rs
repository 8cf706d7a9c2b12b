//! Reading a config: the parsed TOML turned into a [`Config`], every problem collected
//! as a [`Diagnostic`] at its place in the file rather than stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    Config, ConfigErrors, Diagnostic, Input, PluginDef, Stage, did_you_mean, graph, interpolate,
    resources,
};
use crate::component::Kind;
use crate::inference::{InferenceConfig, ModelDef};
use crate::runtime::{Grants, Limits};

const TOP_LEVEL_KEYS: [&str; 13] = [
    "data_dir",
    "api",
    "broker",
    "plugins",
    "models",
    "inference",
    "sources",
    "transforms",
    "sinks",
    "fleet",
    "jobs",
    "scheduler",
    "tests",
];

/// Turn `text`, read from `path`, into a validated [`Config`], or every problem found.
pub(super) fn load(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let mut loader = Loader {
        base,
        diagnostics: Vec::new(),
        broken: Default::default(),
        #[cfg(feature = "jobs")]
        job_dependencies: Default::default(),
        #[cfg(feature = "jobs")]
        broken_jobs: Default::default(),
    };
    let config = match DeTable::parse(text) {
        Ok(mut root) => {
            let interpolation = interpolate::interpolate(&mut root, text, &env);
            let config = loader.document(path, root);
            loader.diagnostics.retain(|d| !interpolation.explains(d));
            loader.diagnostics.splice(0..0, interpolation.diagnostics);
            Some(config)
        }
        Err(error) => {
            let message = error.message().trim().to_owned();
            let diagnostic = match error.span() {
                Some(span) => match unquoted_variable(text, span.start) {
                    Some(at) => Diagnostic::new(Some(at..span.end.max(at + 2)), message)
                        .with_hint("`${VAR}` is replaced only inside quoted strings, e.g. `\"${VAR}\"`: a variable always stands for (part of) a string"),
                    None => Diagnostic::new(Some(span), message),
                },
                None => Diagnostic::new(None, message),
            };
            loader.diagnostics.push(diagnostic);
            None
        }
    };
    match config {
        Some(config) if loader.diagnostics.is_empty() => Ok(config),
        _ => Err(ConfigErrors {
            file: path.to_owned(),
            text: text.to_owned(),
            diagnostics: loader.diagnostics,
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: Spanned<PathBuf>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    precompiled: Option<PathBuf>,
    #[serde(default)]
    precompiled_sha256: Option<Spanned<String>>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    grants: Grants,
}

/// Where a TOML syntax error at `at` is a `${VAR}` written outside a string (the parser
/// stops at its `$` or just after it), the offset of that `$`.
fn unquoted_variable(text: &str, at: usize) -> Option<usize> {
    let rest = text.get(at..)?;
    if rest.starts_with("${") {
        Some(at)
    } else if rest.starts_with('{') && text[..at].ends_with('$') {
        Some(at - 1)
    } else {
        None
    }
}

/// Collects diagnostics while turning the parsed TOML into a [`Config`].
pub(super) struct Loader {
    pub(super) base: PathBuf,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// Stages whose tables did not parse (already reported).
    broken: std::collections::BTreeSet<String>,
    /// Each job's `depends_on`, with where each entry is written.
    #[cfg(feature = "jobs")]
    pub(super) job_dependencies: BTreeMap<String, Vec<(String, Range<usize>)>>,
    /// Jobs whose tables did not parse (already reported).
    #[cfg(feature = "jobs")]
    pub(super) broken_jobs: std::collections::BTreeSet<String>,
}

pub(super) type Entry<'i> = (Spanned<std::borrow::Cow<'i, str>>, Spanned<DeValue<'i>>);

impl Loader {
    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diagnostics.push(Diagnostic::new(Some(span), message));
        self.diagnostics.last_mut().unwrap()
    }

    /// Deserialize one value, recording its error (with the most precise span) if any.
    pub(super) fn typed<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(typed) => Some(typed),
            Err(error) => {
                let span = error.span().unwrap_or(span);
                self.error(span, error.message().trim().to_owned());
                None
            }
        }
    }

    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    fn document(&mut self, path: &Path, root: Spanned<DeTable<'_>>) -> Config {
        let mut config = Config {
            file: path.to_owned(),
            data_dir: self.base.join(".sluice"),
            api: None,
            broker: None,
            plugins: BTreeMap::new(),
            models: BTreeMap::new(),
            inference: InferenceConfig::default(),
            fleet: None,
            sources: BTreeMap::new(),
            transforms: BTreeMap::new(),
            sinks: BTreeMap::new(),
            #[cfg(feature = "jobs")]
            jobs: BTreeMap::new(),
            #[cfg(feature = "jobs")]
            scheduler: Default::default(),
        };
        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "data_dir" => {
                    if let Some(dir) = self.typed::<PathBuf>(value) {
                        config.data_dir = self.resolve(&dir);
                    }
                }
                "api" => config.api = self.typed(value),
                "broker" => config.broker = self.typed(value),
                "fleet" => config.fleet = self.typed(value),
                #[cfg(feature = "jobs")]
                "scheduler" => config.scheduler = self.typed(value).unwrap_or_default(),
                #[cfg(feature = "jobs")]
                "jobs" => {
                    for entry in self.section(value, "jobs") {
                        let name = entry.0.get_ref().to_string();
                        match self.job(entry) {
                            Some(job) => {
                                config.jobs.insert(name, job);
                            }
                            None => {
                                self.broken_jobs.insert(name);
                            }
                        }
                    }
                }
                "plugins" => {
                    for (name, value) in self.section(value, "plugins") {
                        if let Some(plugin) = self.plugin(value) {
                            config
                                .plugins
                                .insert(name.into_inner().into_owned(), plugin);
                        }
                    }
                }
                "models" => {
                    for (name, value) in self.section(value, "models") {
                        if let Some(mut model) = self.typed::<ModelDef>(value) {
                            // One spelling per file, whether the config was named relative
                            // to the working directory or not: the pipelines of a process
                            // (a replay job's beside the host's) share a model, and its kept
                            // versions, only when their declarations are equal.
                            let path = self.resolve(&model.path);
                            model.path = std::fs::canonicalize(&path)
                                .or_else(|_| std::path::absolute(&path))
                                .unwrap_or(path);
                            config.models.insert(name.into_inner().into_owned(), model);
                        }
                    }
                }
                "inference" => {
                    if let Some(mut inference) = self.typed::<InferenceConfig>(value) {
                        inference.library = inference.library.map(|path| self.resolve(&path));
                        config.inference = inference;
                    }
                }
                "sources" => {
                    for entry in self.section(value, "sources") {
                        if let Some(stage) = self.stage(entry, false, crate::sources::KINDS) {
                            config.sources.insert(stage.name.clone(), stage);
                        }
                    }
                }
                "transforms" => {
                    for entry in self.section(value, "transforms") {
                        if let Some(stage) = self.stage(entry, true, crate::transforms::KINDS) {
                            config.transforms.insert(stage.name.clone(), stage);
                        }
                    }
                }
                "sinks" => {
                    for entry in self.section(value, "sinks") {
                        if let Some(stage) = self.stage(entry, true, crate::sinks::KINDS) {
                            config.sinks.insert(stage.name.clone(), stage);
                        }
                    }
                }
                // `sluice test` reads them (docs/testing.md); a pipeline runs without them.
                "tests" => {
                    let tables = matches!(value.get_ref(), DeValue::Array(items)
                        if items.iter().all(|item| matches!(item.get_ref(), DeValue::Table(_))));
                    if !tables {
                        self.error(
                            value.span(),
                            "`tests` must be an array of tables, `[[tests]]`",
                        )
                        .hint = Some(
                            "write each test as `[[tests]]` with a `name` (docs/testing.md)".into(),
                        );
                    }
                }
                #[cfg(not(feature = "jobs"))]
                section @ ("jobs" | "scheduler") => {
                    self.error(key.span(), format!("`[{section}]`: this sluice is built without jobs (cargo feature `jobs`)"));
                }
                other => {
                    let hint = match did_you_mean(other, TOP_LEVEL_KEYS) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("the top-level keys are {}", TOP_LEVEL_KEYS.join(", ")),
                    };
                    self.error(key.span(), format!("unknown key `{other}`"))
                        .hint = Some(hint);
                }
            }
        }
        self.admin_token_alias(&mut config);
        self.stage_problems(&config);
        graph::check(&config, &self.broken, &mut self.diagnostics);
        resources::check(&config, &mut self.diagnostics);
        self.check_plugin_grants(&config);
        #[cfg(feature = "jobs")]
        self.check_jobs(&config);
        config
    }

    /// The entries of a `[section]` table.
    pub(super) fn section<'i>(
        &mut self,
        value: Spanned<DeValue<'i>>,
        name: &str,
    ) -> Vec<Entry<'i>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => table.into_iter().collect(),
            _ => {
                self.error(span, format!("`{name}` must be a table of named entries"));
                Vec::new()
            }
        }
    }

    fn plugin(&mut self, value: Spanned<DeValue<'_>>) -> Option<PluginDef> {
        let raw: RawPlugin = self.typed(value)?;
        if let Some(pin) = &raw.precompiled_sha256 {
            let hex = pin.get_ref();
            if raw.precompiled.is_none() {
                self.error(
                    pin.span(),
                    "`precompiled_sha256` pins an artifact, but `precompiled` names none",
                )
                .hint = Some("set `precompiled` to the artifact's path, or remove the pin".into());
            } else if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                self.error(
                    pin.span(),
                    format!("`precompiled_sha256` is not a sha256: `{hex}`"),
                )
                .hint = Some("64 hexadecimal digits, as `sha256sum` prints them".into());
            }
        }
        Some(PluginDef {
            path: self.resolve(raw.path.get_ref()),
            path_span: raw.path.span(),
            pin_span: raw.sha256.as_ref().map(Spanned::span),
            sha256: raw.sha256.map(Spanned::into_inner),
            precompiled: raw.precompiled.map(|path| self.resolve(&path)),
            precompiled_sha256: raw.precompiled_sha256.map(Spanned::into_inner),
            limits: raw.limits,
            grants: raw.grants,
        })
    }

    /// Read a stage's `type` and `inputs`, and give the rest to its kind's parser.
    fn stage<C: ?Sized>(
        &mut self,
        entry: Entry<'_>,
        takes_inputs: bool,
        kinds: &'static [Kind<C>],
    ) -> Option<Stage<C>> {
        let name = entry.0.get_ref().to_string();
        let stage = self.parse_stage(entry, takes_inputs, kinds);
        if stage.is_none() {
            self.broken.insert(name);
        }
        stage
    }

    fn parse_stage<C: ?Sized>(
        &mut self,
        (name, value): Entry<'_>,
        takes_inputs: bool,
        kinds: &'static [Kind<C>],
    ) -> Option<Stage<C>> {
        let (name, name_span) = (name.get_ref().to_string(), name.span());
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            self.error(span, format!("stage `{name}` must be a table"));
            return None;
        };
        if name.contains('.') {
            self.error(
                name_span.clone(),
                format!("stage name `{name}` contains `.`"),
            )
            .hint =
                Some("a dot separates a stage from its route in `inputs`; rename the stage".into());
        }
        let kind = match table.remove("type").map(|v| (v.span(), v.into_inner())) {
            Some((span, DeValue::String(kind))) => match Kind::find(kinds, &kind) {
                Some(kind) => kind,
                None => {
                    let known = kinds.iter().map(|kind| kind.name);
                    let hint = match did_you_mean(&kind, known.clone()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("known types: {}", known.collect::<Vec<_>>().join(", ")),
                    };
                    self.error(span, format!("stage `{name}` has unknown type `{kind}`"))
                        .hint = Some(hint);
                    return None;
                }
            },
            Some((span, _)) => {
                self.error(span, "`type` must be a string");
                return None;
            }
            None => {
                self.error(name_span, format!("stage `{name}` has no `type`"));
                return None;
            }
        };
        let mut inputs = Vec::new();
        match table.remove("inputs") {
            Some(value) if takes_inputs => {
                let raw: Vec<Spanned<String>> = self.typed(value)?;
                inputs = raw
                    .into_iter()
                    .map(|i| Input::parse(i.get_ref(), i.span()))
                    .collect();
                if inputs.is_empty() {
                    self.error(
                        span.clone(),
                        format!("stage `{name}` has an empty `inputs`"),
                    );
                }
            }
            Some(value) => {
                self.error(
                    value.span(),
                    format!("source `{name}` cannot take `inputs`"),
                );
            }
            None if takes_inputs => {
                self.error(name_span.clone(), format!("stage `{name}` has no `inputs`"))
                    .hint =
                    Some("list the stages it reads from, e.g. `inputs = [\"my_source\"]`".into());
            }
            None => {}
        }
        let rest = Spanned::new(span.clone(), DeValue::Table(table));
        match (kind.parse)(ValueDeserializer::from(rest)) {
            Ok(config) => Some(Stage {
                name,
                span,
                kind: kind.name,
                inputs,
                config,
            }),
            Err(error) => {
                let at = error.span().unwrap_or(span);
                self.error(at, format!("stage `{name}`: {}", error.message().trim()));
                None
            }
        }
    }

    /// `[fleet] admin_token`, from before the API had one, stands for `[api] admin_token`.
    fn admin_token_alias(&mut self, config: &mut Config) {
        let Some(token) = config
            .fleet
            .as_mut()
            .and_then(|fleet| fleet.admin_token.take())
        else {
            return;
        };
        match &mut config.api {
            Some(api) if api.admin_token.is_some() => {
                self.error(token.span(), "`[fleet] admin_token` and `[api] admin_token` are both set")
                    .hint = Some("the API's admin token guards `/fleet/v1/devices` too: remove `admin_token` from `[fleet]`".into());
            }
            Some(api) => api.admin_token = Some(token.into_inner()),
            // Refused by the supervisor's check: a fleet needs the API.
            None => {}
        }
    }

    /// What each stage's config declares wrong, at the stage's table.
    fn stage_problems(&mut self, config: &Config) {
        for (stage, span, declaration) in config.declarations() {
            for problem in declaration.problems {
                self.error(
                    span.clone(),
                    format!("stage `{stage}`: {}", problem.message),
                )
                .hint = Some(problem.hint);
            }
        }
    }

    fn check_plugin_grants(&mut self, config: &Config) {
        for (name, plugin) in &config.plugins {
            for model in &plugin.grants.models {
                if !config.models.contains_key(model) {
                    let hint = match did_you_mean(model, config.models.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("define it: [models.{model}] path = \"….onnx\""),
                    };
                    self.error(plugin.path_span.clone(), format!("plugin `{name}` is granted model `{model}`, which no `[models.{model}]` defines"))
                        .hint = Some(hint);
                }
            }
            // A plugin is a file: a device or a pipe (`/dev/zero`) would be read forever.
            let not_a_file = std::fs::metadata(&plugin.path).is_ok_and(|meta| !meta.is_file());
            if not_a_file {
                self.error(
                    plugin.path_span.clone(),
                    format!(
                        "plugin `{name}`: {} is not a regular file",
                        plugin.path.display()
                    ),
                )
                .hint = Some("point `path` at a .wasm component".into());
                continue;
            }
            match std::fs::read(&plugin.path) {
                Err(error) => {
                    self.error(plugin.path_span.clone(), format!("plugin `{name}`: cannot read {}: {error}", plugin.path.display()))
                        .hint = Some("paths are relative to the config file; build plugins with scripts/build-plugins".into());
                }
                Ok(bytes) => {
                    let actual = crate::runtime::sha256_hex(&bytes);
                    if let (Some(pin), Some(span)) = (&plugin.sha256, &plugin.pin_span)
                        && !pin.eq_ignore_ascii_case(&actual)
                    {
                        self.error(span.clone(), format!("plugin `{name}`: {} has sha256 {actual}, not the pinned one", plugin.path.display()))
                            .hint = Some("rebuild the intended plugin, or update the pin if this file is the one you want".into());
                    }
                }
            }
        }
    }
}
