//! The MQTT connection of the source: (re)connect, (re)subscribe, pass publishes on to
//! the batching loop. It never waits on the pipeline, so pings and PUBACKs flow while
//! the pipeline pushes back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::acks::{Acks, Ticket};
use crate::connect::mqtt::Backoff;

/// A message handed from the connection to the batching loop, with its place in the
/// acknowledgement order (none for QoS 0).
pub(super) struct Received {
    pub(super) publish: Publish,
    pub(super) ticket: Option<Ticket>,
}

/// What the connection subscribes to, and where acknowledgements are ordered.
pub(super) struct Subscription {
    pub(super) stage: Arc<str>,
    pub(super) topics: Vec<String>,
    pub(super) qos: QoS,
    pub(super) acks: Arc<Acks>,
    /// The configured `max_packet_bytes`.
    pub(super) max_packet_bytes: usize,
}

/// Drive the MQTT connection and pass publishes on through `messages`. After
/// `shutdown` it takes no new messages (the broker keeps them) but keeps the
/// connection for outgoing acknowledgements until our DISCONNECT goes out or
/// `disconnected` fires.
pub(super) async fn poll(
    subscription: Subscription,
    mut eventloop: EventLoop,
    client: AsyncClient,
    messages: mpsc::Sender<Received>,
    shutdown: CancellationToken,
    disconnected: CancellationToken,
) {
    /// What woke the loop.
    enum Step {
        Stop,
        Shutdown,
        Redeliver,
        Room(mpsc::OwnedPermit<Received>),
        Event(Result<MqttEvent, rumqttc::ConnectionError>),
    }
    let Subscription {
        stage,
        topics,
        qos,
        acks,
        max_packet_bytes,
    } = subscription;
    let oversized =
        ::metrics::counter!("sluice_mqtt_oversized_total", "stage" => stage.to_string());
    let redeliveries =
        ::metrics::counter!("sluice_mqtt_redeliveries_total", "stage" => stage.to_string());
    let mut redelivery_pause = RedeliveryPause::default();
    let mut backoff = Backoff::default();
    let mut messages = Some(messages);
    // Messages waiting for room in the pipeline. The event loop must keep turning
    // meanwhile (pings, PUBACKs), so it never waits on the pipeline itself. QoS 1
    // messages are bounded by the broker's in-flight window (we withhold their acks);
    // QoS 0 ones, which nothing can slow down, are dropped beyond a bound.
    let mut waiting: VecDeque<Received> = VecDeque::new();
    let mut dropped_qos0: u64 = 0;
    loop {
        let room = match (&messages, waiting.is_empty()) {
            (Some(sender), false) => Some(sender.clone().reserve_owned()),
            _ => None,
        };
        let step = tokio::select! {
            _ = disconnected.cancelled() => Step::Stop,
            _ = shutdown.cancelled(), if messages.is_some() => Step::Shutdown,
            _ = acks.gave_up.notified(), if messages.is_some() => Step::Redeliver,
            permit = async { room.expect("guarded").await }, if room.is_some() => match permit {
                Ok(permit) => Step::Room(permit),
                Err(_) => Step::Shutdown,
            },
            event = eventloop.poll() => Step::Event(event),
        };
        let event = match step {
            Step::Stop => return,
            Step::Shutdown => {
                // From now on, new messages stay unacknowledged with the broker.
                messages = None;
                waiting.clear();
                continue;
            }
            Step::Redeliver => {
                // The broker delivers a message again only on a new connection; until
                // then the PUBACKs behind it are held and its in-flight window fills.
                // Paced, so that a message that fails every time cannot spin.
                redeliveries.increment(1);
                tracing::warn!(%stage, "a message failed downstream: reconnecting so that the broker delivers it again");
                acks.connection_lost();
                eventloop.clean();
                waiting.retain(|received| received.ticket.is_none());
                let pause = redelivery_pause.next();
                tokio::select! {
                    _ = disconnected.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            Step::Room(permit) => {
                permit.send(
                    waiting
                        .pop_front()
                        .expect("room is asked for only when a message waits"),
                );
                continue;
            }
            Step::Event(event) => event,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(connack))) => {
                backoff.reset();
                // A limit raised to take an oversized message applies to this connection
                // only; the next one is back at the configured limit.
                eventloop
                    .mqtt_options
                    .set_max_packet_size(max_packet_bytes, max_packet_bytes);
                tracing::info!(%stage, session_present = connack.session_present, "connected to the MQTT broker");
                if !connack.session_present {
                    for topic in &topics {
                        if let Err(error) = client.try_subscribe(topic.clone(), qos) {
                            tracing::error!(%stage, topic, "cannot subscribe: {error}");
                        }
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(suback))) => {
                tracing::info!(%stage, codes = ?suback.return_codes, "subscribed");
            }
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) if messages.is_some() => {
                if publish.qos == QoS::AtMostOnce && waiting.len() >= MAX_WAITING_QOS0 {
                    dropped_qos0 += 1;
                    ::metrics::counter!("sluice_mqtt_qos0_dropped_total", "stage" => stage.to_string()).increment(1);
                    if dropped_qos0.is_power_of_two() {
                        tracing::warn!(%stage, dropped = dropped_qos0, "pipeline full: dropping QoS 0 messages (use QoS 1 for at-least-once)");
                    }
                    continue;
                }
                let ticket = (publish.qos != QoS::AtMostOnce).then(|| acks.register(publish.pkid));
                waiting.push_back(Received { publish, ticket });
            }
            // Our own DISCONNECT went out: the connection is over by design.
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                if let Some(size) = crate::connect::mqtt::oversized(&error) {
                    // The broker would send it again on every connection, stalling the
                    // stream for good: take it once, on the next connection, so that the
                    // source dead-letters it and the stream goes on.
                    oversized.increment(1);
                    tracing::error!(%stage, bytes = size, max_packet_bytes,
                        "a message over max_packet_bytes: taking it once to dead-letter it");
                    eventloop
                        .mqtt_options
                        .set_max_packet_size(size, max_packet_bytes);
                }
                // The broker redelivers what this connection left unacknowledged,
                // including the QoS 1 messages still waiting here. The event loop
                // dropped the PUBACKs in its channel already; drop ours, then those
                // the ack task may have passed it since, so none reaches the next
                // connection.
                acks.connection_lost();
                eventloop.clean();
                waiting.retain(|received| received.ticket.is_none());
                if !backoff.wait(&stage, &error, &disconnected).await {
                    return;
                }
            }
        }
    }
}

