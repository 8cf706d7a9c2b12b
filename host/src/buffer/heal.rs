//! Finding and healing damage in the buffer's segment files.
//!
//! Two kinds of unreadable bytes are told apart. A **torn tail** of the last segment
//! is a crash in the middle of an append: that entry was never acknowledged to anyone,
//! so it is cut and nothing is lost. **Corruption** is a bad record (flipped bytes: a
//! CRC mismatch, an impossible length) with readable records after it, or a bad tail
//! in a segment that is not the last: entries that were acknowledged are gone. Healing
//! moves the bad bytes to `quarantine/` (named after the segment and the offset), keeps
//! the readable entries after them in a segment file of their own, and counts the
//! entries lost.
//!
//! Entries are numbered by position, and a number is never given to another entry. How
//! many entries the bad bytes held is known when the bad record's own length leads to
//! the next readable one (one entry), or from where the segment ends: the next segment's
//! first number (a segment dropped under `drop_oldest` right after it would be counted
//! here too), or while the buffer runs, the count it keeps. Otherwise (bad bytes in the
//! middle of the last segment, found on opening) the count is a lower bound, and the
//! entries after them are numbered so that none counts as acknowledged that was not.
//! One over-count and one under-count remain: an entry in flight when its bytes go bad
//! counts as lost even if its PUBACK then comes, and a crash between a heal's cut and the
//! cursor's write leaves that loss uncounted (its bytes are in quarantine all the same).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cursor::Cursor;
use super::error::BufferError;
use super::segment::{Bad, Run, Scan, Segment, scan};

/// The folder that damaged bytes are moved to.
pub const QUARANTINE: &str = "quarantine";
/// The file every process using the buffer holds an advisory lock on.
pub const LOCK: &str = "lock";
/// How a split-off segment is named until the file it came from is cut.
const PART: &str = ".part";

/// Entries delivered, against which losses are counted.
pub struct Delivered<'a> {
    pub acked: u64,
    /// Acknowledged past `acked`.
    pub ahead: &'a BTreeSet<u64>,
}

impl Delivered<'_> {
    /// How many of the entries `from..to` are not delivered.
    pub fn missing(&self, from: u64, to: u64) -> u64 {
        let from = from.max(self.acked);
        if from >= to {
            return 0;
        }
        to - from - self.ahead.range(from..to).count() as u64
    }
}

/// Entries that bad bytes held.
#[derive(Debug)]
pub struct Loss {
    pub bad: Bad,
    /// The number of the first of them.
    pub first: u64,
    /// How many numbers they take.
    pub entries: u64,
    /// False when `entries` is only a lower bound.
    pub exact: bool,
    /// Those of them not delivered: what counts as lost.
    pub undelivered: u64,
}

/// One segment file: what it holds and what healing it does.
#[derive(Debug)]
pub struct Diagnosis {
    pub file: String,
    pub first: u64,
    /// The file's length.
    pub bytes: u64,
    pub scan: Scan,
    /// The number of each run's first entry (`scan.runs` in order).
    pub run_firsts: Vec<u64>,
    pub losses: Vec<Loss>,
    /// A torn last append, cut without loss.
    pub torn: Option<Bad>,
}

impl Diagnosis {
    /// Entries that were acknowledged are damaged.
    pub fn is_corrupt(&self) -> bool {
        !self.losses.is_empty()
    }

    pub fn needs_healing(&self) -> bool {
        self.is_corrupt() || self.torn.is_some()
    }

    /// Entries lost that were not delivered.
    pub fn lost(&self) -> u64 {
        self.losses.iter().map(|loss| loss.undelivered).sum()
    }

    /// The segments healing leaves: the file cut after its first run, and each later
    /// run that holds entries. `(first number, run)`.
    pub fn pieces(&self) -> impl Iterator<Item = (u64, &Run)> {
        self.run_firsts
            .iter()
            .copied()
            .zip(&self.scan.runs)
            .enumerate()
            .filter(|(index, (_, run))| *index == 0 || !run.entries.is_empty())
            .map(|(_, piece)| piece)
    }
}

