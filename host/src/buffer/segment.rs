//! One segment file of the buffer: entries appended as `[u32 length][u32 crc32][body]`
//! (little-endian), the body being `[u16 topic length][topic][payload]`. A crash can
//! leave a torn last entry; opening a segment keeps the entries before it and cuts the
//! file there.

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
    /// Bytes this entry takes on disk.
    /// The longest topic an entry holds (its length is 16 bits on disk; MQTT's limit too).
    pub const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

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
}

impl Segment {
    pub fn file_name(first_seq: u64) -> String {
        format!("{first_seq:020}.seg")
    }

    pub fn create(dir: &Path, first_seq: u64) -> std::io::Result<Segment> {
        let path = dir.join(Self::file_name(first_seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new name must survive a crash too: a segment whose entry in the directory
        // is lost takes its entries with it.
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            first_seq,
            path,
            entries: 0,
            bytes: 0,
            file: Some(file),
        })
    }

    /// Open an existing segment, cutting a torn tail.
    pub fn open(path: &Path, first_seq: u64) -> std::io::Result<Segment> {
        let entries = read_entries(path)?;
        let good: u64 = entries.iter().map(Entry::stored_len).sum();
        let file = OpenOptions::new().append(true).open(path)?;
        if file.metadata()?.len() != good {
            tracing::warn!(path = %path.display(), kept = entries.len(), "buffer segment had a torn last entry; cut it");
            file.set_len(good)?;
        }
        Ok(Segment {
            first_seq,
            path: path.to_owned(),
            entries: entries.len() as u64,
            bytes: good,
            file: Some(file),
        })
    }

    /// Append `entries` and make them durable. A failed append (a full disk, an I/O
    /// error on sync) leaves nothing behind: the file is cut back to what it held, now or
    /// before the next append, so that no torn or unsynced entry is ever read with a
    /// later entry's sequence number.
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
        if let Err(error) = file.write_all(&out).and_then(|()| file.sync_data()) {
            let _ = file.set_len(self.bytes);
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

    pub fn read(&self) -> std::io::Result<Vec<Entry>> {
        read_entries(&self.path)
    }
}

/// Every whole entry of the file at `path`, up to the first torn or corrupt one.
fn read_entries(path: &Path) -> std::io::Result<Vec<Entry>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut entries = Vec::new();
    let mut at = 0;
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap());
        let Some(body) = data.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32fast::hash(body) != crc || body.len() < 2 {
            break;
        }
        let topic_len = u16::from_le_bytes([body[0], body[1]]) as usize;
        let Some(topic) = body
            .get(2..2 + topic_len)
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            break;
        };
        entries.push(Entry {
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(&body[2 + topic_len..]),
        });
        at += HEADER + len;
    }
    Ok(entries)
}
