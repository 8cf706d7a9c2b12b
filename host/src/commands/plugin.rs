//! `sluice plugin test | inspect | new | build | precompile`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use sluice::event::Event;
use sluice::inference::{InferenceConfig, ModelDef, Models};
use sluice::runtime::{
    DirGrant, Grants, InstancePool, Limits, Processed, Runtime, RuntimeOptions, StageSpec, World,
};
use sluice::state::StateStore;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Run a plugin over sample input and print every output with its route.
    Test(TestArgs),
    /// Build a plugin folder (Rust, Python, JavaScript or C) into a component.
    Build {
        /// The plugin folder (with Cargo.toml, app.py, app.js or app.c).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: DIR/NAME.wasm, cargo's path for Rust).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print a plugin's world, exports, imports and digest.
    Inspect {
        /// The plugin component (.wasm).
        plugin: PathBuf,
    },
    /// Compile a plugin ahead of time for a device (set `precompiled` beside its `path`
    /// in the device's config): what a sluice built without a compiler runs.
    #[cfg(feature = "cross-compile")]
    Precompile {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// The device's target triple.
        #[arg(long, default_value = sluice::runtime::precompiled::TARGET)]
        target: String,
        /// Compile for fuel metering (when a stage of the device sets a fuel limit).
        #[arg(long)]
        fuel: bool,
        /// Where to write the artifact (default: the plugin's path with `.cwasm`).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Create a new plugin project that builds and passes `plugin test` as it is.
    New {
        /// The plugin's name (a directory of that name is created).
        name: String,
        /// The plugin's language.
        #[arg(long, value_enum, default_value_t = super::scaffold::Language::Rust)]
        lang: super::scaffold::Language,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Args)]
pub struct TestArgs {
    /// The plugin component (.wasm), or a plugin folder, which is built first.
    plugin: PathBuf,
    /// A config entry `key=value`; dotted keys nest (`when.gt=80`), values parse as
    /// JSON when they can and are strings otherwise. Repeatable.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// The whole config as a JSON object (entries from --config are merged into it).
    #[arg(long, value_name = "JSON")]
    config_json: Option<String>,
    /// Input events, one JSON payload per line ("-" for stdin). Processors only.
    #[arg(long, short = 'i')]
    input: Option<PathBuf>,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Collector ticks to run.
    #[arg(long, default_value_t = 1)]
    ticks: u32,
    /// Grant a host directory read-only, as HOST:GUEST. Repeatable.
    #[arg(long = "dir", value_name = "HOST:GUEST")]
    dirs: Vec<String>,
    /// Grant a host environment variable by name. Repeatable.
    #[arg(long = "env", value_name = "NAME")]
    env: Vec<String>,
    /// Grant an ONNX model, as NAME=PATH (a scorer opens it by NAME). Repeatable.
    #[arg(long = "model", value_name = "NAME=PATH")]
    models: Vec<String>,
    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Memory cap of the instance, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mb: u64,
    /// Fuel per call (enables fuel metering).
    #[arg(long)]
    fuel: Option<u64>,
}

pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Test(args) => test(args),
        PluginCommand::Build { dir, output } => {
            let component = super::plugin_build::build(&dir, output.as_deref())?;
            println!("{}", component.display());
            Ok(())
        }
        PluginCommand::Inspect { plugin } => inspect(&plugin),
        #[cfg(feature = "cross-compile")]
        PluginCommand::Precompile {
            plugin,
            target,
            fuel,
            output,
        } => {
            let wasm =
                std::fs::read(&plugin).with_context(|| format!("reading {}", plugin.display()))?;
            let compiled = sluice::runtime::precompiled::precompile(&wasm, &target, fuel)
                .map_err(|error| anyhow::anyhow!("{}: {error}", plugin.display()))?;
            let output = output.unwrap_or_else(|| plugin.with_extension("cwasm"));
            std::fs::write(&output, compiled)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{}", output.display());
            Ok(())
        }
        PluginCommand::New { name, lang, dir } => super::scaffold::create(&name, lang, &dir),
    }
}

fn plugin_name(path: &std::path::Path) -> String {
    path.file_stem().map_or_else(
        || "plugin".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    )
}

