use super::*;
use crate::buffer::small_disk::SmallDisk;

mod faults;
mod heal;

fn entry(n: u64) -> Entry {
    Entry {
        topic: format!("sensors/d{}/telemetry", n % 2),
        payload: bytes::Bytes::from(format!("{{\"seq\":{n:04}}}")),
    }
}

fn seqs(read: &[(u64, Entry)]) -> Vec<u64> {
    read.iter().map(|(seq, _)| *seq).collect()
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

#[tokio::test]
async fn entries_come_back_in_order_and_acknowledged_segments_leave_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 200, WhenFull::Block).unwrap();
    for n in 0..30 {
        buffer.push(vec![entry(n)]).await.unwrap();
    }
    let read = buffer.read(0, 100).unwrap();
    assert_eq!(seqs(&read), (0..30).collect::<Vec<_>>());
    assert_eq!(read[7].1, entry(7));
    assert!(files(dir.path()) > 3, "segments roll at 200 bytes");
    // Out of order: 1 alone frees nothing; 0 then frees the first segments.
    buffer.ack(1).unwrap();
    assert_eq!(buffer.first_unacked(), 0);
    buffer.ack(0).unwrap();
    assert_eq!(buffer.first_unacked(), 2);
    for seq in 2..30 {
        buffer.ack(seq).unwrap();
    }
    assert_eq!(
        buffer.depth(),
        Depth {
            entries: 0,
            bytes: 0,
            dropped: 0,
            lost: 0
        }
    );
    assert_eq!(files(dir.path()), 0, "delivered: nothing left on disk");
}

#[tokio::test]
async fn a_restart_resumes_after_the_last_acknowledged_entry_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
        buffer.push((0..10).map(entry).collect()).await.unwrap();
        (0..4).for_each(|seq| buffer.ack(seq).unwrap());
    }
    // A crash in the middle of an append: half an entry at the end of the segment.
    let segment = dir.path().join(Segment::file_name(0));
    let mut data = std::fs::read(&segment).unwrap();
    data.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
    std::fs::write(&segment, data).unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    assert_eq!(buffer.first_unacked(), 4);
    assert_eq!(
        seqs(&buffer.read(0, 100).unwrap()),
        (4..10).collect::<Vec<_>>()
    );
    buffer.push(vec![entry(10)]).await.unwrap();
    let read = buffer.read(9, 100).unwrap();
    assert_eq!(
        read.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        [entry(9), entry(10)]
    );
}

#[tokio::test]
async fn drop_oldest_counts_exactly_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let size = entry(0).stored_len();
    // Room for 20 entries, in segments of 5.
    let buffer = Buffer::open(dir.path(), 20 * size, 5 * size, WhenFull::DropOldest).unwrap();
    for n in 0..50 {
        buffer.push(vec![entry(n)]).await.unwrap();
    }
    let depth = buffer.depth();
    assert!(depth.bytes <= 20 * size);
    let kept = seqs(&buffer.read(0, 100).unwrap());
    assert_eq!(
        depth.dropped as usize + kept.len(),
        50,
        "dropped + kept = pushed"
    );
    assert_eq!(
        kept,
        (50 - kept.len() as u64..50).collect::<Vec<_>>(),
        "the newest are kept"
    );
    assert!(
        kept.len() >= 15,
        "at most one segment short of the bound: {}",
        kept.len()
    );
    // The count survives a restart.
    drop(buffer);
    let reopened = Buffer::open(dir.path(), 20 * size, 5 * size, WhenFull::DropOldest).unwrap();
    assert_eq!(reopened.depth().dropped, depth.dropped);
}

