//! Loading a plugin: read, verify the pin, compile (or load from the cache, or from a
//! precompiled artifact), find its world and check that it links at all. Each stage links it again (`InstancePre`) with only
//! the capabilities it grants, once, so that instantiation is cheap afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::engine::Runtime;
use super::error::PluginError;
use super::precompiled::{PrecompileError, Precompiled};
use super::world::World;

/// A compiled and linked plugin, shared by every stage that uses it.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// `None` when the component exports neither Sluice world.
    pub world: Option<World>,
    /// A processor that exports `tick` (the `timed-processor` world, contract 0.1.3).
    pub ticks: bool,
    pub component: Component,
    /// Whether this plugin was loaded as machine code (the compile cache or a
    /// precompiled artifact) rather than compiled now.
    pub cached: bool,
}

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Plugin {
    pub(crate) fn load(
        runtime: &Runtime,
        name: &str,
        path: &Path,
        pin: Option<&str>,
        precompiled: Option<Precompiled<'_>>,
    ) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            plugin: name.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let sha256 = sha256_hex(&bytes);
        if let Some(expected) = pin
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(PluginError::PinMismatch {
                plugin: name.to_owned(),
                path: path.to_owned(),
                expected: expected.to_owned(),
                actual: sha256,
            });
        }
        let not_a_component = |reason: String| PluginError::NotAComponent {
            plugin: name.to_owned(),
            path: path.to_owned(),
            reason,
        };
        check_component_header(&bytes).map_err(not_a_component)?;
        let (component, cached) = compiled(runtime, name, &bytes, &sha256, precompiled).map_err(
            |reason| match reason {
                Unloadable::ArtifactPin { expected, actual } => PluginError::ArtifactPinMismatch {
                    plugin: name.to_owned(),
                    path: precompiled
                        .map(|artifact| artifact.path.to_owned())
                        .unwrap_or_default(),
                    expected,
                    actual,
                },
                #[cfg(feature = "compiler")]
                Unloadable::DoesNotCompile(reason) => not_a_component(reason),
                #[cfg(not(feature = "compiler"))]
                Unloadable::NoMachineCode(reason) => PluginError::NoMachineCode {
                    plugin: name.to_owned(),
                    path: path.to_owned(),
                    reason,
                },
            },
        )?;
        let world = detect_world(runtime, &component);
        let ticks = world == Some(World::Processor) && exports_tick(runtime, &component);
        runtime.full_linker()?.instantiate_pre(&component).map_err(|error| PluginError::Link {
            plugin: name.to_owned(),
            reason: format!("{error:#}; a plugin may import only WASI (without sockets) and sluice:plugin interfaces"),
        })?;
        Ok(Plugin {
            name: name.to_owned(),
            path: path.to_owned(),
            sha256,
            world,
            ticks,
            component,
            cached,
        })
    }

    /// Fail unless this plugin targets `expected`.
    pub fn expect_world(
        &self,
        runtime: &Runtime,
        stage: &str,
        expected: World,
    ) -> Result<(), PluginError> {
        if self.world == Some(expected) {
            return Ok(());
        }
        let exports: Vec<String> = self
            .exports(runtime)
            .into_iter()
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        Err(PluginError::WrongWorld {
            plugin: self.name.clone(),
            stage: stage.to_owned(),
            expected,
            actual: self.world,
            exports: if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            },
        })
    }

    /// The component's exports as (name, kind).
    pub fn exports(&self, runtime: &Runtime) -> Vec<(String, String)> {
        let ty = self.component.component_type();
        ty.exports(&runtime.engine)
            .map(|(name, item)| (name.to_owned(), describe(&runtime.engine, &item.ty)))
            .collect()
    }

    /// The component's imports as (name, kind).
    pub fn imports(&self, runtime: &Runtime) -> Vec<(String, String)> {
        let ty = self.component.component_type();
        ty.imports(&runtime.engine)
            .map(|(name, item)| (name.to_owned(), describe(&runtime.engine, &item.ty)))
            .collect()
    }
}

/// A short description of an import or export: its kind, and a function's signature.
fn describe(engine: &wasmtime::Engine, item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentFunc(func) => {
            let params: Vec<String> = func
                .params()
                .map(|(name, ty)| format!("{name}: {}", type_name(&ty)))
                .collect();
            let results: Vec<String> = func.results().map(|ty| type_name(&ty)).collect();
            format!(
                "func({}) -> {}",
                params.join(", "),
                if results.is_empty() {
                    "()".into()
                } else {
                    results.join(", ")
                }
            )
        }
        ComponentItem::ComponentInstance(instance) => {
            let names: Vec<&str> = instance.exports(engine).map(|(name, _)| name).collect();
            format!("instance {{ {} }}", names.join(", "))
        }
        ComponentItem::CoreFunc(_) => "core func".into(),
        ComponentItem::Module(_) => "module".into(),
        ComponentItem::Component(_) => "component".into(),
        ComponentItem::Type(_) => "type".into(),
        ComponentItem::Resource(_) => "resource".into(),
    }
}

