//! A message that fails downstream comes again without a restart: the MQTT source
//! reconnects so that the broker (the embedded one, in process) delivers what was left
//! unacknowledged. Before, the failed message held back every PUBACK after it until
//! the connection happened to drop, and was never delivered meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use sluice::component::{BuildContext, BuildError};
use sluice::config::{Config, Input, Stage};
use sluice::pipeline::{Batch, SinkError};
use sluice::sinks::{Sink, SinkConfig};
use sluice::topology::Pipeline;

/// A sink that fails the first copy of the payload `fail` and takes everything else.
#[derive(Debug, Default)]
struct FailOnce {
    fail: &'static str,
    taken: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<HashSet<String>>>,
}

impl SinkConfig for FailOnce {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(FailOnce {
            fail: self.fail,
            taken: self.taken.clone(),
            failed: self.failed.clone(),
        }))
    }
}

impl Sink for FailOnce {
    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            for (event, ack) in batch.events.into_iter().zip(batch.acks) {
                let payload = String::from_utf8(event.payload.to_vec()).unwrap();
                if payload == self.fail && self.failed.lock().unwrap().insert(payload.clone()) {
                    ack.fail();
                } else {
                    self.taken.lock().unwrap().push(payload);
                    ack.delivered();
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_failed_downstream_is_delivered_again_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        r#"data_dir = "{}"
[broker]
listen = "127.0.0.1:{port}"

[sources.in]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topics = ["t"]
batch_timeout_ms = 5

[sinks.out]
type = "console"
inputs = ["in"]
"#,
        dir.path().display()
    );
    let mut config = Config::from_text(&dir.path().join("test.toml"), &text, |_| None).unwrap();
    let sink = FailOnce {
        fail: "m-5",
        ..FailOnce::default()
    };
    let taken = sink.taken.clone();
    let out = config.sinks.get_mut("out").unwrap();
    *out = Stage {
        name: "out".into(),
        span: out.span.clone(),
        kind: "fail-once",
        inputs: vec![Input {
            stage: "in".into(),
            route: None,
            span: 0..0,
        }],
        config: Box::new(sink),
    };
    let broker = sluice::broker::start(
        config.broker.as_ref().unwrap(),
        &config.data_dir,
        &sluice::broker::local_sessions(&config),
        sluice::broker::Access::default(),
    )
    .await
    .unwrap();
    let pipeline = Pipeline::start(&config).unwrap();

    let (publisher, mut outbox) =
        AsyncClient::new(MqttOptions::new("publisher", "127.0.0.1", port), 100);
    let publishing = tokio::spawn(async move {
        loop {
            if outbox.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    for n in 0..20 {
        publisher
            .publish("t", QoS::AtLeastOnce, false, format!("m-{n}"))
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let expected: HashSet<String> = (0..20).map(|n| format!("m-{n}")).collect();
    loop {
        let taken: HashSet<String> = taken.lock().unwrap().iter().cloned().collect();
        if taken == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still missing after 15 s: {:?}",
            expected.difference(&taken).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publishing.abort();
    pipeline.stopper().cancel();
    pipeline.wait().await.unwrap();
    broker.stop().await;
}
