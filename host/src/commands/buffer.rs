//! `sluice buffer check DIR` and `sluice buffer repair DIR`: an uplink buffer's
//! segments, the damage in them and what it cost, and healing it with the agent stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sluice::buffer::{Diagnosis, QUARANTINE, Survey};

#[derive(Subcommand)]
pub enum BufferCommand {
    /// Report each segment's damage, and the cursor; change nothing.
    ///
    /// Prints each segment (first sequence number, entries, bytes, corrupt records with
    /// their offsets and the entries lost, a torn tail), totals and the cursor's acked,
    /// dropped and lost counts. Exit status 0: healthy (a torn last append is no
    /// damage); 1: corrupt records found (`repair` heals them), or the check failed.
    Check {
        /// The buffer's directory (the uplink's `buffer.path` inside `data_dir`).
        dir: PathBuf,
    },
    /// Heal what `check` finds, with the agent stopped.
    ///
    /// Moves corrupt records to DIR/quarantine/, keeps the entries after them, counts
    /// the entries lost in the cursor and cuts a torn tail, as opening the buffer does.
    /// Idempotent. Refused while a running sluice holds the buffer's lock.
    Repair { dir: PathBuf },
}

pub fn run(command: BufferCommand) -> anyhow::Result<ExitCode> {
    match command {
        BufferCommand::Check { dir } => {
            let survey = sluice::buffer::check(&dir).context("cannot check the buffer")?;
            print(&dir, &survey, "check")?;
            if survey.is_healthy() {
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "corrupt: run `sluice buffer repair {}` with the agent stopped",
                    dir.display()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        BufferCommand::Repair { dir } => {
            let survey = sluice::buffer::repair(&dir).context("cannot repair the buffer")?;
            print(&dir, &survey, "repair")?;
            let healed = survey.segments.iter().filter(|s| s.needs_healing()).count();
            if healed == 0 {
                println!("nothing to repair");
            } else {
                println!(
                    "repaired {healed} segment(s); bad bytes are in {}",
                    dir.join(QUARANTINE).display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The survey as found (`repair` prints what it healed, then the cursor it recounted).
fn print(dir: &Path, survey: &Survey, what: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "buffer {} ({what})", dir.display())?;
    writeln!(
        out,
        "{:<26} {:>12} {:>9} {:>11}",
        "segment", "first seq", "entries", "bytes"
    )?;
    for segment in &survey.segments {
        writeln!(
            out,
            "{:<26} {:>12} {:>9} {:>11}",
            segment.file,
            segment.first,
            segment.scan.entries(),
            segment.bytes
        )?;
        damage(&mut out, segment)?;
    }
    let total: u64 = survey.segments.iter().map(|s| s.scan.entries()).sum();
    let bytes: u64 = survey.segments.iter().map(|s| s.bytes).sum();
    let corrupt: usize = survey.segments.iter().map(|s| s.losses.len()).sum();
    let lost: u64 = survey.segments.iter().map(Diagnosis::lost).sum();
    writeln!(
        out,
        "total: {} segments, {}, {bytes} bytes, {corrupt} corrupt, {lost} undelivered \
         lost in them",
        survey.segments.len(),
        entries(total)
    )?;
    let cursor = survey.cursor;
    writeln!(
        out,
        "cursor: acked {}, dropped {}, lost {}",
        cursor.acked, cursor.dropped, cursor.lost
    )
}

fn damage(out: &mut impl Write, segment: &Diagnosis) -> std::io::Result<()> {
    for loss in &segment.losses {
        let count = if loss.exact { "" } else { "at least " };
        writeln!(
            out,
            "  corrupt at offset {} ({}, {} bytes): {count}{} from sequence {} lost, {} \
             undelivered",
            loss.bad.at,
            loss.bad.flaw,
            loss.bad.end - loss.bad.at,
            entries(loss.entries),
            loss.first,
            loss.undelivered
        )?;
    }
    if let Some(torn) = segment.torn {
        writeln!(
            out,
            "  torn tail at offset {} ({} bytes): a crash while appending, nothing lost",
            torn.at,
            torn.end - torn.at
        )?;
    }
    Ok(())
}

fn entries(count: u64) -> String {
    match count {
        1 => "1 entry".to_owned(),
        _ => format!("{count} entries"),
    }
}
