//! One segment file of the buffer: entries appended as `[u32 length][u32 crc32][body]`
//! (little-endian), the body being `[u16 topic length][topic][payload]`. Entries are
//! numbered by position: a segment's name is the sequence number of its first entry.
//!
//! [`scan`] reads a file as runs of whole entries separated by bad records (flipped
//! bytes), and a tail that holds no whole entry (a torn last append); `heal` decides what
//! each means.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// One buffered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub topic: String,
    pub payload: Bytes,
}

const HEADER: usize = 8;

impl Entry {
    /// The longest topic an entry holds (its length is 16 bits on disk; MQTT's limit too).
    pub const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

    /// Bytes this entry takes on disk.
    pub fn stored_len(&self) -> u64 {
        (HEADER + 2 + self.topic.len() + self.payload.len()) as u64
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(2 + self.topic.len() + self.payload.len());
        body.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        body.extend_from_slice(self.topic.as_bytes());
        body.extend_from_slice(&self.payload);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

/// A segment: its file, the sequence number of its first entry, what it holds.
#[derive(Debug)]
pub struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    file: Option<File>,
    /// What the next append meets, set by a test.
    #[cfg(test)]
    pub fault: Option<Fault>,
}

impl Segment {
    pub fn file_name(first_seq: u64) -> String {
        format!("{first_seq:020}.seg")
    }

    /// The first sequence number a segment's file name gives, if it is one.
    pub fn first_of(file_name: &str) -> Option<u64> {
        file_name.strip_suffix(".seg")?.parse().ok()
    }

    pub fn create(dir: &Path, first_seq: u64) -> std::io::Result<Segment> {
        let path = dir.join(Self::file_name(first_seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new name must survive a crash too: a segment whose entry in the directory
        // is lost takes its entries with it.
        File::open(dir)?.sync_all()?;
        let mut segment = Segment::existing(path, first_seq, 0, 0);
        segment.file = Some(file);
        Ok(segment)
    }

    /// A segment file already checked: its first `bytes` hold `entries` whole entries.
    pub fn existing(path: PathBuf, first_seq: u64, entries: u64, bytes: u64) -> Segment {
        Segment {
            first_seq,
            path,
            entries,
            bytes,
            file: None,
            #[cfg(test)]
            fault: None,
        }
    }

    /// Append `entries` and make them durable. A failed append (a full disk, an I/O
    /// error on write or sync) leaves nothing behind: the file is cut back to what it
    /// held, now or before the next append, so that no torn or unsynced entry is ever
    /// read with a later entry's sequence number.
    pub fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        let mut out = Vec::new();
        entries.iter().for_each(|entry| entry.encode(&mut out));
        let file = match &mut self.file {
            Some(file) => file,
            none => none.insert(OpenOptions::new().append(true).open(&self.path)?),
        };
        if file.metadata()?.len() != self.bytes {
            file.set_len(self.bytes)?;
        }
        let mut disk = Disk {
            file,
            #[cfg(test)]
            fault: self.fault.take(),
        };
        if let Err(error) = disk.write_synced(&out) {
            let _ = disk.cut(self.bytes);
            return Err(error);
        }
        self.entries += entries.len() as u64;
        self.bytes += out.len() as u64;
        Ok(())
    }

    /// No more appends: close the file handle.
    pub fn seal(&mut self) {
        self.file = None;
    }

    /// The bytes this segment holds: what a failed append left past them is not its own.
    pub fn contents(&self) -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        File::open(&self.path)?
            .take(self.bytes)
            .read_to_end(&mut data)?;
        Ok(data)
    }
}

/// The calls an append makes to the disk, through which a test makes them fail.
struct Disk<'a> {
    file: &'a mut File,
    #[cfg(test)]
    fault: Option<Fault>,
}

impl Disk<'_> {
    fn write_synced(&mut self, out: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        match self.fault {
            Some(Fault::ShortWrite) => {
                self.file.write_all(&out[..out.len() / 2])?;
                return Err(std::io::Error::from_raw_os_error(5));
            }
            Some(Fault::Sync | Fault::SyncAndCut) => {
                self.file.write_all(out)?;
                return Err(std::io::Error::from_raw_os_error(5));
            }
            None => {}
        }
        self.file.write_all(out)?;
        self.file.sync_data()
    }

    fn cut(&mut self, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fault == Some(Fault::SyncAndCut) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.file.set_len(len)
    }
}

