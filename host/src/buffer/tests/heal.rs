//! Damage on disk: corrupt records are quarantined and counted, the entries after them
//! still come with their own numbers, and a torn last append is no loss.

use super::*;

fn size() -> u64 {
    entry(0).stored_len()
}

fn flip(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

/// Give the record at `offset` a length that runs past the file.
fn break_length(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize..offset as usize + 4].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    std::fs::write(path, data).unwrap();
}

fn quarantined(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(QUARANTINE))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn payloads(read: &[(u64, Entry)]) -> Vec<Entry> {
    read.iter().map(|(_, entry)| entry.clone()).collect()
}

/// Thirty entries in segments of ten, the first two acknowledged.
async fn three_segments(dir: &Path) -> Arc<Buffer> {
    let buffer = Buffer::open(dir, 1 << 20, 10 * size(), WhenFull::Block).unwrap();
    for n in 0..30 {
        buffer.push(vec![entry(n)]).await.unwrap();
    }
    (0..2).for_each(|seq| buffer.ack(seq).unwrap());
    buffer
}

#[tokio::test]
async fn a_corrupt_record_mid_segment_is_quarantined_and_counted_and_the_entries_after_it_still_come()
 {
    let dir = tempfile::tempdir().unwrap();
    let open = || Buffer::open(dir.path(), 1 << 20, 10 * size(), WhenFull::Block).unwrap();
    drop(three_segments(dir.path()).await);
    // One flipped byte in entry 5, in the first of three segments: a CRC mismatch.
    flip(&dir.path().join(Segment::file_name(0)), 5 * size() + 20);
    let buffer = open();
    let expected: Vec<u64> = (2..30).filter(|&n| n != 5).collect();
    let read = buffer.read(0, 100).unwrap();
    assert_eq!(
        seqs(&read),
        expected,
        "nothing after it skipped or renumbered"
    );
    assert!(read.iter().all(|(seq, e)| *e == entry(*seq)));
    assert_eq!((buffer.depth().lost, buffer.depth().entries), (1, 27));
    assert_eq!(
        quarantined(dir.path()),
        [format!("{}.at-{}", Segment::file_name(0), 5 * size())]
    );
    // Counted once, and kept.
    drop(buffer);
    let buffer = open();
    assert_eq!(buffer.depth().lost, 1);
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), expected);
    // Delivery goes past the gap; a new entry takes a new number.
    buffer.push(vec![entry(30)]).await.unwrap();
    expected.iter().for_each(|&seq| buffer.ack(seq).unwrap());
    buffer.ack(30).unwrap();
    assert_eq!(buffer.first_unacked(), 31);
    assert_eq!(buffer.depth().entries, 0);
}

#[tokio::test]
async fn a_bad_length_mid_last_segment_counts_at_least_one_and_takes_nothing_after_it_as_delivered()
{
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(Segment::file_name(0));
    let open = || Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    let buffer = open();
    buffer.push((0..10).map(entry).collect()).await.unwrap();
    (0..3).for_each(|seq| buffer.ack(seq).unwrap());
    drop(buffer);
    // Past the cursor: how many records the bad bytes held is unknown; at least one.
    break_length(&segment, 6 * size());
    let buffer = open();
    let read = buffer.read(0, 100).unwrap();
    assert_eq!(seqs(&read), [3, 4, 5, 7, 8, 9]);
    assert!(read.iter().all(|(seq, e)| *e == entry(*seq)));
    assert_eq!(buffer.depth().lost, 1);
    drop(buffer);

    // Before the cursor: the entries after the bad bytes are numbered from the cursor
    // on, so that none counts as delivered that was not (entry 2 comes again).
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(Segment::file_name(0));
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    buffer.push((0..10).map(entry).collect()).await.unwrap();
    (0..3).for_each(|seq| buffer.ack(seq).unwrap());
    drop(buffer);
    break_length(&segment, size());
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    let read = buffer.read(0, 100).unwrap();
    assert_eq!(payloads(&read), (2..10).map(entry).collect::<Vec<_>>());
    assert_eq!(seqs(&read), (3..11).collect::<Vec<_>>());
    assert_eq!(
        buffer.depth().lost,
        0,
        "the bad bytes may all have been delivered"
    );
    buffer.push(vec![entry(10)]).await.unwrap();
    assert_eq!(seqs(&buffer.read(11, 10).unwrap()), [11]);
}

