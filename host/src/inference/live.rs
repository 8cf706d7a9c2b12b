//! Live models: a model a pipeline loads is a slot whose version can be replaced while
//! its stages run, without a restart. A stage reads the slot's version when it runs the
//! model (the `inference` capability keeps one version for a whole plugin call, so one
//! batch is scored by one version); a switch is one pointer swap, so a run already
//! going finishes on the version it started with.
//!
//! The slots of a process are registered by model name, as the tables are
//! (`crate::tables::tables()`): a `model` job switches the model the running pipeline
//! serves, and another pipeline of the process (a replay's, or the next config on a
//! reload) that loads the same `[models.NAME]` shares the slot, so it scores with the
//! deployed version too. A `[models.NAME]` that differs gets a slot of its own, which
//! then is the one registered. The registry holds slots weakly: a model no pipeline
//! uses any more is freed with its sessions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use super::versions::{self, Store};
use super::{InferenceError, Model, ModelDef};

/// A model as stages see it: the version served now, which may change at any time.
pub struct LiveModel {
    name: String,
    /// The config's `[models.NAME]`: what every version must take and return, and how
    /// it runs.
    def: ModelDef,
    library: Option<PathBuf>,
    /// Where its versions are kept; `None` for a model loaded for one caller only.
    data_dir: Option<PathBuf>,
    serving: RwLock<Serving>,
}

#[derive(Clone)]
struct Serving {
    version: u64,
    model: Arc<Model>,
}

impl LiveModel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version to run now. A caller that must run one version over a whole batch
    /// keeps this `Arc` for the batch.
    pub fn current(&self) -> Arc<Model> {
        self.serving().model
    }

    /// The number of the version served now (0 for a model whose versions are not
    /// kept).
    pub fn version(&self) -> u64 {
        self.serving().version
    }

    fn serving(&self) -> Serving {
        self.serving
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Serve `model` as `version` from now on.
    fn serve(&self, version: u64, model: Model) {
        *self
            .serving
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Serving {
            version,
            model: Arc::new(model),
        };
    }
}

/// The process's live models, by name.
static LIVE: LazyLock<Mutex<HashMap<String, Weak<LiveModel>>>> = LazyLock::new(Default::default);

fn registry() -> std::sync::MutexGuard<'static, HashMap<String, Weak<LiveModel>>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Model `name` as `def` configures it. With `data_dir`: the registered slot if it has
/// the same `def`, else a new slot serving the active version kept in `data_dir`,
/// registered. Without: a slot of the config's file for the caller alone.
pub(super) fn open(
    name: &str,
    def: &ModelDef,
    library: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<Arc<LiveModel>, InferenceError> {
    let slot = |version, model| LiveModel {
        name: name.to_owned(),
        def: def.clone(),
        library: library.map(Path::to_owned),
        data_dir: data_dir.map(Path::to_owned),
        serving: RwLock::new(Serving {
            version,
            model: Arc::new(model),
        }),
    };
    let Some(data_dir) = data_dir else {
        return Ok(Arc::new(slot(0, Model::load(name, def, library)?)));
    };
    // Held while loading, so that two pipelines starting together share one slot.
    let mut live = registry();
    if let Some(shared) = live.get(name).and_then(Weak::upgrade)
        && shared.def == *def
    {
        tracing::debug!(
            model = name,
            version = shared.version(),
            "model shared with a running pipeline"
        );
        return Ok(shared);
    }
    let (version, model) = versions::load_active(name, def, library, data_dir)?;
    let slot = Arc::new(slot(version, model));
    live.insert(name.to_owned(), Arc::downgrade(&slot));
    Ok(slot)
}

/// The registered slot of `name` whose versions are kept in `data_dir`, if a pipeline
/// serves it.
fn serving_from(name: &str, data_dir: &Path) -> Option<Arc<LiveModel>> {
    registry()
        .get(name)
        .and_then(Weak::upgrade)
        .filter(|slot| slot.data_dir.as_deref() == Some(data_dir))
}

/// What a deployment or an activation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub model: String,
    /// The version active before, and the one active now (the same if it already was).
    pub from: u64,
    pub to: u64,
    pub sha256: String,
    /// Whether a running pipeline of this process serves it now; otherwise it is served
    /// from the next start.
    pub live: bool,
}

/// Make `bytes` (read from `source`, its pin already checked by the caller) the next
/// version of model `name` and switch to it: the model a running pipeline with this
/// `data_dir` serves is the one switched, and its `[models.NAME]` is what the file must
/// fit (inputs, outputs) and how it runs. Nothing changes unless the file loads and fits.
/// `origin` says who deployed it, for the history (`job NAME`).
pub fn deploy(
    name: &str,
    source: &Path,
    bytes: &[u8],
    origin: &str,
    data_dir: &Path,
) -> Result<Switch, InferenceError> {
    let slot = serving_from(name, data_dir).ok_or_else(|| InferenceError::Version {
        model: name.to_owned(),
        message: format!(
            "no running pipeline with data directory {} serves it, so there is no `[models.{name}]` to check the new version against",
            data_dir.display()
        ),
    })?;
    let model = Model::open(
        name,
        &slot.def,
        source,
        bytes,
        None,
        slot.library.as_deref(),
    )?;
    let _changing = versions::lock();
    let store = Store::new(name, data_dir)?;
    let mut history = versions::existing(&store, data_dir)?;
    let from = history.active;
    if history.active_version()?.sha256 == model.sha256 {
        return Ok(Switch {
            model: name.to_owned(),
            from,
            to: from,
            sha256: model.sha256.clone(),
            live: true,
        });
    }
    store.keep(&model.sha256, bytes)?;
    let to = history.push(&model.sha256, source, origin);
    history.active = to;
    history.note_config();
    store.write(&history)?;
    let sha256 = model.sha256.clone();
    slot.serve(to, model);
    tracing::info!(model = name, from, to, sha256, source = %source.display(), "model version deployed");
    Ok(Switch {
        model: name.to_owned(),
        from,
        to,
        sha256,
        live: true,
    })
}

/// Make version `version` of model `name`, kept in `data_dir`, the active one again (a
/// rollback, or a roll forward after one). A running pipeline of this process serving
/// the model switches to it, once it has loaded and fits the pipeline's `[models.NAME]`;
/// otherwise only the history changes, and the next start serves it.
pub fn activate(name: &str, version: u64, data_dir: &Path) -> Result<Switch, InferenceError> {
    let slot = serving_from(name, data_dir);
    let _changing = versions::lock();
    let store = Store::new(name, data_dir)?;
    let mut history = versions::existing(&store, data_dir)?;
    let target = versions::listed(&history, version)?.clone();
    let bytes = store.bytes(&target)?;
    let model = match &slot {
        Some(slot) => Some(Model::open(
            name,
            &slot.def,
            &store.file(&target),
            &bytes,
            Some(&target.sha256),
            slot.library.as_deref(),
        )?),
        None => None,
    };
    let from = history.active;
    history.active = version;
    history.note_config();
    store.write(&history)?;
    if let (Some(slot), Some(model)) = (&slot, model) {
        slot.serve(version, model);
    }
    tracing::info!(
        model = name,
        from,
        to = version,
        sha256 = target.sha256,
        live = slot.is_some(),
        "model version activated"
    );
    Ok(Switch {
        model: name.to_owned(),
        from,
        to: version,
        sha256: target.sha256,
        live: slot.is_some(),
    })
}
