//! The tap pane of `sluice top`: a stage's newest events, streamed as NDJSON from
//! `GET /v1/tap/{stage}` by a task on the API client's runtime and handed to the screen
//! through a channel, with the tap's own sent and dropped counts. Closing the pane
//! drops the reader, which ends the task and so the connection.

use std::collections::VecDeque;

use serde::Deserialize;
use tokio::sync::mpsc;

use super::super::api_client::ApiClient;

/// Events the pane keeps, newest last.
pub const KEPT: usize = 50;

/// A longer line than this is not an event record: the tap is given up.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Lines read ahead of the screen; past this the connection waits, and the host's tap
/// drops (and counts) what it cannot send.
const CHANNEL_LINES: usize = 256;

/// One event as the pane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TapEvent {
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub route: Option<String>,
    /// The payload as one line: compact JSON, a quoted string, or `base64:...`.
    pub payload: String,
}

/// What the reader hands the screen.
enum Message {
    Line(String),
    Failed(String),
    Ended,
}

/// A line of the tap's stream.
#[derive(Deserialize)]
#[serde(untagged)]
enum TapLine {
    Status { tap: TapCounts },
    Event(EventRecord),
}

#[derive(Deserialize)]
struct TapCounts {
    sent: u64,
    dropped: u64,
}

#[derive(Deserialize)]
struct EventRecord {
    route: Option<String>,
    key: Option<String>,
    timestamp_ms: Option<i64>,
    payload: serde_json::Value,
    #[serde(default)]
    payload_encoding: Option<String>,
}

pub struct TapPane {
    pub stage: String,
    pub events: VecDeque<TapEvent>,
    /// The tap's counts, from its newest status line.
    pub sent: Option<u64>,
    pub dropped: Option<u64>,
    /// Why the tap stopped: the host refused it, the connection broke, or it ended.
    pub error: Option<String>,
    reader: Option<Reader>,
}

/// The reading task, ended when the pane goes.
struct Reader {
    messages: mpsc::Receiver<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TapPane {
    /// A pane with nothing read yet.
    pub fn new(stage: &str) -> TapPane {
        TapPane {
            stage: stage.to_owned(),
            events: VecDeque::new(),
            sent: None,
            dropped: None,
            error: None,
            reader: None,
        }
    }

    /// Open a tap on `stage`, read in the background.
    pub fn open(client: &ApiClient, stage: &str) -> TapPane {
        let (sender, messages) = mpsc::channel(CHANNEL_LINES);
        let response = client.stream(&format!("/v1/tap/{}", path_segment(stage)));
        let task = client.spawn(async move {
            let message = match response.await {
                Ok(response) => read_lines(response, &sender).await,
                Err(error) => Message::Failed(format!("{error:#}")),
            };
            let _ = sender.send(message).await;
        });
        TapPane {
            reader: Some(Reader { messages, task }),
            ..TapPane::new(stage)
        }
    }

    /// Take in what the reader has read since the last call.
    pub fn drain(&mut self) {
        while let Some(message) = self
            .reader
            .as_mut()
            .and_then(|r| r.messages.try_recv().ok())
        {
            match message {
                Message::Line(line) => self.take_line(&line),
                Message::Failed(error) => self.error = Some(error),
                Message::Ended => self.error = Some("the host ended the tap".into()),
            }
        }
    }

    /// Take one line of the stream: an event record or the tap's counts.
    pub fn take_line(&mut self, line: &str) {
        let event = match serde_json::from_str::<TapLine>(line) {
            Ok(TapLine::Status { tap }) => {
                self.sent = Some(tap.sent);
                self.dropped = Some(tap.dropped);
                return;
            }
            Ok(TapLine::Event(record)) => TapEvent {
                timestamp_ms: record.timestamp_ms,
                key: record.key,
                route: record.route,
                payload: match (record.payload_encoding.as_deref(), record.payload) {
                    (Some("base64"), serde_json::Value::String(text)) => format!("base64:{text}"),
                    (_, payload) => payload.to_string(),
                },
            },
            // Shown as it came rather than hidden: a newer host may say more.
            Err(_) => TapEvent {
                timestamp_ms: None,
                key: None,
                route: None,
                payload: line.to_owned(),
            },
        };
        if self.events.len() == KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// Hand each line of `response` to the screen until it ends, breaks, or the screen goes.
async fn read_lines(mut response: reqwest::Response, sender: &mpsc::Sender<Message>) -> Message {
    let mut pending = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => pending.extend_from_slice(&bytes),
            Ok(None) => return Message::Ended,
            Err(error) => return Message::Failed(format!("reading the tap: {error}")),
        }
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_owned();
            if !line.is_empty() && sender.send(Message::Line(line)).await.is_err() {
                return Message::Ended;
            }
        }
        if pending.len() > MAX_LINE_BYTES {
            return Message::Failed(format!("a tap line longer than {MAX_LINE_BYTES} bytes"));
        }
    }
}

/// `stage` as one segment of a URL path.
fn path_segment(stage: &str) -> String {
    stage
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_are_kept_newest_last_and_status_lines_update_the_counts() {
        let mut pane = TapPane::new("shape");
        for n in 0..KEPT + 5 {
            pane.take_line(&format!(
                r#"{{"stage":"shape","route":null,"key":"d{n}","timestamp_ms":{n},"headers":{{}},"payload":{{"n":{n}}},"payload_encoding":"json"}}"#
            ));
        }
        pane.take_line(r#"{"tap":{"sent":55,"dropped":3}}"#);
        assert_eq!(pane.events.len(), KEPT);
        assert_eq!(
            pane.events.back(),
            Some(&TapEvent {
                timestamp_ms: Some(54),
                key: Some("d54".into()),
                route: None,
                payload: r#"{"n":54}"#.into(),
            })
        );
        assert_eq!(pane.events.front().unwrap().key.as_deref(), Some("d5"));
        assert_eq!((pane.sent, pane.dropped), (Some(55), Some(3)));
    }

    #[test]
    fn text_and_binary_payloads_show_as_a_quoted_string_and_as_base64() {
        let mut pane = TapPane::new("raw");
        pane.take_line(
            r#"{"stage":"raw","route":"hot","key":null,"timestamp_ms":1,"headers":{},"payload":"a b","payload_encoding":"utf8"}"#,
        );
        pane.take_line(
            r#"{"stage":"raw","route":null,"key":null,"timestamp_ms":2,"headers":{},"payload":"AAE=","payload_encoding":"base64"}"#,
        );
        pane.take_line("not json");
        let shown: Vec<_> = pane.events.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(shown, [r#""a b""#, "base64:AAE=", "not json"]);
        assert_eq!(pane.events[0].route.as_deref(), Some("hot"));
    }

    #[test]
    fn a_stage_name_is_one_path_segment() {
        assert_eq!(path_segment("shape_2"), "shape_2");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