/// Build the config object from `--config-json` and `--config key=value` entries.
fn build_config(json: Option<&str>, entries: &[String]) -> anyhow::Result<Value> {
    let mut config = match json {
        Some(text) => serde_json::from_str(text).context("--config-json is not valid JSON")?,
        None => Value::Object(Map::new()),
    };
    if !config.is_object() {
        bail!("--config-json must be a JSON object");
    }
    for entry in entries {
        let (key, raw) = entry
            .split_once('=')
            .with_context(|| format!("--config `{entry}` is not KEY=VALUE"))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let mut current = &mut config;
        let mut steps = key.split('.').peekable();
        while let Some(step) = steps.next() {
            let object = current
                .as_object_mut()
                .with_context(|| format!("--config `{key}`: a parent is not an object"))?;
            if steps.peek().is_none() {
                object.insert(step.to_owned(), value.clone());
                break;
            }
            current = object
                .entry(step.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(config)
}

fn parse_dirs(dirs: &[String]) -> anyhow::Result<Vec<DirGrant>> {
    dirs.iter()
        .map(|entry| {
            let (host, guest) = entry
                .split_once(':')
                .with_context(|| format!("--dir `{entry}` is not HOST:GUEST"))?;
            Ok(DirGrant {
                host: host.into(),
                guest: guest.to_owned(),
                writable: false,
            })
        })
        .collect()
}

/// The `--model NAME=PATH` entries, loaded.
fn load_models(entries: &[String]) -> anyhow::Result<(Vec<String>, Models)> {
    let mut defs = std::collections::BTreeMap::new();
    for entry in entries {
        let (name, path) = entry
            .split_once('=')
            .with_context(|| format!("--model `{entry}` is not NAME=PATH"))?;
        let def: ModelDef = toml::from_str(&format!("path = {path:?}"))?;
        defs.insert(name.to_owned(), def);
    }
    let models = Models::load(&defs, &InferenceConfig::default(), None)?;
    Ok((defs.into_keys().collect(), models))
}

fn read_input(path: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot open input {}", path.display()))?,
        ))
    };
    let origin: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
    let mut events = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", path.display(), number + 1))?;
        if !line.trim().is_empty() {
            events.push(Event::new(line.into_bytes(), origin.clone()));
        }
    }
    Ok(events)
}

fn test(mut args: TestArgs) -> anyhow::Result<()> {
    if args.plugin.is_dir() {
        args.plugin = super::plugin_build::build(&args.plugin, None)?;
    }
    let runtime = Runtime::new(RuntimeOptions {
        fuel: args.fuel.is_some(),
        ..RuntimeOptions::with_default_cache()
    })?;
    let name = plugin_name(&args.plugin);
    let plugin = runtime.load(&name, &args.plugin, None)?;
    let world = plugin.world.with_context(|| {
        format!(
            "{} exports neither a Sluice processor nor a collector (see `sluice plugin inspect`)",
            args.plugin.display()
        )
    })?;
    let config = build_config(args.config_json.as_deref(), &args.config)?;
    let (granted, models) = load_models(&args.models)?;
    let spec = StageSpec {
        stage: Arc::from(name.as_str()),
        config: config.to_string(),
        limits: Limits {
            memory_bytes: args.memory_mb << 20,
            timeout: Duration::from_millis(args.timeout_ms),
            fuel: args.fuel,
            ..Limits::default()
        },
        grants: Grants {
            dirs: parse_dirs(&args.dirs)?,
            env: args.env.clone(),
            models: granted.clone(),
            ..Grants::default()
        },
        state: StateStore::in_memory(),
        models: models.grant(&name, &granted)?,
    };
    let pool = InstancePool::new(&runtime, plugin, world, spec, 1)?;
    let mut out = std::io::stdout().lock();
    let (mut inputs, mut outputs, mut dead) = (0, 0, 0);
    match world {
        World::Processor => {
            let input = args
                .input
                .as_deref()
                .context("a processor needs --input FILE (JSON lines, or - for stdin)")?;
            let events = read_input(input)?;
            for chunk in events.chunks(args.batch.max(1)) {
                let (processed, writes) = pool.process_isolating(chunk)?;
                if let Some(writes) = writes {
                    writes.commit()?;
                }
                inputs += chunk.len();
                outputs += processed.emitted.len();
                dead += processed.rejected.len();
                print_processed(&mut out, &processed, chunk)?;
            }
        }
        World::Collector => {
            for _ in 0..args.ticks {
                let (processed, writes) = pool.collect()?;
                outputs += processed.emitted.len();
                print_processed(&mut out, &processed, &[])?;
                // Printed is taken: the tick's state holds for the next one.
                writes.commit()?;
            }
        }
    }
    out.flush()?;
    tracing::info!(inputs, outputs, dead_lettered = dead, "plugin test done");
    Ok(())
}

fn print_processed(
    out: &mut impl Write,
    processed: &Processed,
    inputs: &[Event],
) -> std::io::Result<()> {
    for emitted in &processed.emitted {
        let route = emitted.route.as_deref().unwrap_or("default");
        writeln!(
            out,
            "[{route}] {}",
            String::from_utf8_lossy(&emitted.event.payload)
        )?;
    }
    for rejection in &processed.rejected {
        let payload = inputs
            .get(rejection.input)
            .map(|e| e.payload_preview(200))
            .unwrap_or_default();
        writeln!(out, "[dead_letter] {} | {payload}", rejection.reason)?;
    }
    Ok(())
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeOptions::with_default_cache())?;
    let plugin = runtime.load(&plugin_name(path), path, None)?;
    let size = std::fs::metadata(path)?.len();
    let mut out = std::io::stdout().lock();
    writeln!(out, "plugin:  {}", path.display())?;
    writeln!(out, "size:    {size} bytes")?;
    writeln!(out, "sha256:  {}", plugin.sha256)?;
    match plugin.world {
        Some(world) => writeln!(out, "world:   sluice:plugin/{world}")?,
        None => writeln!(
            out,
            "world:   none (exports neither `process` nor `collect`)"
        )?,
    }
    writeln!(out, "exports:")?;
    for (name, kind) in plugin.exports(&runtime) {
        writeln!(out, "  {name}: {kind}")?;
    }
    writeln!(out, "imports:")?;
    for (name, kind) in plugin.imports(&runtime) {
        writeln!(out, "  {name}: {kind}")?;
    }
    Ok(())
}
