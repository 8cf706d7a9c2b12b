//! `type = "file"` sink: JSON lines in a directory, rotated by size and age, fsynced
//! before a batch is acknowledged. Every process start opens a new file, so a file
//! torn by a crash is never appended to.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::component::{BuildContext, BuildError, Declaration};
use crate::event::{Event, now_ms};
use crate::pipeline::{Batch, SinkError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The directory; relative paths are inside the pipeline's `data_dir`.
    pub path: PathBuf,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(
        rename = "max_age_secs",
        default = "default_max_age",
        with = "serde_with::As::<serde_with::DurationSeconds<u64>>"
    )]
    pub max_age: Duration,
    #[serde(default)]
    pub format: Format,
}

/// What one line holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The payload itself when it is JSON; otherwise the payload as a JSON string.
    #[default]
    Payload,
    /// `{"key","headers","timestamp_ms","origin","payload"}`.
    Envelope,
}

fn default_prefix() -> String {
    "events".to_owned()
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

impl FileSinkConfig {
    /// Where dead letters go when no configured stage reads a stage's `dead_letter`.
    pub fn dead_letter_fallback() -> FileSinkConfig {
        FileSinkConfig {
            path: "dead_letter".into(),
            prefix: "dead".into(),
            max_bytes: default_max_bytes(),
            max_age: Duration::from_secs(86_400),
            format: Format::Payload,
        }
    }

    fn open(&self, name: &str, data_dir: &Path) -> Result<FileSink, BuildError> {
        let dir = data_dir.join(&self.path);
        std::fs::create_dir_all(&dir)
            .map_err(|error| BuildError::io(name, format!("create {}", dir.display()), error))?;
        if self.max_bytes == 0 || self.max_age.is_zero() {
            return Err(BuildError::stage(
                name,
                "`max_bytes` and `max_age_secs` must be at least 1",
            ));
        }
        tracing::info!(stage = name, dir = %dir.display(), "file sink writes here");
        Ok(FileSink {
            writer: Arc::new(Mutex::new(Writer {
                dir,
                prefix: self.prefix.clone(),
                max_bytes: self.max_bytes,
                max_age: self.max_age,
                format: self.format,
                run: now_ms(),
                sequence: 0,
                current: None,
            })),
        })
    }
}

pub struct FileSink {
    writer: Arc<Mutex<Writer>>,
}

struct Writer {
    dir: PathBuf,
    prefix: String,
    max_bytes: u64,
    max_age: Duration,
    format: Format,
    /// Start time of this process, in every file name.
    run: i64,
    sequence: u32,
    current: Option<Open>,
}

struct Open {
    file: File,
    bytes: u64,
    opened: Instant,
}

impl Writer {
    fn write(&mut self, events: &[Event]) -> std::io::Result<()> {
        let mut lines = Vec::with_capacity(events.iter().map(|e| e.payload.len() + 1).sum());
        for event in events {
            line(&mut lines, event, self.format);
        }
        let rotate = self.current.as_ref().is_none_or(|open| {
            open.bytes >= self.max_bytes || open.opened.elapsed() >= self.max_age
        });
        if rotate {
            self.sequence += 1;
            let path = self.dir.join(format!(
                "{}-{}-{:05}.jsonl",
                self.prefix, self.run, self.sequence
            ));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            // The new name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.current = Some(Open {
                file,
                bytes: 0,
                opened: Instant::now(),
            });
        }
        let open = self
            .current
            .as_mut()
            .expect("a file is open after rotation");
        if let Err(error) = open
            .file
            .write_all(&lines)
            .and_then(|()| open.file.sync_data())
        {
            // Cut back what part of the batch reached the file (a full disk), so that the
            // retry leaves no torn line; a file that cannot be cut is left for a new one.
            if open.file.set_len(open.bytes).is_err() {
                self.current = None;
            }
            return Err(error);
        }
        open.bytes += lines.len() as u64;
        Ok(())
    }
}

