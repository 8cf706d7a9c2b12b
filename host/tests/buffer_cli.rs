//! `sluice buffer check` and `repair`, run as an operator runs them, on a buffer with
//! flipped bytes in the middle of a segment.

use std::path::Path;
use std::process::Command;

use sluice::buffer::{Buffer, Entry, WhenFull};

fn sluice(args: &[&str], dir: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn entry(n: u64) -> Entry {
    Entry {
        topic: "sensors/d1/telemetry".into(),
        payload: format!(r#"{{"seq":{n:04}}}"#).into(),
    }
}

fn open(dir: &Path) -> std::sync::Arc<Buffer> {
    let segment_bytes = 10 * entry(0).stored_len();
    Buffer::open(dir, 1 << 20, segment_bytes, WhenFull::Block).unwrap()
}

#[tokio::test]
async fn check_finds_flipped_bytes_repair_quarantines_them_and_later_entries_still_come() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path());
    for n in 0..30 {
        buffer.push(vec![entry(n)]).await.unwrap();
    }
    (0..2).for_each(|seq| buffer.ack(seq).unwrap());
    let (code, _, stderr) = sluice(&["buffer", "repair"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("is in use"), "{stderr}");
    drop(buffer);

    // Flip bytes in entry 4 of the first of three segments.
    let offset = 4 * entry(0).stored_len();
    let segment = dir.path().join("00000000000000000000.seg");
    let mut data = std::fs::read(&segment).unwrap();
    data[offset as usize + 12] ^= 0x5a;
    data[offset as usize + 13] ^= 0x5a;
    std::fs::write(&segment, data).unwrap();

    let (code, stdout, stderr) = sluice(&["buffer", "check"], dir.path());
    assert_eq!(code, 1, "corrupt: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("corrupt at offset {offset} (CRC mismatch")),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 entry from sequence 4 lost, 1 undelivered"),
        "{stdout}"
    );

    let (code, stdout, stderr) = sluice(&["buffer", "repair"], dir.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("repaired 1 segment(s)"), "{stdout}");
    assert!(
        dir.path()
            .join(format!("quarantine/00000000000000000000.seg.at-{offset}"))
            .exists()
    );

    let (code, stdout, stderr) = sluice(&["buffer", "check"], dir.path());
    assert_eq!(code, 0, "healed: {stdout}{stderr}");
    assert!(
        stdout.contains("cursor: acked 2, dropped 0, lost 1"),
        "{stdout}"
    );
    let (code, stdout, _) = sluice(&["buffer", "repair"], dir.path());
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing to repair"), "idempotent: {stdout}");

    let buffer = open(dir.path());
    let read = buffer.read(0, 100).unwrap();
    let seqs: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (2..30).filter(|&n| n != 4).collect::<Vec<_>>());
    assert!(read.iter().all(|(seq, e)| *e == entry(*seq)));
    assert_eq!(buffer.depth().lost, 1);

    let other = tempfile::tempdir().unwrap();
    let (code, _, stderr) = sluice(&["buffer", "check"], other.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a buffer"), "{stderr}");
}
