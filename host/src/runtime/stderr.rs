//! A plugin's stderr: forwarded to the log line by line, and its tail kept so that a
//! trap's error can say what the plugin printed last (a Rust panic message, say).
//! Forwarded lines count against the stage's log rate and are truncated like log
//! messages, so stderr is no way around the `log` quotas.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::capabilities::log::{LogBudget, truncate};

const TAIL_BYTES: usize = 2048;

#[derive(Clone)]
pub struct StderrTail {
    stage: Arc<str>,
    budget: Arc<LogBudget>,
    line_bytes: usize,
    tail: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    pub fn new(stage: Arc<str>, budget: Arc<LogBudget>, line_bytes: usize) -> Self {
        StderrTail {
            stage,
            budget,
            line_bytes,
            tail: Arc::default(),
        }
    }

    /// The last bytes written, trimmed, as text.
    pub fn take(&self) -> String {
        let mut tail = self.tail.lock().unwrap();
        let text = String::from_utf8_lossy(&tail).trim().to_owned();
        tail.clear();
        text
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if tracing::enabled!(tracing::Level::DEBUG) {
            for line in String::from_utf8_lossy(buf)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                if self.budget.admit() {
                    let line = truncate(line, self.line_bytes);
                    tracing::debug!(stage = %self.stage, "plugin stderr: {line}");
                }
            }
        }
        let mut tail = self.tail.lock().unwrap();
        tail.extend_from_slice(buf);
        if tail.len() > TAIL_BYTES {
            let excess = tail.len() - TAIL_BYTES;
            tail.drain(..excess);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