#[tokio::test]
async fn block_makes_the_writer_wait_until_a_delivery_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let size = entry(0).stored_len();
    let buffer = Buffer::open(dir.path(), 10 * size, 5 * size, WhenFull::Block).unwrap();
    for n in 0..10 {
        buffer.push(vec![entry(n)]).await.unwrap();
    }
    let writer = {
        let buffer = buffer.clone();
        tokio::spawn(async move { buffer.push(vec![entry(10)]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "full: the writer waits");
    (0..5).for_each(|seq| buffer.ack(seq).unwrap());
    writer.await.unwrap().unwrap();
    assert_eq!(buffer.depth().dropped, 0);
    assert_eq!(
        seqs(&buffer.read(0, 100).unwrap()),
        (5..11).collect::<Vec<_>>()
    );
    let too_big = Entry {
        topic: "t".into(),
        payload: bytes::Bytes::from(vec![0; 20 * size as usize]),
    };
    assert!(matches!(
        buffer.push(vec![too_big]).await,
        Err(BufferError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn entries_in_flight_are_never_dropped_and_a_gap_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let size = entry(0).stored_len();
    let buffer = Buffer::open(dir.path(), 15 * size, 5 * size, WhenFull::DropOldest).unwrap();
    buffer
        .push((0..15).map(entry).collect::<Vec<_>>()[..5].to_vec())
        .await
        .unwrap();
    buffer.push((5..10).map(entry).collect()).await.unwrap();
    buffer.push((10..15).map(entry).collect()).await.unwrap();
    // The forwarder has the first three in flight.
    assert_eq!(buffer.restart_sending(), 0);
    assert_eq!(seqs(&buffer.read(0, 3).unwrap()), [0, 1, 2]);
    // Full: the second segment goes, not the first.
    buffer.push(vec![entry(15)]).await.unwrap();
    assert_eq!(buffer.depth().dropped, 5);
    assert_eq!(
        seqs(&buffer.read(3, 100).unwrap()),
        [3, 4, 10, 11, 12, 13, 14, 15]
    );
    (0..5).for_each(|seq| buffer.ack(seq).unwrap());
    assert_eq!(buffer.first_unacked(), 10, "the gap counts as done");
    drop(buffer);
    let reopened = Buffer::open(dir.path(), 15 * size, 5 * size, WhenFull::DropOldest).unwrap();
    assert_eq!(reopened.first_unacked(), 10);
    assert_eq!(reopened.depth().dropped, 5);
}

#[tokio::test]
async fn a_full_disk_leaves_no_torn_entry_and_numbering_goes_on_once_space_returns() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let dir = disk.path().join("buffer");
    let buffer = Buffer::open(&dir, 1 << 30, 1 << 30, WhenFull::Block).unwrap();
    buffer.push((0..10).map(entry).collect()).await.unwrap();
    // Fill the disk, leaving less than the next append needs.
    let filler = disk.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let mut filled = 0;
    while std::io::Write::write_all(&mut file, &[0u8; 1024]).is_ok() {
        filled += 1;
    }
    let _ = file.sync_all();
    drop(file);
    assert!(filled > 10, "the filler took the space");
    let big: Vec<Entry> = (10..200).map(entry).collect();
    let error = buffer.push(big.clone()).await.unwrap_err();
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let kept: u64 = (0..10).map(|n| entry(n).stored_len()).sum();
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        kept,
        "the torn append was cut back"
    );
    assert_eq!(buffer.depth().entries, 10);
    // Space again: the retry lands right after the ten, with the next numbers.
    std::fs::remove_file(&filler).unwrap();
    buffer.push(big).await.unwrap();
    let read = buffer.read(0, 1000).unwrap();
    assert_eq!(seqs(&read), (0..200).collect::<Vec<_>>());
    assert_eq!(read[150].1, entry(150), "every entry reads back as written");
    // And a restart reads the same.
    drop(buffer);
    let reopened = Buffer::open(&dir, 1 << 30, 1 << 30, WhenFull::Block).unwrap();
    assert_eq!(
        seqs(&reopened.read(0, 1000).unwrap()),
        (0..200).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_share_syncs_and_each_pushers_entries_stay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 30, 1 << 20, WhenFull::Block).unwrap();
    let (pushers, pushes) = (50u64, 20u64);
    let tasks: Vec<_> = (0..pushers)
        .map(|pusher| {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                for n in 0..pushes {
                    let entry = Entry {
                        topic: format!("p{pusher}"),
                        payload: bytes::Bytes::from(n.to_string()),
                    };
                    buffer.push(vec![entry]).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let syncs = buffer.inner.lock().unwrap().syncs;
    assert!(
        syncs < (pushers * pushes) as usize,
        "{syncs} syncs for {} pushes",
        pushers * pushes
    );
    // Every entry is on disk (read back after a restart), each pusher's in order.
    drop(buffer);
    let reopened = Buffer::open(dir.path(), 1 << 30, 1 << 20, WhenFull::Block).unwrap();
    let read = reopened.read(0, 10_000).unwrap();
    assert_eq!(seqs(&read), (0..pushers * pushes).collect::<Vec<_>>());
    for pusher in 0..pushers {
        let topic = format!("p{pusher}");
        let order: Vec<u64> = read
            .iter()
            .filter(|(_, e)| e.topic == topic)
            .map(|(_, e)| std::str::from_utf8(&e.payload).unwrap().parse().unwrap())
            .collect();
        assert_eq!(order, (0..pushes).collect::<Vec<_>>(), "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_commit_fails_every_push_in_it_and_numbers_none() {
    use crate::buffer::segment::Fault;
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    buffer.push((0..3).map(entry).collect()).await.unwrap();
    buffer
        .inner
        .lock()
        .unwrap()
        .segments
        .back_mut()
        .unwrap()
        .fault = Some(Fault::Sync);
    // Hold the flush back until every push is waiting, so that one round takes them all.
    buffer.group.lock().unwrap().flushing = true;
    let pushes: Vec<_> = (0..8)
        .map(|n| {
            let buffer = buffer.clone();
            tokio::spawn(async move { buffer.push(vec![entry(100 + n)]).await })
        })
        .collect();
    while buffer.group.lock().unwrap().pending.len() < pushes.len() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::spawn(buffer.clone().flush()).await.unwrap();
    for push in pushes {
        let error = push.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("Input/output error"), "{error}");
    }
    assert_eq!(buffer.inner.lock().unwrap().syncs, 2);
    assert_eq!(buffer.depth().entries, 3);
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), [0, 1, 2]);
    // The next round numbers on from the three.
    buffer.push(vec![entry(3)]).await.unwrap();
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), [0, 1, 2, 3]);
}
