//! The buffer's `cursor` file, `ACKED DROPPED LOST`: where delivery stands and what was
//! given up, kept across restarts. Not fsynced: losing the latest write only makes a
//! restart resend some delivered entries (at least once). A cursor written before
//! `LOST` existed has two numbers, and reads as having lost none.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Every entry before this one is acknowledged (or dropped, or lost).
    pub acked: u64,
    /// Entries dropped to make room, ever.
    pub dropped: u64,
    /// Entries lost to corruption on disk, ever.
    pub lost: u64,
}

impl Cursor {
    pub const FILE: &str = "cursor";

    /// The cursor as last written (all zero without one).
    pub fn read(dir: &Path) -> Cursor {
        let text = std::fs::read_to_string(dir.join(Self::FILE)).unwrap_or_default();
        let mut numbers = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
        let mut next = || numbers.next().unwrap_or(0);
        Cursor {
            acked: next(),
            dropped: next(),
            lost: next(),
        }
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let temporary = dir.join("cursor.tmp");
        let text = format!("{} {} {}\n", self.acked, self.dropped, self.lost);
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, dir.join(Self::FILE))
    }
}
