//! `type = "console"` sink: one line per event on standard output, for humans.

use std::io::Write;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::pipeline::Batch;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// Text put before every line (e.g. `"ALERT "`).
    #[serde(default)]
    pub prefix: String,
}

impl ConsoleSinkConfig {
    pub fn build(&self) -> ConsoleSink {
        ConsoleSink {
            prefix: self.prefix.clone(),
        }
    }
}

pub struct ConsoleSink {
    prefix: String,
}

impl super::Sink for ConsoleSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, String)>> {
        async move {
            let mut out = std::io::stdout().lock();
            let written: std::io::Result<()> = batch.events.iter().try_for_each(|event| {
                writeln!(
                    out,
                    "{}{}",
                    self.prefix,
                    String::from_utf8_lossy(&event.payload)
                )
            });
            match written.and_then(|()| out.flush()) {
                Ok(()) => Ok(()),
                Err(error) => Err((batch, error.to_string())),
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), String>> {
        async { Ok(()) }.boxed()
    }
}