fn type_name(ty: &wasmtime::component::types::Type) -> String {
    use wasmtime::component::types::Type;
    match ty {
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", type_name(&list.ty())),
        Type::Record(_) => "record".into(),
        Type::Result(_) => "result".into(),
        Type::Option(option) => format!("option<{}>", type_name(&option.ty())),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Why a plugin has no machine code.
enum Unloadable {
    /// Its artifact's bytes are not the pinned ones: refused, never loaded nor replaced
    /// by a compile (something changed a file it should not have).
    ArtifactPin { expected: String, actual: String },
    /// Its Wasm does not compile.
    #[cfg(feature = "compiler")]
    DoesNotCompile(String),
    /// This build cannot compile, and no usable artifact was given.
    #[cfg(not(feature = "compiler"))]
    NoMachineCode(String),
}

/// The plugin's machine code: its precompiled artifact if it has a usable one, else
/// compiled here (from the cache when compiled before).
fn compiled(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    sha256: &str,
    precompiled: Option<Precompiled<'_>>,
) -> Result<(Component, bool), Unloadable> {
    let unusable = match precompiled {
        Some(artifact) => match super::precompiled::load(&runtime.engine, artifact) {
            Ok(component) => return Ok((component, true)),
            Err(PrecompileError::Mismatch { expected, actual }) => {
                return Err(Unloadable::ArtifactPin { expected, actual });
            }
            Err(error) => Some(format!(
                "its precompiled artifact {} is unusable: {error}",
                artifact.path.display()
            )),
        },
        None => None,
    };
    compile_here(runtime, name, bytes, sha256, unusable)
}

/// Compile the Wasm here (or take it from the cache), after saying why the artifact
/// given, if any, could not serve.
#[cfg(feature = "compiler")]
fn compile_here(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    sha256: &str,
    unusable: Option<String>,
) -> Result<(Component, bool), Unloadable> {
    if let Some(unusable) = unusable {
        tracing::warn!(plugin = name, "{unusable}; compiling it here");
    }
    runtime
        .cache
        .load_or_compile(&runtime.engine, bytes, sha256)
        .map_err(|error| Unloadable::DoesNotCompile(format!("it does not compile: {error}")))
}

/// This build cannot compile: say why the plugin cannot run.
#[cfg(not(feature = "compiler"))]
fn compile_here(
    _runtime: &Runtime,
    _name: &str,
    _bytes: &[u8],
    _sha256: &str,
    unusable: Option<String>,
) -> Result<(Component, bool), Unloadable> {
    let why = unusable.unwrap_or_else(|| "it has no precompiled artifact".to_owned());
    Err(Unloadable::NoMachineCode(format!(
        "{why}, and this sluice cannot compile Wasm (built without the `compiler` feature): \
         it runs components precompiled for {} (an agent gets them from its central host)",
        super::precompiled::TARGET
    )))
}

/// Tell apart "not wasm at all", "a core module" and "a component" by the header.
fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("the file does not start with the WebAssembly magic bytes".to_owned());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(
            "it is a core WebAssembly module; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                .to_owned(),
        ),
        _ => Err("unknown WebAssembly version or layer".to_owned()),
    }
}

fn exports_tick(runtime: &Runtime, component: &Component) -> bool {
    component
        .component_type()
        .exports(&runtime.engine)
        .any(|(name, _)| name == "tick")
}

fn detect_world(runtime: &Runtime, component: &Component) -> Option<World> {
    let ty = component.component_type();
    let names: Vec<&str> = ty.exports(&runtime.engine).map(|(name, _)| name).collect();
    let has = |wanted: &str| names.contains(&wanted);
    match (has("init"), has("process"), has("collect")) {
        (true, true, false) => Some(World::Processor),
        (true, false, true) => Some(World::Collector),
        _ => None,
    }
}

/// Loading lives beside the plugin so that the engine knows nothing of plugins.
impl Runtime {
    /// Load, verify and link a plugin. `pin` is the expected sha256, if the config sets one.
    pub fn load(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&str>,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.load_with(name, path, pin, None)
    }

    /// [`Runtime::load`], with `precompiled`: the plugin compiled ahead of time for this
    /// machine (`runtime::precompiled`), what a build without a compiler runs; with a
    /// pin, its bytes are hashed first and refused if they differ.
    pub fn load_with(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&str>,
        precompiled: Option<Precompiled<'_>>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let plugin = Plugin::load(self, name, path, pin, precompiled)?;
        tracing::debug!(plugin = name, path = %path.display(), cached = plugin.cached, "plugin loaded");
        Ok(Arc::new(plugin))
    }
}
