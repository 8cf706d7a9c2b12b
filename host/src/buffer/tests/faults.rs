//! An I/O error (EIO) on an append's write or fsync, injected on the real segment file:
//! the failed entries get no number, a PUBACK for a number not given deletes nothing,
//! and the retry takes the next numbers, with nothing lost or repeated.

use super::*;
use crate::buffer::segment::Fault;

#[tokio::test]
async fn an_eio_on_write_or_sync_renumbers_nothing_and_its_retry_loses_and_repeats_nothing() {
    for fault in [Fault::ShortWrite, Fault::Sync, Fault::SyncAndCut] {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
        buffer.push((0..5).map(entry).collect()).await.unwrap();
        (0..2).for_each(|seq| buffer.ack(seq).unwrap());

        buffer
            .inner
            .lock()
            .unwrap()
            .segments
            .back_mut()
            .unwrap()
            .fault = Some(fault);
        let error = buffer.push((5..10).map(entry).collect()).await.unwrap_err();
        assert!(
            error.to_string().contains("Input/output error"),
            "{fault:?}: {error}"
        );
        assert_eq!(buffer.depth().entries, 3, "{fault:?}");
        // Even with the failed append still in the file, the forwarder reads nothing of
        // it, and PUBACKs for numbers not given delete nothing.
        assert_eq!(seqs(&buffer.read(0, 100).unwrap()), [2, 3, 4], "{fault:?}");
        (2..4).chain(5..10).for_each(|seq| buffer.ack(seq).unwrap());
        assert_eq!(buffer.first_unacked(), 4, "{fault:?}");

        // The retry takes the numbers the failed append would have had.
        buffer.push((5..10).map(entry).collect()).await.unwrap();
        let read = buffer.read(0, 100).unwrap();
        assert_eq!(seqs(&read), [4, 5, 6, 7, 8, 9], "{fault:?}");
        assert!(read.iter().all(|(seq, e)| *e == entry(*seq)), "{fault:?}");
        // On disk: exactly the ten entries, once each.
        drop(buffer);
        let data = std::fs::read(dir.path().join(Segment::file_name(0))).unwrap();
        let written: u64 = (0..10).map(|n| entry(n).stored_len()).sum();
        assert_eq!(data.len() as u64, written, "{fault:?}");
        let reopened = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
        let read = reopened.read(0, 100).unwrap();
        assert_eq!(seqs(&read), [4, 5, 6, 7, 8, 9], "{fault:?}");
        assert_eq!(reopened.depth().lost, 0, "{fault:?}");
    }
}