/// Read a segment file's `data`, numbering what it holds from `first`. `end` is the
/// number after its last entry when known (the next segment's first, or the count a
/// running buffer keeps); without it, a bad tail is a torn append.
pub fn diagnose(
    file: String,
    first: u64,
    data: &[u8],
    end: Option<u64>,
    delivered: &Delivered<'_>,
) -> Diagnosis {
    let scan = scan(data);
    let mut at = first;
    let mut run_firsts = Vec::with_capacity(scan.runs.len());
    let mut losses = Vec::new();
    for (index, run) in scan.runs.iter().enumerate() {
        if let Some(bad) = index.checked_sub(1).map(|before| scan.bad[before]) {
            let is_last_damage = index == scan.bad.len() && scan.tail.is_none();
            let counted_from_end = end
                .filter(|_| is_last_damage)
                .and_then(|end| end.checked_sub(at + run.entries.len() as u64));
            let (entries, exact) = match counted_from_end {
                _ if bad.single => (1, true),
                Some(entries) => (entries, true),
                // Unknown: at least one. Numbering the entries after it from no lower
                // than `acked` keeps every one of them undelivered.
                None => (delivered.acked.max(at + 1) - at, false),
            };
            losses.push(Loss {
                bad,
                first: at,
                entries,
                exact,
                undelivered: delivered.missing(at, at + entries),
            });
            at += entries;
        }
        run_firsts.push(at);
        at += run.entries.len() as u64;
    }
    let mut torn = None;
    if let Some(tail) = scan.tail {
        match end {
            Some(end) if end > at => losses.push(Loss {
                bad: tail,
                first: at,
                entries: end - at,
                exact: true,
                undelivered: delivered.missing(at, end),
            }),
            _ => torn = Some(tail),
        }
    }
    Diagnosis {
        file,
        first,
        bytes: data.len() as u64,
        scan,
        run_firsts,
        losses,
        torn,
    }
}

/// Put `diagnosis` of the file in `dir` holding `data` into effect: each loss's bytes
/// go to `quarantine/`, each later piece to a file of its own, and the file is cut
/// after its first run. The cut is the commit: pieces are written as `.part` files
/// first, which [`settle_parts`] keeps or removes after a crash. The caller counts the
/// loss once this returns.
pub fn heal_segment(dir: &Path, diagnosis: &Diagnosis, data: &[u8]) -> std::io::Result<()> {
    let path = dir.join(&diagnosis.file);
    for loss in &diagnosis.losses {
        let bytes = &data[loss.bad.at as usize..loss.bad.end as usize];
        let moved_to = quarantine(dir, &diagnosis.file, loss.bad.at, bytes)?;
        tracing::warn!(
            segment = %path.display(),
            offset = loss.bad.at,
            bad_bytes = bytes.len(),
            entries_lost = loss.entries,
            exactly = loss.exact,
            from_seq = loss.first,
            undelivered = loss.undelivered,
            "buffer segment corrupt ({}): the entries in its bad bytes are lost; the bytes \
             are in {}",
            loss.bad.flaw,
            moved_to.display()
        );
    }
    if let Some(torn) = diagnosis.torn {
        tracing::warn!(segment = %path.display(), offset = torn.at, "buffer segment had a torn last append (a crash while writing, never acknowledged); cut it");
    }
    let mut parts = Vec::new();
    for (first, run) in diagnosis.pieces().skip(1) {
        let part = dir.join(format!("{}{PART}", Segment::file_name(first)));
        let mut file = File::create(&part)?;
        file.write_all(&data[run.offset as usize..(run.offset + run.bytes) as usize])?;
        file.sync_all()?;
        parts.push(part);
    }
    let original = File::options().write(true).open(&path)?;
    original.set_len(diagnosis.scan.runs[0].bytes)?;
    original.sync_all()?;
    for part in parts {
        std::fs::rename(&part, part.with_extension(""))?;
    }
    File::open(dir)?.sync_all()
}

/// Write `bytes` cut from `file` at `offset` into the quarantine folder, under a name
/// that says where they came from; the same bytes twice (a heal redone) make one file.
fn quarantine(dir: &Path, file: &str, offset: u64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let folder = dir.join(QUARANTINE);
    std::fs::create_dir_all(&folder)?;
    let name = format!("{file}.at-{offset}");
    let mut path = folder.join(&name);
    let mut again = 1;
    while let Ok(existing) = std::fs::read(&path) {
        if existing == bytes {
            return Ok(path);
        }
        again += 1;
        path = folder.join(format!("{name}.{again}"));
    }
    let mut out = File::create(&path)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    File::open(&folder)?.sync_all()?;
    Ok(path)
}

