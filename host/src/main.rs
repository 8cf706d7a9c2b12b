//! The `sluice` command line.

mod commands;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "WebAssembly plugin pipelines from devices to storage"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until interrupted (SIGINT/SIGTERM drain it first).
    Run {
        /// The pipeline config (TOML).
        config: std::path::PathBuf,
    },
    /// Check a pipeline config and report every problem with its place.
    Validate {
        config: std::path::PathBuf,
        /// Then run its tests (`[[tests]]` in it and in `X.test.toml` beside it).
        #[arg(long)]
        test: bool,
    },
    /// Run a pipeline's tests (`[[tests]]`) in process, with its real plugins and models.
    Test(commands::test::TestArgs),
    /// Print a pipeline's stage graph.
    Graph {
        config: std::path::PathBuf,
        #[arg(long, value_enum, default_value_t = commands::pipeline::GraphFormat::Mermaid)]
        format: commands::pipeline::GraphFormat,
    },
    /// Read stored objects back into a pipeline (backfill, reprocessing) to the end.
    #[cfg(feature = "object-store")]
    Replay(commands::replay::ReplayArgs),
    /// Run this device's pipeline as the central host's fleet config says, following
    /// its changes.
    #[cfg(feature = "fleet")]
    Agent(commands::agent::AgentArgs),
    /// Sign the fleet's releases: key pairs, and each group's releases.
    #[cfg(feature = "cross-compile")]
    #[command(subcommand)]
    Fleet(commands::fleet::FleetCommand),
    /// A running host's scheduled jobs: list, runs and logs, run, retry, pause, resume.
    #[cfg(all(feature = "jobs", feature = "fleet"))]
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
    /// Print a live, rate-limited sample of the events leaving a running host's stage.
    #[cfg(all(
        feature = "fleet",
        any(feature = "cross-compile", feature = "jobs", feature = "top")
    ))]
    Tap(commands::tap::TapArgs),
    /// A live view of a running host in the terminal: stages' rates, errors, dead
    /// letters and queues, the fleet's devices, and a tap on a stage's events.
    #[cfg(feature = "top")]
    Top(commands::top::TopArgs),
    /// Check an uplink's disk buffer for damage, and repair it.
    #[command(subcommand)]
    Buffer(commands::buffer::BufferCommand),
    /// Build, test and look inside plugins.
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// Look inside ONNX models.
    #[cfg(feature = "inference")]
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, never into a file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(log_writer());
    match cli.log_format {
        LogFormat::Human => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    let result = match cli.command {
        Command::Run { config } => commands::pipeline::run(&config),
        Command::Validate { config, test } => {
            let valid = commands::pipeline::validate(&config);
            if test {
                return exit(
                    valid.and_then(|()| commands::test::run(commands::test::TestArgs::all(config))),
                );
            }
            valid
        }
        Command::Test(args) => return exit(commands::test::run(args)),
        Command::Graph { config, format } => commands::pipeline::graph(&config, format),
        #[cfg(feature = "object-store")]
        Command::Replay(args) => commands::replay::run(args),
        #[cfg(feature = "fleet")]
        Command::Agent(args) => commands::agent::run(args),
        #[cfg(feature = "cross-compile")]
        Command::Fleet(command) => commands::fleet::run(command),
        #[cfg(all(feature = "jobs", feature = "fleet"))]
        Command::Jobs(command) => commands::jobs::run(command),
        #[cfg(all(
            feature = "fleet",
            any(feature = "cross-compile", feature = "jobs", feature = "top")
        ))]
        Command::Tap(args) => commands::tap::run(args),
        #[cfg(feature = "top")]
        Command::Top(args) => commands::top::run(args),
        Command::Buffer(command) => return exit(commands::buffer::run(command)),
        Command::Plugin(command) => commands::plugin::run(command),
        #[cfg(feature = "inference")]
        Command::Model(command) => commands::model::run(command),
    };
    exit(result.map(|()| std::process::ExitCode::SUCCESS))
}

/// The exit status, with the error on stderr.
fn exit(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        std::process::ExitCode::FAILURE
    })
}

#[cfg(feature = "object-store")]
fn log_writer() -> commands::replay::LogWriter {
    commands::replay::LogWriter
}

#[cfg(not(feature = "object-store"))]
fn log_writer() -> fn() -> std::io::Stderr {
    std::io::stderr
}
