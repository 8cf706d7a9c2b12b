//! `type = "mqtt"` sink: publish each event to a topic rendered from the event
//! (`alerts/{device_id}` takes `device_id` from the JSON payload). With QoS 1 an event
//! is acknowledged upstream only when the broker's PUBACK for it arrives.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::mqtt::{Backoff, Endpoint};
use crate::pipeline::{Ack, Batch, SinkError};
use crate::stage::{BuildContext, BuildError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    pub url: String,
    /// Topic template; `{field}` is replaced by that (dotted) field of the JSON payload.
    pub topic: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_qos() -> u8 {
    1
}

impl super::SinkConfig for MqttSinkConfig {
    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        let name = context.stage;
        let qos = crate::mqtt::qos(name, self.qos)?;
        let template =
            Template::parse(&self.topic).map_err(|error| BuildError::stage(name, error))?;
        let endpoint = Endpoint {
            stage: name,
            url: &self.url,
            client_id: self.client_id.as_deref(),
            username: self.username.as_deref(),
            password: self.password.as_deref(),
            ca_file: self.ca_file.as_ref(),
        };
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
            tracker,
            stop: CancellationToken::new(),
            poller: Poller::Idle(Box::new(eventloop)),
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
    tracker: Arc<Mutex<Tracker>>,
    stop: CancellationToken,
    poller: Poller,
}

/// The client's event loop: made when the sink is built, polled (which connects) only
/// once the pipeline starts.
enum Poller {
    Idle(Box<EventLoop>),
    Running(tokio::task::JoinHandle<()>),
    Starting,
}

impl super::Sink for MqttSink {
    fn start(&mut self) {
        if let Poller::Idle(eventloop) = std::mem::replace(&mut self.poller, Poller::Starting) {
            self.poller = Poller::Running(tokio::spawn(poll(
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
                let topic = self.template.render(&event);
                self.tracker.lock().unwrap().queued.push_back(ack.clone());
                if let Err(error) = self
                    .client
                    .publish(topic, self.qos, self.retain, event.payload.clone())
                    .await
                {
                    // Not handed to the client: take it back and return the unsent rest.
                    self.tracker.lock().unwrap().queued.pop_back();
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

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SinkError>> {
        async move {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
            while !self.tracker.lock().unwrap().is_empty() {
                if tokio::time::Instant::now() >= give_up {
                    let tracker = std::mem::take(&mut *self.tracker.lock().unwrap());
                    tracker
                        .queued
                        .iter()
                        .chain(tracker.in_flight.values())
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
            if let Poller::Running(poller) = self.poller {
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
                    // QoS 0 (packet id 0) has no PUBACK: once sent, dropping the token
                    // acknowledges it.
                    if let Some(ack) = ack
                        && pkid != 0
                    {
                        tracker.in_flight.insert(pkid, ack);
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(puback))) => {
                tracker.lock().unwrap().in_flight.remove(&puback.pkid);
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

/// A topic with `{field}` placeholders filled from the JSON payload.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    fn parse(topic: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = topic;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("topic `{topic}` has an unclosed `{{`"))?
                + open;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            parts.push(Part::Field(rest[open + 1..close].to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if topic.contains(['+', '#']) {
            return Err(format!(
                "topic `{topic}` contains a wildcard; publish topics cannot"
            ));
        }
        Ok(Template { parts })
    }

    /// The topic for `event`; a field the payload lacks renders as `_`.
    fn render(&self, event: &Event) -> String {
        let needs_payload = self.parts.iter().any(|p| matches!(p, Part::Field(_)));
        let payload: Option<serde_json::Value> = if needs_payload {
            serde_json::from_slice(&event.payload).ok()
        } else {
            None
        };
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Field(path) => {
                    let value = payload
                        .as_ref()
                        .and_then(|p| path.split('.').try_fold(p, |v, step| v.get(step)));
                    match value {
                        Some(serde_json::Value::String(text)) => text.replace(['/', '+', '#'], "_"),
                        Some(serde_json::Value::Null) | None => "_".to_owned(),
                        Some(other) => other.to_string(),
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_from_the_payload() {
        let template = Template::parse("alerts/{device_id}/{reading.kind}").unwrap();
        let event = Event::new(
            &br#"{"device_id":"s-1","reading":{"kind":"temp"}}"#[..],
            "t",
        );
        assert_eq!(template.render(&event), "alerts/s-1/temp");
        assert_eq!(template.render(&Event::new(&b"{}"[..], "t")), "alerts/_/_");
        assert!(Template::parse("a/+/b").is_err());
    }
}
