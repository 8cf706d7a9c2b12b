//! A plugin's stderr: forwarded to the log line by line, and its tail kept so that a
//! trap's error can say what the plugin printed last (a Rust panic message, say).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

const TAIL_BYTES: usize = 2048;

#[derive(Clone, Default)]
pub struct StderrTail {
    stage: Arc<str>,
    tail: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    pub fn new(stage: Arc<str>) -> Self {
        StderrTail {
            stage,
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
        for line in String::from_utf8_lossy(buf)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            tracing::debug!(stage = %self.stage, "plugin stderr: {line}");
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
