//! A durable, bounded store-and-forward queue on local disk: what a device keeps while
//! its uplink is down, across broker outages, network loss and reboots.
//!
//! Entries are appended to segment files (fsynced before `push` returns) and read back
//! in order by the forwarder. Concurrent pushes are committed as a group ([`group`]).
//! An entry is acknowledged only when the broker has taken it (PUBACK); a segment is deleted once every entry in it is acknowledged, so disk
//! use returns to near zero after delivery. The first unacknowledged sequence number is
//! kept in `cursor` (with the count of dropped entries), so that a restart resends only
//! what was not taken (at least once: what was taken after the last cursor write comes
//! again).
//!
//! Damage on disk is healed, never skipped silently ([`heal`]): a torn last append (a
//! crash) is cut; corrupt records are moved to `quarantine/` and the entries lost are
//! counted, while the entries after them are still delivered. `sluice buffer check` and
//! `repair` do the same from the command line; a running buffer holds an advisory lock
//! on its `lock` file so that `repair` never races it.
//!
//! The bytes on disk are bounded by `max_bytes`. When an append would pass it, the
//! policy decides: `block` makes the writer wait for deliveries to free space (the
//! collectors upstream pause); `drop_oldest` deletes the oldest segment that the
//! forwarder has not started sending, counting every entry in it as dropped (entries
//! in flight are never dropped: they are delivered or resent, so the count is exact).

mod cursor;
mod error;
mod group;
mod heal;
mod segment;
#[cfg(test)]
pub(crate) mod small_disk;

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;

use self::cursor::Cursor;
pub use self::error::BufferError;
use self::group::Group;
use self::heal::Delivered;
pub use self::heal::{Diagnosis, QUARANTINE, Survey};
pub use self::segment::Entry;
use self::segment::Segment;

/// How long opening waits for another holder of the buffer's lock: a pipeline being
/// replaced may still be closing it.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What happens when the buffer is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The writer waits until deliveries free space: nothing is lost, collectors pause.
    #[default]
    Block,
    /// The oldest entries make room, and are counted.
    DropOldest,
}

/// How much the buffer holds, for heartbeats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Entries not yet acknowledged.
    pub entries: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Entries dropped to make room, ever (kept across restarts).
    pub dropped: u64,
    /// Entries lost to corruption on disk, ever (kept across restarts).
    pub lost: u64,
}

pub struct Buffer {
    inner: Mutex<Inner>,
    /// Pushes waiting for the next group commit.
    group: Mutex<Group>,
    /// Signalled when entries are appended.
    pub appended: Notify,
    /// Signalled when space is freed.
    freed: Notify,
    /// Held while the buffer is open, so that `sluice buffer repair` never races it.
    _lock: File,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    when_full: WhenFull,
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// Every entry before this one is acknowledged (or dropped).
    acked: u64,
    /// Acknowledged out of order, past `acked`.
    acked_ahead: BTreeSet<u64>,
    /// Entries before this one have been handed to the forwarder on its current
    /// connection (in flight or delivered).
    sent_upto: u64,
    dropped: u64,
    lost: u64,
    /// The parsed entries of the segment last read.
    read_cache: Option<(u64, Arc<Vec<Entry>>)>,
    /// Appends made (one sync each), for tests of group commit.
    #[cfg(test)]
    syncs: usize,
}