/// After a crash in [`heal_segment`]: a `.part` file is kept once the segment before it was
/// cut (it holds no bad record any more), and removed otherwise (the heal is redone).
fn settle_parts(dir: &Path) -> std::io::Result<()> {
    let mut parts: Vec<u64> = names(dir)?
        .iter()
        .filter_map(|name| Segment::first_of(name.strip_suffix(PART)?))
        .collect();
    parts.sort_unstable();
    for first in parts {
        let part = dir.join(format!("{}{PART}", Segment::file_name(first)));
        let origin = segment_firsts(dir)?
            .into_iter()
            .filter(|origin| *origin < first)
            .max();
        let cut = match origin {
            Some(origin) => scan(&std::fs::read(dir.join(Segment::file_name(origin)))?)
                .bad
                .is_empty(),
            None => true,
        };
        if cut {
            std::fs::rename(&part, part.with_extension(""))?;
        } else {
            std::fs::remove_file(&part)?;
        }
    }
    Ok(())
}

fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect())
}

/// The first numbers of the segment files in `dir`, in order.
pub fn segment_firsts(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut firsts: Vec<u64> = names(dir)?
        .iter()
        .filter_map(|name| Segment::first_of(name))
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// Every segment of a buffer, diagnosed, with its cursor.
#[derive(Debug)]
pub struct Survey {
    pub cursor: Cursor,
    pub segments: Vec<Diagnosis>,
}

impl Survey {
    /// No entry that was acknowledged is damaged (a torn last append is no damage).
    pub fn is_healthy(&self) -> bool {
        !self.segments.iter().any(Diagnosis::is_corrupt)
    }

    /// Diagnose every segment of `dir`, changing nothing.
    pub fn check(dir: &Path) -> Result<Survey, BufferError> {
        Survey::of(dir, false)
    }

    /// Diagnose every segment of `dir`, heal each one that needs it and add what was
    /// lost to the cursor. The caller holds the buffer's lock.
    pub fn heal(dir: &Path) -> Result<Survey, BufferError> {
        Survey::of(dir, true)
    }

    fn of(dir: &Path, heal_too: bool) -> Result<Survey, BufferError> {
        let io = BufferError::io(dir);
        if heal_too {
            settle_parts(dir).map_err(&io)?;
        }
        let mut cursor = Cursor::read(dir);
        let firsts = segment_firsts(dir).map_err(&io)?;
        let mut segments = Vec::with_capacity(firsts.len());
        let nothing_ahead = BTreeSet::new();
        let delivered = Delivered {
            acked: cursor.acked,
            ahead: &nothing_ahead,
        };
        for (index, &first) in firsts.iter().enumerate() {
            let file = Segment::file_name(first);
            let data = std::fs::read(dir.join(&file)).map_err(&io)?;
            let end = firsts.get(index + 1).copied();
            let diagnosis = diagnose(file, first, &data, end, &delivered);
            if heal_too && diagnosis.needs_healing() {
                heal_segment(dir, &diagnosis, &data).map_err(&io)?;
                cursor.lost += diagnosis.lost();
            }
            segments.push(diagnosis);
        }
        if heal_too && segments.iter().any(Diagnosis::is_corrupt) {
            cursor.write(dir).map_err(&io)?;
        }
        Ok(Survey { cursor, segments })
    }
}

/// Whether `dir` looks like a buffer: it holds a segment, a cursor or a lock file.
pub fn is_buffer(dir: &Path) -> bool {
    names(dir).is_ok_and(|names| {
        names
            .iter()
            .any(|name| name == Cursor::FILE || name == LOCK || Segment::first_of(name).is_some())
    })
}

/// Hold the advisory lock on `dir`'s lock file, waiting up to `wait` for another holder
/// to let go: a pipeline being replaced may still be closing its buffer.
pub fn lock(dir: &Path, wait: Duration) -> Result<File, BufferError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
        .map_err(BufferError::io(dir))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BufferError::InUse {
                    dir: dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(BufferError::Io {
                    dir: dir.to_owned(),
                    source,
                });
            }
        }
    }
}
