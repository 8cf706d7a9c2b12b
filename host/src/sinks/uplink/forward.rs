//! The uplink's forwarder: reads the buffer in order and publishes with QoS 1, a window
//! of messages in flight, each deleted from the buffer on its PUBACK. A lost connection
//! throws the client away; the next one (after backoff with jitter) starts again at the
//! first unacknowledged entry, so order per device holds and a message is repeated only
//! if its PUBACK was lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Depth};
use crate::counters;

/// Messages in flight (published, PUBACK not yet in).
const WINDOW: usize = 100;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct Forwarder {
    pub stage: Arc<str>,
    pub options: MqttOptions,
    pub heartbeat: Heartbeat,
}

/// What the device reports, and where.
pub struct Heartbeat {
    pub topic: String,
    pub every: Duration,
    pub device_id: String,
    pub config_version: Option<String>,
}

impl Heartbeat {
    fn message(&self, depth: Depth, started: Instant, connected_for: Duration) -> Vec<u8> {
        serde_json::json!({
            "device_id": self.device_id,
            "config_version": self.config_version,
            "buffered_entries": depth.entries,
            "buffered_bytes": depth.bytes,
            "dropped": depth.dropped,
            "lost": depth.lost,
            "plugin_errors": counters::sum(counters::ERRORS),
            "uptime_secs": started.elapsed().as_secs(),
            "connected_secs": connected_for.as_secs(),
            "sent_at_ms": crate::event::now_ms(),
        })
        .to_string()
        .into_bytes()
    }
}

impl Forwarder {
    pub async fn run(mut self, buffer: Arc<Buffer>, stop: CancellationToken) {
        self.options.set_clean_session(true);
        self.options.set_inflight(WINDOW as u16);
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let outcome = self.connection(&buffer, &stop, started).await;
            report(&self.stage, buffer.depth());
            match outcome {
                Ended::Stopped => return,
                Ended::Lost { was_connected } => {
                    if was_connected {
                        backoff = FIRST_BACKOFF;
                    }
                    let wait = jittered(backoff);
                    tracing::warn!(stage = %self.stage, buffered = buffer.depth().entries, "uplink connection lost; retrying in {wait:?}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One connection, from connect to loss (or stop).
    async fn connection(
        &self,
        buffer: &Arc<Buffer>,
        stop: &CancellationToken,
        started: Instant,
    ) -> Ended {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 2 * WINDOW);
        let mut next = buffer.restart_sending();
        // Sequence numbers published, in order, waiting for their packet id.
        let mut queued: VecDeque<u64> = VecDeque::new();
        let mut in_flight: HashMap<u16, u64> = HashMap::new();
        let mut connected_at: Option<Instant> = None;
        let mut heartbeats = tokio::time::interval(self.heartbeat.every);
        heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        loop {
            // Made before reading, so that an append in between still wakes the loop.
            let appended = buffer.appended.notified();
            if connected_at.is_some() {
                let room = WINDOW.saturating_sub(queued.len() + in_flight.len());
                if room > 0 {
                    let entries = match buffer.read(next, room) {
                        Ok(entries) => entries,
                        Err(error) => {
                            tracing::error!(stage = %self.stage, "cannot read the buffer: {error}");
                            Vec::new()
                        }
                    };
                    for (seq, entry) in entries {
                        if client
                            .try_publish(entry.topic, QoS::AtLeastOnce, false, entry.payload)
                            .is_err()
                        {
                            break;
                        }
                        queued.push_back(seq);
                        next = seq + 1;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = client.try_disconnect();
                    return Ended::Stopped;
                }
                _ = appended, if connected_at.is_some() => {}
                _ = heartbeats.tick(), if connected_at.is_some() => {
                    let connected_for = connected_at.map_or(Duration::ZERO, |at| at.elapsed());
                    let message = self.heartbeat.message(buffer.depth(), started, connected_for);
                    let _ = client.try_publish(self.heartbeat.topic.clone(), QoS::AtMostOnce, false, message);
                }
                _ = gauges.tick() => report(&self.stage, buffer.depth()),
                event = eventloop.poll() => match event {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(stage = %self.stage, from = next, "uplink connected");
                        connected_at = Some(Instant::now());
                    }
                    // QoS 0 (heartbeats) carries packet id 0 and waits for nothing.
                    Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                        if let Some(seq) = queued.pop_front() {
                            in_flight.insert(pkid, seq);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = in_flight.remove(&ack.pkid) {
                            ::metrics::counter!("sluice_uplink_delivered_total", "stage" => self.stage.to_string()).increment(1);
                            if let Err(error) = buffer.ack(seq) {
                                tracing::error!(stage = %self.stage, "cannot record a delivery: {error}");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(stage = %self.stage, "uplink: {error}");
                        return Ended::Lost { was_connected: connected_at.is_some() };
                    }
                },
            }
        }
    }
}

enum Ended {
    Stopped,
    Lost { was_connected: bool },
}

/// The buffer's gauges; first called when the sink is built, so that each reads from
/// the start (a lost count of 0 is there, not absent).
pub fn report(stage: &str, depth: Depth) {
    use crate::counters::{
        UPLINK_BUFFERED_BYTES, UPLINK_BUFFERED_ENTRIES, UPLINK_DROPPED_ENTRIES, UPLINK_LOST_ENTRIES,
    };
    counters::gauge(UPLINK_BUFFERED_ENTRIES, stage).set(depth.entries);
    counters::gauge(UPLINK_BUFFERED_BYTES, stage).set(depth.bytes);
    counters::gauge(UPLINK_DROPPED_ENTRIES, stage).set(depth.dropped);
    counters::gauge(UPLINK_LOST_ENTRIES, stage).set(depth.lost);
}

/// `backoff` plus up to half of it again, so that a fleet does not reconnect in step.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    backoff + backoff.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
