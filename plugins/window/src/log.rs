//! The window log: how open windows are kept in the stage's state.
//!
//! Each call that changes windows writes one log entry (more when it would pass a
//! state value's size, see [`Chunks`]) holding the whole, current value of every window
//! it changed and the windows it closed. Reading the entries in key order and keeping
//! the last record of each window gives the open windows. A batch thus costs one state
//! write however many windows it touched, instead of one per window.
//!
//! An entry's key is `l/{sequence, 20 digits}/{instance, 16 hex digits}`: the sequence
//! orders entries (it only grows: the next one is one past the largest in the state),
//! and the instance keeps two instances that raced for one number from overwriting each
//! other's entry. Its value is [`LAYOUT`] and then records, each
//! `[kind][window end, i64][length, u32][bytes]`: a window's encoded
//! [`Bucket`](crate::window::Bucket), or a closed window's key as JSON.

pub const LOG: &str = "l/";

/// The first byte of an entry: its layout's version.
const LAYOUT: u8 = 1;

const WINDOW: u8 = 1;
const CLOSED: u8 = 0;

/// Bytes a record takes besides its payload.
pub const RECORD_OVERHEAD: usize = 1 + 8 + 4;

/// One record of an entry, as read back.
#[derive(Debug, PartialEq)]
pub enum Record<'a> {
    /// A window's whole value after the call that wrote it.
    Window { end: i64, bucket: &'a [u8] },
    /// A window closed (emitted and gone), named by its key's JSON.
    Closed { end: i64, key: &'a str },
}

/// The state key of the entry numbered `sequence`, written by `instance`.
pub fn entry_key(sequence: u64, instance: u64) -> String {
    format!("{LOG}{sequence:020}/{instance:016x}")
}

/// The sequence number of an entry's key.
pub fn sequence_of(state_key: &str) -> Option<u64> {
    state_key.strip_prefix(LOG)?.get(..20)?.parse().ok()
}

/// The records of an entry, in order; `None` for an entry of another layout or cut
/// short (the records before the damage are not trusted either: an entry is written
/// whole or not at all).
pub fn records(entry: &[u8]) -> Option<Vec<Record<'_>>> {
    let (&layout, mut rest) = entry.split_first()?;
    if layout != LAYOUT {
        return None;
    }
    let mut records = Vec::new();
    while let Some((&kind, after)) = rest.split_first() {
        let end = i64::from_le_bytes(after.get(..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(after.get(8..12)?.try_into().ok()?) as usize;
        let bytes = after.get(12..12 + len)?;
        rest = &after[12 + len..];
        records.push(match kind {
            WINDOW => Record::Window { end, bucket: bytes },
            CLOSED => Record::Closed {
                end,
                key: std::str::from_utf8(bytes).ok()?,
            },
            _ => return None,
        });
    }
    Some(records)
}

/// Entries being written by one call, each kept under `limit` bytes (the stage's
/// `state_value_bytes`) unless a single record is larger.
pub struct Chunks {
    limit: usize,
    done: Vec<Vec<u8>>,
    current: Vec<u8>,
}

impl Chunks {
    pub fn new(limit: usize) -> Self {
        Chunks {
            limit,
            done: Vec::new(),
            current: vec![LAYOUT],
        }
    }

    /// Add a window record, its bucket encoded by `encode` into the buffer; returns the
    /// record's size.
    pub fn window(&mut self, end: i64, encode: impl FnOnce(&mut Vec<u8>)) -> usize {
        let start = self.current.len();
        self.current.push(WINDOW);
        self.current.extend_from_slice(&end.to_le_bytes());
        self.current.extend_from_slice(&[0; 4]);
        encode(&mut self.current);
        let len = self.current.len() - start - RECORD_OVERHEAD;
        self.current[start + 9..start + 13].copy_from_slice(&(len as u32).to_le_bytes());
        self.split_after(start);
        len + RECORD_OVERHEAD
    }

    pub fn closed(&mut self, end: i64, key: &str) {
        let start = self.current.len();
        self.current.push(CLOSED);
        self.current.extend_from_slice(&end.to_le_bytes());
        self.current
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.current.extend_from_slice(key.as_bytes());
        self.split_after(start);
    }

    /// Keep the entry within the limit: a record that took it past moves to a new one
    /// (unless it is the entry's only record).
    fn split_after(&mut self, record_start: usize) {
        if self.current.len() <= self.limit || record_start == 1 {
            return;
        }
        let mut next = vec![LAYOUT];
        next.extend_from_slice(&self.current[record_start..]);
        self.current.truncate(record_start);
        self.done.push(std::mem::replace(&mut self.current, next));
    }

    /// The entries, in order; none when no record was added.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if self.current.len() > 1 {
            self.done.push(self.current);
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_their_records_in_order_and_split_at_the_limit() {
        let mut chunks = Chunks::new(40);
        assert_eq!(chunks.window(60, |out| out.extend_from_slice(b"first")), 18);
        chunks.closed(120, "\"d1\"");
        chunks.window(-5, |out| out.extend_from_slice(&[7; 30]));
        let entries = chunks.finish();
        assert_eq!(entries.len(), 2, "the third record passes 40 bytes");
        assert_eq!(
            records(&entries[0]).unwrap(),
            [
                Record::Window {
                    end: 60,
                    bucket: b"first"
                },
                Record::Closed {
                    end: 120,
                    key: "\"d1\""
                }
            ]
        );
        assert_eq!(
            records(&entries[1]).unwrap(),
            [Record::Window {
                end: -5,
                bucket: &[7; 30]
            }]
        );
        assert_eq!(records(&entries[1][..20]), None, "cut short");
        assert_eq!(records(b"\x02"), None, "another layout");
        assert!(Chunks::new(40).finish().is_empty());
    }

    #[test]
    fn entry_keys_sort_by_sequence() {
        let (early, late) = (entry_key(9, u64::MAX), entry_key(10, 0));
        assert!(early < late);
        assert_eq!(sequence_of(&late), Some(10));
        assert_eq!(late, "l/00000000000000000010/0000000000000000");
    }
}
