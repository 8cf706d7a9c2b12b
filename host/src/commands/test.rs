//! `sluice test FILE [--junit OUT.xml] [--filter NAME]`: a pipeline's tests, run in
//! process with its real plugins and models (docs/testing.md). Exit status 0: every
//! test passed; 1: one failed (or none was found); 2: the tests or the config are
//! invalid, and nothing ran.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sluice::testing::{Suite, SuiteError, report};

#[derive(clap::Args)]
pub struct TestArgs {
    /// The pipeline config (`X.toml`) or the tests beside it (`X.test.toml`): the
    /// `[[tests]]` of both run.
    pub file: PathBuf,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "OUT.xml")]
    pub junit: Option<PathBuf>,
    /// Run only the tests whose name contains this.
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
}

impl TestArgs {
    /// Every test of `file`, no report file.
    pub fn all(file: PathBuf) -> TestArgs {
        TestArgs {
            file,
            junit: None,
            filter: None,
        }
    }
}

/// What an invalid test file or config exits with.
const INVALID: u8 = 2;

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut suite = match Suite::load(&args.file) {
        Ok(suite) => suite,
        Err(error) if error.is_invalid() => {
            eprintln!("{error}");
            eprintln!("error: the tests of {} cannot run", args.file.display());
            return Ok(ExitCode::from(INVALID));
        }
        Err(error @ SuiteError::Spec(_)) => return Err(error.into()),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("the pipeline of {} cannot start", args.file.display()));
        }
    };
    let filter = args.filter.as_deref();
    let selected = suite.selected(filter);
    if selected == 0 {
        anyhow::bail!("no test's name contains `{}`", filter.unwrap_or_default());
    }
    let from: Vec<String> = suite
        .files()
        .iter()
        .map(|file| file.display().to_string())
        .collect();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", report::header(selected, &from.join(" and ")))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let results = runtime.block_on(suite.run(filter, |result| {
        let _ = writeln!(std::io::stdout(), "{}", result.line());
    }));
    write!(stdout, "{}", report::summary(&results))?;
    if let Some(path) = &args.junit {
        let xml = report::junit(&args.file.display().to_string(), &results);
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let passed = results.iter().all(|result| result.passed());
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
