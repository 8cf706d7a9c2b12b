//! `type = "console"` sink: one line per event on standard output, for humans.

use std::io::Write;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::pipeline::{Batch, SinkError};
use crate::component::{BuildContext, BuildError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// Text put before every line (e.g. `"ALERT "`).
    #[serde(default)]
    pub prefix: String,
}

impl super::SinkConfig for ConsoleSinkConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        Ok(Box::new(ConsoleSink {
            prefix: Arc::from(self.prefix.as_str()),
        }))
    }
}

pub struct ConsoleSink {
    prefix: Arc<str>,
}

impl super::Sink for ConsoleSink {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        let prefix = self.prefix.clone();
        async move {
            // A full stdout pipe blocks the write: keep that off the async workers, or it
            // stalls every stage (and the API) with it.
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                let written: std::io::Result<()> = batch.events.iter().try_for_each(|event| {
                    writeln!(out, "{prefix}{}", String::from_utf8_lossy(&event.payload))
                });
                match written.and_then(|()| out.flush()) {
                    Ok(()) => {
                        batch.delivered();
                        Ok(())
                    }
                    Err(error) => Err((batch, error.into())),
                }
            })
            .await
            .expect("the console writer does not panic")
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}