impl Buffer {
    /// Open (or create) the buffer in `dir`, recovering what a crash left.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        when_full: WhenFull,
    ) -> Result<Arc<Buffer>, BufferError> {
        let io = BufferError::io(dir);
        std::fs::create_dir_all(dir).map_err(&io)?;
        let lock = heal::lock(dir, LOCK_WAIT)?;
        let survey = Survey::heal(dir)?;
        let Cursor {
            acked,
            dropped,
            lost,
        } = survey.cursor;
        let mut segments = VecDeque::new();
        for diagnosis in &survey.segments {
            for (first, run) in diagnosis.pieces() {
                let path = dir.join(Segment::file_name(first));
                let entries = run.entries.len() as u64;
                if first + entries <= acked {
                    std::fs::remove_file(&path).map_err(&io)?;
                } else {
                    segments.push_back(Segment::existing(path, first, entries, run.bytes));
                }
            }
        }
        // Without a cursor (lost with a crash), delivery resumes at the oldest segment.
        let acked = segments
            .front()
            .map_or(acked, |oldest| acked.max(oldest.first_seq));
        let next_seq = segments
            .back()
            .map_or(acked, |last| last.first_seq + last.entries)
            .max(acked);
        let buffer = Arc::new(Buffer {
            inner: Mutex::new(Inner {
                dir: dir.to_owned(),
                max_bytes,
                segment_bytes: segment_bytes.clamp(1, max_bytes.max(1)),
                when_full,
                segments,
                next_seq,
                acked,
                acked_ahead: BTreeSet::new(),
                sent_upto: acked,
                dropped,
                lost,
                read_cache: None,
                #[cfg(test)]
                syncs: 0,
            }),
            group: Mutex::new(Group::default()),
            appended: Notify::new(),
            freed: Notify::new(),
            _lock: lock,
        });
        // Gaps that dropped segments left count as delivered.
        buffer.inner.lock().unwrap().advance();
        Ok(buffer)
    }

    /// Up to `max` entries from sequence `from` on (or the first unacknowledged one, if
    /// later), with their sequence numbers, in order.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, Entry)>, BufferError> {
        self.inner.lock().unwrap().read(from, max)
    }

    /// The broker has taken entry `seq`.
    pub fn ack(&self, seq: u64) -> Result<(), BufferError> {
        let freed = self.inner.lock().unwrap().ack(seq)?;
        if freed {
            self.freed.notify_waiters();
        }
        Ok(())
    }

    /// Where a new connection starts sending: the first entry not yet acknowledged.
    /// Entries after it count as not sent again.
    pub fn restart_sending(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        inner.rewind();
        inner.acked
    }

    /// The first entry not yet acknowledged.
    pub fn first_unacked(&self) -> u64 {
        self.inner.lock().unwrap().acked
    }

    /// The bound on the bytes on disk.
    pub fn max_bytes(&self) -> u64 {
        self.inner.lock().unwrap().max_bytes
    }

    pub fn depth(&self) -> Depth {
        let inner = self.inner.lock().unwrap();
        Depth {
            entries: inner.undelivered(),
            bytes: inner.bytes(),
            dropped: inner.dropped,
            lost: inner.lost,
        }
    }
}

/// `sluice buffer check`: every segment of the buffer in `dir`, diagnosed; nothing
/// changes.
pub fn check(dir: &Path) -> Result<Survey, BufferError> {
    if !heal::is_buffer(dir) {
        return Err(BufferError::NotABuffer {
            dir: dir.to_owned(),
        });
    }
    Survey::check(dir)
}

/// `sluice buffer repair`: heal what [`check`] finds, as opening does, and count what
/// was lost. Refused while a running buffer holds the lock.
pub fn repair(dir: &Path) -> Result<Survey, BufferError> {
    if !heal::is_buffer(dir) {
        return Err(BufferError::NotABuffer {
            dir: dir.to_owned(),
        });
    }
    let _lock = heal::lock(dir, Duration::ZERO)?;
    Survey::heal(dir)
}