/// QoS 0 messages held while the pipeline is full, beyond which they are dropped.
const MAX_WAITING_QOS0: usize = 10_000;

/// The wait before a reconnect that asks for a redelivery: none for a failure after a
/// quiet minute, then doubling from 100 ms up to 5 s while failures keep coming.
#[derive(Default)]
struct RedeliveryPause {
    last: Option<(tokio::time::Instant, Duration)>,
}

impl RedeliveryPause {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_secs(60);

    fn next(&mut self) -> Duration {
        let now = tokio::time::Instant::now();
        let pause = match self.last {
            Some((at, pause)) if now.duration_since(at) < Self::QUIET => {
                (pause * 2).clamp(Self::FIRST, Self::MAX)
            }
            _ => Duration::ZERO,
        };
        self.last = Some((now, pause));
        pause
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{MqttOptions, Request};

    use super::*;

    /// The poller relies on `EventLoop::clean` to drop the PUBACKs queued for a lost
    /// connection (and only those): a later rumqttc that kept them would acknowledge,
    /// on the next connection, messages the broker is about to redeliver.
    #[test]
    fn cleaning_the_event_loop_drops_queued_pubacks_only() {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("t", "localhost", 1), 2);
        let mut puback = Publish::new("", QoS::AtLeastOnce, Vec::new());
        puback.pkid = 1;
        client.try_ack(&puback).unwrap();
        client.try_subscribe("a/b", QoS::AtLeastOnce).unwrap();
        assert!(client.try_ack(&puback).is_err(), "the channel is full");
        eventloop.clean();
        assert!(
            matches!(eventloop.pending.make_contiguous(), [Request::Subscribe(_)]),
            "{:?}",
            eventloop.pending
        );
        client.try_ack(&puback).unwrap();
        client.try_ack(&puback).unwrap();
    }
}