/// An I/O error (EIO) a test makes the next append of a segment meet, on the real file.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Half of the append reaches the file, then the write fails.
    ShortWrite,
    /// The whole append reaches the file, then fsync fails.
    Sync,
    /// fsync fails and so does cutting the file back: the failed append stays in the
    /// file, past the bytes the segment counts, until the next append cuts it.
    SyncAndCut,
}

/// Why a record cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Its checksum does not match its body.
    Checksum,
    /// Its length runs past the file or cannot hold a topic.
    Length,
    /// Its topic is not UTF-8.
    Topic,
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flaw::Checksum => "CRC mismatch",
            Flaw::Length => "impossible length",
            Flaw::Topic => "topic not UTF-8",
        })
    }
}

/// Whole entries back to back, from `offset`.
#[derive(Debug, Default)]
pub struct Run {
    pub offset: u64,
    pub bytes: u64,
    pub entries: Vec<Entry>,
}

/// Bytes from `at` to `end` that hold no readable entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad {
    pub at: u64,
    pub end: u64,
    pub flaw: Flaw,
    /// The bad record's own length leads to the next readable one: exactly one entry
    /// is in these bytes.
    pub single: bool,
}

/// What a segment file holds: `runs[i]` and `runs[i + 1]` are separated by `bad[i]`.
#[derive(Debug)]
pub struct Scan {
    pub runs: Vec<Run>,
    pub bad: Vec<Bad>,
    /// Bytes after the last run from which no readable entry follows.
    pub tail: Option<Bad>,
}

impl Scan {
    pub fn is_clean(&self) -> bool {
        self.bad.is_empty() && self.tail.is_none()
    }

    pub fn entries(&self) -> u64 {
        self.runs.iter().map(|run| run.entries.len() as u64).sum()
    }
}

/// Read `data` (a segment file's bytes) as runs of whole entries. Past a bad record,
/// reading goes on at the next offset where a whole, valid record starts.
pub fn scan(data: &[u8]) -> Scan {
    let mut scan = Scan {
        runs: vec![Run::default()],
        bad: Vec::new(),
        tail: None,
    };
    let mut at = 0;
    while at < data.len() {
        let run = scan.runs.last_mut().expect("a run is open");
        match record(data, at) {
            Ok((entry, next)) => {
                run.entries.push(entry);
                run.bytes += (next - at) as u64;
                at = next;
            }
            Err(flaw) => {
                let declared = declared_end(data, at);
                let (resume, single) = match declared {
                    Some(end) if end < data.len() && record(data, end).is_ok() => (Some(end), true),
                    _ => (
                        (at + 1..data.len()).find(|&o| record(data, o).is_ok()),
                        false,
                    ),
                };
                let Some(resume) = resume else {
                    scan.tail = Some(Bad {
                        at: at as u64,
                        end: data.len() as u64,
                        flaw,
                        single: declared == Some(data.len()),
                    });
                    break;
                };
                scan.bad.push(Bad {
                    at: at as u64,
                    end: resume as u64,
                    flaw,
                    single,
                });
                scan.runs.push(Run {
                    offset: resume as u64,
                    ..Run::default()
                });
                at = resume;
            }
        }
    }
    scan
}

/// Where the record at `at` says it ends, if its header is whole.
fn declared_end(data: &[u8], at: usize) -> Option<usize> {
    let header = data.get(at..at + HEADER)?;
    Some(at + HEADER + u32::from_le_bytes(header[..4].try_into().unwrap()) as usize)
}

/// The entry at `at` and where the next record starts.
fn record(data: &[u8], at: usize) -> Result<(Entry, usize), Flaw> {
    let end = declared_end(data, at).ok_or(Flaw::Length)?;
    let body = data.get(at + HEADER..end).ok_or(Flaw::Length)?;
    if body.len() < 2 {
        return Err(Flaw::Length);
    }
    let crc = u32::from_le_bytes(data[at + 4..at + HEADER].try_into().unwrap());
    if crc32fast::hash(body) != crc {
        return Err(Flaw::Checksum);
    }
    let topic_len = u16::from_le_bytes([body[0], body[1]]) as usize;
    if 2 + topic_len > body.len() {
        return Err(Flaw::Length);
    }
    let topic = std::str::from_utf8(&body[2..2 + topic_len]).map_err(|_| Flaw::Topic)?;
    Ok((
        Entry {
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(&body[2 + topic_len..]),
        },
        end,
    ))
}