/// Append one event as one line.
pub(crate) fn line(out: &mut Vec<u8>, event: &Event, format: Format) {
    let is_json = || {
        serde_json::from_slice::<serde::de::IgnoredAny>(&event.payload).is_ok()
            && !event.payload.contains(&b'\n')
    };
    match format {
        Format::Payload if is_json() => out.extend_from_slice(&event.payload),
        Format::Payload => {
            serde_json::to_writer(&mut *out, &String::from_utf8_lossy(&event.payload))
                .expect("writing to a Vec");
        }
        Format::Envelope => {
            let payload = match std::str::from_utf8(&event.payload) {
                Ok(text) => serde_json::json!(text),
                Err(_) => serde_json::json!({ "base64": BASE64.encode(&event.payload) }),
            };
            let headers: serde_json::Map<String, serde_json::Value> = event
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        serde_json::json!(String::from_utf8_lossy(value)),
                    )
                })
                .collect();
            let record = serde_json::json!({
                "key": event.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                "headers": headers,
                "timestamp_ms": event.timestamp_ms,
                "origin": &*event.origin,
                "payload": payload,
            });
            serde_json::to_writer(&mut *out, &record).expect("writing to a Vec");
        }
    }
    out.push(b'\n');
}

impl super::SinkConfig for FileSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            writes: vec![self.path.clone()],
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        Ok(Box::new(self.open(context.stage, context.data_dir)?))
    }
}

impl super::Sink for FileSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        let writer = self.writer.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let result = writer.lock().unwrap().write(&batch.events);
                match result {
                    Ok(()) => {
                        batch.delivered();
                        Ok(())
                    }
                    Err(error) => Err((batch, error.into())),
                }
            })
            .await
            .expect("the file writer does not panic")
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        // Every write was already synced.
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_json_and_quote_the_rest() {
        let mut out = Vec::new();
        line(
            &mut out,
            &Event::new(&b"{\"a\":1}"[..], "t"),
            Format::Payload,
        );
        line(
            &mut out,
            &Event::new(&b"plain text"[..], "t"),
            Format::Payload,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1}\n\"plain text\"\n"
        );
    }

    #[test]
    fn rotates_by_size_into_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            path: dir.path().to_owned(),
            prefix: "t".into(),
            max_bytes: 10,
            max_age: Duration::from_secs(3600),
            format: Format::Payload,
        };
        let sink = config.open("files", dir.path()).unwrap();
        let mut writer = sink.writer.lock().unwrap();
        writer
            .write(&[Event::new(&b"{\"n\":1234567890}"[..], "t")])
            .unwrap();
        writer.write(&[Event::new(&b"{\"n\":2}"[..], "t")]).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_full_disk_and_the_retry_leave_no_torn_line() {
        let Some(disk) = crate::buffer::small_disk::SmallDisk::mount() else {
            return;
        };
        let config = FileSinkConfig {
            path: "out".into(),
            prefix: "t".into(),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            format: Format::Payload,
        };
        let sink = config.open("files", disk.path()).unwrap();
        let mut writer = sink.writer.lock().unwrap();
        let batch = |from: u32, to: u32| -> Vec<Event> {
            (from..to)
                .map(|n| Event::new(format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(80)), "t"))
                .collect()
        };
        writer.write(&batch(0, 10)).unwrap();
        // Fill the disk, leaving less than the next batch needs.
        let filler = disk.path().join("filler");
        let mut file = File::create(&filler).unwrap();
        while file.write_all(&[0u8; 1024]).is_ok() {}
        drop(file);
        let error = writer.write(&batch(10, 200)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28), "ENOSPC: {error}");
        std::fs::remove_file(&filler).unwrap();
        writer.write(&batch(10, 200)).unwrap();
        drop(writer);
        let mut lines = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(disk.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
            lines.extend(text.lines().map(str::to_owned));
        }
        let numbers: Vec<u64> = lines
            .iter()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            numbers,
            (0..200).collect::<Vec<_>>(),
            "every line whole, once, in order"
        );
    }
}