impl Inner {
    fn io(&self, source: std::io::Error) -> BufferError {
        BufferError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Entries held and not yet acknowledged (the numbers of gaps are none).
    fn undelivered(&self) -> u64 {
        let delivered = Delivered {
            acked: self.acked,
            ahead: &self.acked_ahead,
        };
        self.segments
            .iter()
            .map(|s| delivered.missing(s.first_seq, s.first_seq + s.entries))
            .sum()
    }

    /// Whether `size` more bytes fit (making room under `drop_oldest`).
    fn make_room(&mut self, size: u64) -> Result<bool, BufferError> {
        while self.bytes() + size > self.max_bytes {
            let made_room = match self.when_full {
                WhenFull::Block => false,
                WhenFull::DropOldest => self.drop_oldest()?,
            };
            if !made_room {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Append `entries`, for which [`Self::make_room`] has made room, and sync them.
    fn append_synced(&mut self, entries: &[Entry]) -> Result<(), BufferError> {
        #[cfg(test)]
        {
            self.syncs += 1;
        }
        let roll = self
            .segments
            .back()
            .is_none_or(|last| last.bytes >= self.segment_bytes);
        if roll {
            if let Some(last) = self.segments.back_mut() {
                last.seal();
            }
            let segment = Segment::create(&self.dir, self.next_seq).map_err(|e| self.io(e))?;
            self.segments.push_back(segment);
        }
        let last = self
            .segments
            .back_mut()
            .expect("a segment was just ensured");
        let segment_first = last.first_seq;
        last.append(entries).map_err(|source| BufferError::Io {
            dir: self.dir.clone(),
            source,
        })?;
        // A reader that keeps up (the broker's subscribers, a connected uplink) then
        // takes what was just appended from memory instead of reading the growing
        // segment again.
        if let Some((first, cached)) = &mut self.read_cache
            && *first == segment_first
            && *first + cached.len() as u64 == self.next_seq
        {
            Arc::make_mut(cached).extend_from_slice(entries);
        }
        self.next_seq += entries.len() as u64;
        Ok(())
    }

    /// Delete the oldest segment the forwarder has not started on (not the one taking
    /// appends, unless it is the only one), counting its entries as dropped. `Ok(false)`
    /// when every older entry is in flight: the writer then waits for their PUBACKs.
    fn drop_oldest(&mut self) -> Result<bool, BufferError> {
        let last = self.segments.len().saturating_sub(1);
        let Some(index) = self
            .segments
            .iter()
            .enumerate()
            .position(|(i, s)| s.first_seq >= self.sent_upto && (i < last || last == 0))
        else {
            return Ok(false);
        };
        let victim = self
            .segments
            .remove(index)
            .expect("the index was just found");
        let end = victim.first_seq + victim.entries;
        // Entries acknowledged out of order on an earlier connection were delivered.
        let delivered: Vec<u64> = self
            .acked_ahead
            .range(victim.first_seq..end)
            .copied()
            .collect();
        delivered.iter().for_each(|seq| {
            self.acked_ahead.remove(seq);
        });
        let dropped = victim.entries - delivered.len() as u64;
        self.dropped += dropped;
        tracing::warn!(dir = %self.dir.display(), dropped, "buffer full: dropped its oldest entries");
        std::fs::remove_file(&victim.path).map_err(|e| self.io(e))?;
        if self.segments.is_empty() {
            self.acked = self.acked.max(end);
        }
        self.advance();
        if self
            .read_cache
            .as_ref()
            .is_some_and(|(first, _)| *first == victim.first_seq)
        {
            self.read_cache = None;
        }
        self.write_cursor()?;
        Ok(true)
    }

    /// The forwarder starts over (a new connection) at the first unacknowledged entry.
    fn rewind(&mut self) {
        self.sent_upto = self.acked;
    }

    fn read(&mut self, from: u64, max: usize) -> Result<Vec<(u64, Entry)>, BufferError> {
        let mut seq = from.max(self.acked);
        let mut out = Vec::new();
        while out.len() < max && seq < self.next_seq {
            // A dropped segment, or lost entries, leave a gap: go on at the next one.
            let Some(index) = self
                .segments
                .iter()
                .position(|s| seq < s.first_seq + s.entries)
            else {
                break;
            };
            let first = self.segments[index].first_seq;
            seq = seq.max(first);
            // The open segment grows: read it again when the cache is short.
            let cached = match &self.read_cache {
                Some((cached_first, entries))
                    if *cached_first == first && (seq - first) < entries.len() as u64 =>
                {
                    entries.clone()
                }
                _ => match self.read_segment(index)? {
                    Some(entries) => entries,
                    // It was damaged and is healed: look again.
                    None => continue,
                },
            };
            let mut index = (seq - first) as usize;
            while out.len() < max && index < cached.len() {
                out.push((first + index as u64, cached[index].clone()));
                index += 1;
            }
            seq = first + index as u64;
        }
        if let Some((last, _)) = out.last() {
            self.sent_upto = self.sent_upto.max(last + 1);
        }
        Ok(out)
    }

    /// The entries of segment `index` (no more than it counts: what a failed append
    /// left past them has no number), or `None` when they were damaged since they were
    /// written and the segment has just been healed.
    fn read_segment(&mut self, index: usize) -> Result<Option<Arc<Vec<Entry>>>, BufferError> {
        let segment = &self.segments[index];
        let (first, end) = (segment.first_seq, segment.first_seq + segment.entries);
        let data = segment.contents().map_err(|e| self.io(e))?;
        let delivered = Delivered {
            acked: self.acked,
            ahead: &self.acked_ahead,
        };
        let diagnosis = heal::diagnose(
            Segment::file_name(first),
            first,
            &data,
            Some(end),
            &delivered,
        );
        if diagnosis.needs_healing() {
            heal::heal_segment(&self.dir, &diagnosis, &data).map_err(|e| self.io(e))?;
            let pieces = diagnosis.pieces().map(|(first, run)| {
                let path = self.dir.join(Segment::file_name(first));
                Segment::existing(path, first, run.entries.len() as u64, run.bytes)
            });
            let after: Vec<Segment> = self.segments.drain(index..).skip(1).collect();
            self.segments.extend(pieces);
            self.segments.extend(after);
            self.count_lost(diagnosis.lost())?;
            return Ok(None);
        }
        let held = first + diagnosis.scan.entries();
        if held < end {
            // Cut short at a record boundary (by hand, or by the file system).
            let lost = delivered.missing(held, end);
            tracing::warn!(segment = %self.segments[index].path.display(), "buffer segment cut short: {} entries from sequence {held} lost, {lost} of them undelivered", end - held);
            let segment = &mut self.segments[index];
            segment.entries = held - first;
            segment.bytes = data.len() as u64;
            self.count_lost(lost)?;
            return Ok(None);
        }
        let entries = diagnosis
            .scan
            .runs
            .into_iter()
            .next()
            .unwrap_or_default()
            .entries;
        let entries = Arc::new(entries);
        self.read_cache = Some((first, entries.clone()));
        Ok(Some(entries))
    }

    /// Count entries lost to damage found while running, and step over their numbers.
    fn count_lost(&mut self, lost: u64) -> Result<(), BufferError> {
        self.lost += lost;
        self.read_cache = None;
        self.advance();
        self.write_cursor()
    }

    /// Whether a segment holds entry `seq`.
    fn holds(&self, seq: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.first_seq <= seq && seq < s.first_seq + s.entries)
    }

    /// Move `acked` over acknowledged entries and over gaps that dropped segments left.
    fn advance(&mut self) {
        loop {
            if self.acked_ahead.remove(&self.acked) {
                self.acked += 1;
            } else if self.acked < self.next_seq && !self.holds(self.acked) {
                self.acked = self
                    .segments
                    .iter()
                    .map(|s| s.first_seq)
                    .find(|first| *first > self.acked)
                    .unwrap_or(self.next_seq);
            } else {
                break;
            }
        }
    }

    /// Record an acknowledgement; true when a segment was deleted.
    fn ack(&mut self, seq: u64) -> Result<bool, BufferError> {
        if seq < self.acked || seq >= self.next_seq {
            return Ok(false);
        }
        self.acked_ahead.insert(seq);
        let before = self.acked;
        self.advance();
        if self.acked == before {
            return Ok(false);
        }
        let mut freed = false;
        while let Some(oldest) = self.segments.front() {
            let end = oldest.first_seq + oldest.entries;
            // The open segment goes too once everything in it is delivered: the next
            // append starts a new one.
            if end > self.acked {
                break;
            }
            let oldest = self.segments.pop_front().expect("front exists");
            std::fs::remove_file(&oldest.path).map_err(|e| self.io(e))?;
            if self
                .read_cache
                .as_ref()
                .is_some_and(|(first, _)| *first == oldest.first_seq)
            {
                self.read_cache = None;
            }
            freed = true;
        }
        self.write_cursor()?;
        Ok(freed)
    }

    /// Persist where delivery stands ([`Cursor`]).
    fn write_cursor(&self) -> Result<(), BufferError> {
        let cursor = Cursor {
            acked: self.acked,
            dropped: self.dropped,
            lost: self.lost,
        };
        cursor.write(&self.dir).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests;
