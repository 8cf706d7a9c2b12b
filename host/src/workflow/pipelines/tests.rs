//! Replay jobs' pipelines in process: objects an object_store sink wrote, replayed over
//! a slot into a file sink and into a serving table the host already serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::sinks::object_store::readings;
use crate::tables::{Access, Table};

/// A replay config in `dir` reading `lake` into `sink` (a sink table without `inputs`).
fn config(dir: &Path, name: &str, lake: &Path, sink: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        r#"
data_dir = "{data}"

[sources.history]
type = "replay"
url = "file://{lake}"
time_field = "ts"

[sinks.out]
inputs = ["history"]
{sink}
"#,
        data = dir.join("data").display(),
        lake = lake.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn hour(hour: u32) -> (String, String) {
    (
        format!("2026-11-29T{hour:02}:00:00Z"),
        format!("2026-11-29T{:02}:00:00Z", hour + 1),
    )
}

async fn run(config: &Path, (from, to): (String, String)) -> (Result<Produced, JobError>, RunLog) {
    let log = RunLog::default();
    let result = InProcess
        .replay(
            config,
            from,
            to,
            None,
            log.clone(),
            CancellationToken::new(),
        )
        .await;
    (result, log)
}

/// The `seq`s of the JSON lines of every file under `dir`, sorted.
fn lines(dir: &Path) -> Vec<i64> {
    let mut seqs: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            text.lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
                        .as_i64()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test]
async fn a_slot_of_stored_objects_is_replayed_into_the_pipelines_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    readings::store(&lake, "parquet", 40).await;
    let sink = |out: &str| {
        format!(
            "type = \"file\"\npath = \"{}\"",
            dir.path().join(out).display()
        )
    };
    // Two at once, with the same stage names: each watches its own sources.
    let ten = config(dir.path(), "ten.toml", &lake, &sink("out10"));
    let eleven = config(dir.path(), "eleven.toml", &lake, &sink("out11"));
    let ((ten, ten_log), (eleven, _)) = tokio::join!(run(&ten, hour(10)), run(&eleven, hour(11)));
    assert_eq!(
        ten.unwrap(),
        Produced {
            objects: 3,
            rows: 18
        },
        "{}",
        ten_log.text()
    );
    assert_eq!(
        eleven.unwrap(),
        Produced {
            objects: 4,
            rows: 22
        }
    );
    assert_eq!(
        lines(&dir.path().join("out10")),
        (0..18).collect::<Vec<_>>()
    );
    assert_eq!(
        lines(&dir.path().join("out11")),
        (18..40).collect::<Vec<_>>()
    );
    assert!(
        ten_log.text().contains("objects 3/3 read (0 failed)"),
        "{}",
        ten_log.text()
    );
}

#[tokio::test]
async fn a_job_pipeline_writes_into_the_table_the_host_serves() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    readings::store(&lake, "parquet", 40).await;
    let name = "replay_job_scores";
    let served = Table::open(name, &dir.path().join("host.redb"), 1, Access::default()).unwrap();
    crate::tables::tables()
        .lock()
        .unwrap()
        .insert(name.into(), served.clone());
    let serving =
        format!("type = \"serving\"\ntable = \"{name}\"\nkey = \"device_id\"\npublic = true");
    let path = config(dir.path(), "scores.toml", &lake, &serving);
    let (result, log) = run(&path, hour(11)).await;
    assert_eq!(
        result.unwrap(),
        Produced {
            objects: 4,
            rows: 22
        },
        "{}",
        log.text()
    );
    let newest = served.get("d0", 0).await.unwrap().unwrap();
    assert_eq!(
        newest[0].value["seq"], 39,
        "the last reading of d0 in hour 11"
    );
    let registered = crate::tables::tables()
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .unwrap();
    assert!(
        Arc::ptr_eq(&registered, &served),
        "the host's table is still the one served"
    );

    // A job's table on another backend than the host's is a mistake, said as such.
    let other = format!("{serving}\npostgres = \"host=127.0.0.1 dbname=none\"");
    let path = config(dir.path(), "elsewhere.toml", &lake, &other);
    let error = run(&path, hour(11)).await.0.unwrap_err().to_string();
    assert!(
        error.contains("is postgres here, but the host serves it from its embedded backend"),
        "{error}"
    );
    crate::tables::tables().lock().unwrap().remove(name);
}

#[tokio::test]
async fn a_broken_config_fails_the_run_with_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[sources.history]\ntype = \"replay\"\nurl = 5\n").unwrap();
    let (result, log) = run(&path, hour(10)).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("broken.toml:3:"), "{error}");
    assert!(log.text().contains("broken.toml:3:"), "{}", log.text());
}