#[tokio::test]
async fn a_torn_last_append_loses_nothing_but_an_earlier_segment_cut_short_counts_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 10 * size(), WhenFull::Block).unwrap();
    for n in 0..20 {
        buffer.push(vec![entry(n)]).await.unwrap();
    }
    drop(buffer);
    // The first segment loses its end in the middle of entry 8; the last one has half
    // an entry appended when the process died.
    let first = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(Segment::file_name(0)))
        .unwrap();
    first.set_len(8 * size() + 20).unwrap();
    let last = dir.path().join(Segment::file_name(10));
    let mut data = std::fs::read(&last).unwrap();
    data.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
    std::fs::write(&last, data).unwrap();
    let before = check(dir.path()).unwrap();
    assert!(!before.is_healthy());
    assert!(before.segments[1].torn.is_some() && !before.segments[1].is_corrupt());
    let buffer = Buffer::open(dir.path(), 1 << 20, 10 * size(), WhenFull::Block).unwrap();
    let expected: Vec<u64> = (0..8).chain(10..20).collect();
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), expected);
    assert_eq!(buffer.depth().lost, 2, "entries 8 and 9");
    assert_eq!(
        quarantined(dir.path()).len(),
        1,
        "a torn append is cut, not kept"
    );
    buffer.push(vec![entry(20)]).await.unwrap();
    assert_eq!(seqs(&buffer.read(19, 10).unwrap()), [19, 20]);
    drop(buffer);
    assert!(check(dir.path()).unwrap().is_healthy());
}

#[tokio::test]
async fn damage_found_while_running_is_healed_and_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    buffer.push((0..20).map(entry).collect()).await.unwrap();
    // The segment taking appends goes bad under the running buffer, which knows how
    // many entries it holds.
    break_length(&dir.path().join(Segment::file_name(0)), 12 * size());
    buffer.push((20..25).map(entry).collect()).await.unwrap();
    let expected: Vec<u64> = (0..25).filter(|&n| n != 12).collect();
    let read = buffer.read(0, 100).unwrap();
    assert_eq!(seqs(&read), expected);
    assert!(read.iter().all(|(seq, e)| *e == entry(*seq)));
    assert_eq!(buffer.depth().lost, 1);
    buffer.push(vec![entry(25)]).await.unwrap();
    assert_eq!(seqs(&buffer.read(24, 10).unwrap()), [24, 25]);
    drop(buffer);
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    assert_eq!(buffer.depth().lost, 1);
    let expected: Vec<u64> = (0..26).filter(|&n| n != 12).collect();
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), expected);
}

#[tokio::test]
async fn a_heal_cut_short_by_a_crash_is_redone_or_finished() {
    let piece = format!("{}.part", Segment::file_name(6));
    // Crashed before the damaged file was cut: its piece is written again.
    let dir = tempfile::tempdir().unwrap();
    drop(three_segments(dir.path()).await);
    let first = dir.path().join(Segment::file_name(0));
    flip(&first, 5 * size() + 20);
    let data = std::fs::read(&first).unwrap();
    std::fs::write(dir.path().join(&piece), &data[6 * size() as usize..]).unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 10 * size(), WhenFull::Block).unwrap();
    let expected: Vec<u64> = (2..30).filter(|&n| n != 5).collect();
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), expected);
    assert_eq!(buffer.depth().lost, 1);
    drop(buffer);
    // Crashed after the cut: the piece is kept.
    let dir = tempfile::tempdir().unwrap();
    drop(three_segments(dir.path()).await);
    let first = dir.path().join(Segment::file_name(0));
    let data = std::fs::read(&first).unwrap();
    std::fs::write(dir.path().join(&piece), &data[6 * size() as usize..]).unwrap();
    std::fs::write(&first, &data[..5 * size() as usize]).unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 10 * size(), WhenFull::Block).unwrap();
    assert_eq!(seqs(&buffer.read(0, 100).unwrap()), expected);
}

#[tokio::test]
async fn repair_waits_for_no_running_buffer_and_only_takes_a_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 1 << 20, 1 << 20, WhenFull::Block).unwrap();
    buffer.push(vec![entry(0)]).await.unwrap();
    assert!(matches!(repair(dir.path()), Err(BufferError::InUse { .. })));
    drop(buffer);
    assert!(repair(dir.path()).unwrap().is_healthy());
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("notes.txt"), "not a buffer").unwrap();
    assert!(matches!(
        check(other.path()),
        Err(BufferError::NotABuffer { .. })
    ));
}
