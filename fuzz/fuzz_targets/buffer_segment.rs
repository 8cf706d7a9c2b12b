#![no_main]
//! Any bytes as the uplink buffer's first segment file, as a crash, a bad disk or a
//! tampered device could leave it, then the buffer's public API as the forwarder uses
//! it: `Buffer::open`, `read` and `ack` until nothing is left, one `push`, and its entry
//! read back. Nothing may panic or loop; the buffer opens whatever the file holds, hands
//! out entries in order, and what is pushed after the damage comes back intact.

use std::path::Path;
use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::buffer::{Buffer, Entry, WhenFull};

/// The file name of the segment whose first entry is sequence number 0.
const FIRST_SEGMENT: &str = "00000000000000000000.seg";
/// The smallest entry on disk: length, checksum and topic length, nothing else.
const SMALLEST_ENTRY: usize = 10;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

/// A scratch folder in memory where there is one: the buffer syncs every append.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .expect("a scratch folder")
}

fuzz_target!(|segment: &[u8]| {
    let dir = scratch();
    std::fs::write(dir.path().join(FIRST_SEGMENT), segment).expect("the segment is written");
    let buffer = Buffer::open(dir.path(), 1 << 30, 1 << 20, WhenFull::Block)
        .expect("a damaged segment never keeps the buffer from opening");

    let mut next = 0;
    let mut entries = 0;
    loop {
        let read = buffer.read(next, 16).expect("the buffer reads");
        if read.is_empty() {
            break;
        }
        for (seq, _) in read {
            assert!(seq >= next, "entry {seq} read again after {next}");
            buffer.ack(seq).expect("the buffer acknowledges");
            next = seq + 1;
            entries += 1;
        }
        assert!(
            entries <= segment.len() / SMALLEST_ENTRY,
            "{entries} entries read from {} bytes",
            segment.len()
        );
    }

    let marker = Entry {
        topic: "fuzz/marker".to_owned(),
        payload: Bytes::from_static(b"{\"after\":\"the damage\"}"),
    };
    RUNTIME
        .block_on(buffer.push(vec![marker.clone()]))
        .expect("the buffer takes an entry");
    let read = buffer.read(next, 16).expect("the buffer reads");
    assert_eq!(read.len(), 1, "only the new entry is left: {read:?}");
    let (seq, entry) = &read[0];
    assert!(*seq >= next);
    assert_eq!(entry, &marker);
    buffer.ack(*seq).expect("the buffer acknowledges");
    assert_eq!(buffer.depth().entries, 0);
});
