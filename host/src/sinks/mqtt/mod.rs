//! `type = "mqtt"` sink: publish each event to a topic rendered from the event
//! (`alerts/{device_id}` takes `device_id` from the JSON payload). With QoS 1 an event
//! is acknowledged upstream only when the broker's PUBACK for it arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::template::Template;
use crate::connect::mqtt::{Backoff, publish_size};
use crate::pipeline::{Ack, Batch, DeadLetter, SinkError};
use crate::component::{BuildContext, BuildError, Declaration};

crate::connect::mqtt::connection_config! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct MqttSinkConfig {
        /// Topic template; `{field}` is replaced by that (dotted) field of the JSON payload.
        pub topic: String,
        #[serde(default = "default_qos")]
        pub qos: u8,
        #[serde(default)]
        pub retain: bool,
    }
}

fn default_qos() -> u8 {
    1
}

impl super::SinkConfig for MqttSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            // A message over `max_packet_bytes` can never be published.
            rejects: true,
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        let name = context.stage;
        let qos = crate::connect::mqtt::qos(name, self.qos)?;
        let template =
            topic_template(&self.topic).map_err(|error| BuildError::stage(name, error))?;
        let endpoint = self.endpoint(name);
        let mut options = endpoint.options()?;
        options.set_clean_session(false);
        let (client, eventloop) = AsyncClient::new(options, 10_000);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        Ok(Box::new(MqttSink {
            stage: Arc::from(name),
            client,
            template,
            qos,
            retain: self.retain,
            max_packet_bytes: self.max_packet_bytes,
            rejected: Vec::new(),
            tracker,
            stop: CancellationToken::new(),
            eventloop: Some(Box::new(eventloop)),
            poller: None,
        }))
    }
}

/// Acknowledgements waiting for the broker.
#[derive(Default)]
struct Tracker {
    /// Published, not yet given a packet id by the event loop (in publish order).
    queued: VecDeque<Ack>,
    /// Sent with QoS 1, waiting for PUBACK.
    in_flight: HashMap<u16, Ack>,
}

impl Tracker {
    fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.in_flight.is_empty()
    }
}

pub struct MqttSink {
    stage: Arc<str>,
    client: AsyncClient,
    template: Template,
    qos: QoS,
    retain: bool,
    max_packet_bytes: usize,
    rejected: Vec<DeadLetter>,
    tracker: Arc<Mutex<Tracker>>,
    stop: CancellationToken,
    /// The client's event loop: made when the sink is built, polled (which connects)
    /// only once the pipeline starts.
    eventloop: Option<Box<EventLoop>>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl super::Sink for MqttSink {
    fn start(&mut self) {
        if let Some(eventloop) = self.eventloop.take() {
            self.poller = Some(tokio::spawn(poll(
                self.stage.clone(),
                *eventloop,
                self.tracker.clone(),
                self.stop.clone(),
            )));
        }
    }

    fn write(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), (Batch, SinkError)>> {
        async move {
            let Batch { events, acks } = batch;
            let mut rest = events.into_iter().zip(acks);
            while let Some((event, ack)) = rest.next() {
                let topic = self.template.render(&event, topic_level);
                let size = publish_size(&topic, event.payload.len());
                if size > self.max_packet_bytes {
                    let reason = format!(
                        "an MQTT message of {size} bytes exceeds max_packet_bytes = {}",
                        self.max_packet_bytes
                    );
                    self.rejected.push(DeadLetter { event, ack, reason });
                    continue;
                }
                self.tracker.lock().unwrap().queued.push_back(ack);
                if let Err(error) = self
                    .client
                    .publish(topic, self.qos, self.retain, event.payload.clone())
                    .await
                {
                    // Not handed to the client: take it back and return the unsent rest.
                    let ack = (self.tracker.lock().unwrap().queued.pop_back())
                        .expect("the token just queued");
                    let mut unsent = Batch::default();
                    unsent.push(event, ack);
                    for (event, ack) in rest {
                        unsent.push(event, ack);
                    }
                    return Err((unsent, error.into()));
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn take_rejected(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.rejected)
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async move {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
            while !self.tracker.lock().unwrap().is_empty() {
                if tokio::time::Instant::now() >= give_up {
                    let tracker = std::mem::take(&mut *self.tracker.lock().unwrap());
                    tracker
                        .queued
                        .into_iter()
                        .chain(tracker.in_flight.into_values())
                        .for_each(Ack::fail);
                    self.stop.cancel();
                    return Err(
                        "the broker did not acknowledge every message before shutdown".into(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = self.client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.stop.cancel();
            if let Some(poller) = self.poller {
                let _ = poller.await;
            }
            Ok(())
        }
        .boxed()
    }
}

async fn poll(
    stage: Arc<str>,
    mut eventloop: EventLoop,
    tracker: Arc<Mutex<Tracker>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                let mut tracker = tracker.lock().unwrap();
                // A packet id already in flight is a retransmission after a reconnect.
                let retransmission = pkid != 0 && tracker.in_flight.contains_key(&pkid);
                if !retransmission {
                    let ack = tracker.queued.pop_front();
                    // QoS 0 (packet id 0) has no PUBACK: once sent, it is delivered as
                    // far as it ever will be.
                    match ack {
                        Some(ack) if pkid != 0 => {
                            tracker.in_flight.insert(pkid, ack);
                        }
                        Some(ack) => ack.delivered(),
                        None => {}
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(puback))) => {
                if let Some(ack) = tracker.lock().unwrap().in_flight.remove(&puback.pkid) {
                    ack.delivered();
                }
            }
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                tracing::info!(%stage, "connected to the MQTT broker");
            }
            // Our own DISCONNECT went out: the connection is over by design.
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                if !backoff.wait(&stage, &error, &stop).await {
                    return;
                }
            }
        }
    }
}

/// The MQTT sink's topic: a template that adds no level and no wildcard of its own.
fn topic_template(topic: &str) -> Result<Template, String> {
    if topic.contains(['+', '#']) {
        return Err(format!(
            "topic `{topic}` contains a wildcard; publish topics cannot"
        ));
    }
    Template::parse(topic, "topic").map_err(|error| error.to_string())
}

/// A field's text inside a topic: no `/` (a new level) and no wildcard.
fn topic_level(text: &str) -> String {
    text.replace(['/', '+', '#'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn fields_add_no_level_and_no_wildcard() {
        let template = topic_template("alerts/{device_id}").unwrap();
        let event = Event::new(&br#"{"device_id":"a/+#"}"#[..], "t");
        assert_eq!(template.render(&event, topic_level), "alerts/a___");
        assert!(topic_template("a/+/b").is_err());
    }
}
