//! The central host's view of its devices' heartbeats: the uplinks publish them to the
//! broker (`sluice/devices/{device_id}/heartbeat`), the central host subscribes
//! (`[fleet.heartbeats]`) and keeps the last one per device for the API and the admin
//! page. Heartbeats come over a broker any client may publish to, so they are taken as
//! untrusted: only known devices, the topic's device must be the payload's, at most
//! [`MAX_HEARTBEAT_BYTES`], and only the fields below are kept.

use std::sync::Arc;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::HeartbeatsConfig;
use super::registry::{FleetState, Heartbeat};

/// A heartbeat larger than this is dropped unread.
pub const MAX_HEARTBEAT_BYTES: usize = 4096;

/// The device a heartbeat on `topic` is about, by `pattern`'s single-level wildcard.
fn topic_device<'a>(pattern: &str, topic: &'a str) -> Option<&'a str> {
    let mut device = None;
    let mut levels = topic.split('/');
    for want in pattern.split('/') {
        let level = levels.next()?;
        match want {
            "+" if device.is_none() => device = Some(level),
            "+" => {}
            _ if want == level => {}
            _ => return None,
        }
    }
    levels.next().is_none().then_some(device).flatten()
}

/// Parse one heartbeat; `None` (logged by the caller) for anything not a device's.
fn parse(pattern: &str, topic: &str, payload: &[u8]) -> Result<(String, Heartbeat), String> {
    if payload.len() > MAX_HEARTBEAT_BYTES {
        return Err(format!(
            "{} bytes, more than {MAX_HEARTBEAT_BYTES}",
            payload.len()
        ));
    }
    let device = topic_device(pattern, topic).ok_or("the topic names no device")?;
    #[derive(Deserialize)]
    struct Wire {
        device_id: String,
        #[serde(flatten)]
        heartbeat: Heartbeat,
    }
    let wire: Wire = serde_json::from_slice(payload).map_err(|error| error.to_string())?;
    if wire.device_id != device {
        return Err(format!(
            "device `{}` published on the topic of `{device}`",
            wire.device_id
        ));
    }
    Ok((wire.device_id, wire.heartbeat))
}

/// Subscribe to the devices' heartbeats until `stop`, when the fleet config names their
/// broker.
pub fn spawn(fleet: &Arc<FleetState>, stop: CancellationToken) {
    if let Some(config) = fleet.config.heartbeats.clone() {
        tokio::spawn(listen(fleet.clone(), config, stop));
    }
}

/// Subscribe until `stop`, reconnecting as the MQTT stages do.
async fn listen(fleet: Arc<FleetState>, config: HeartbeatsConfig, stop: CancellationToken) {
    const STAGE: &str = "fleet-heartbeats";
    let options = match config.endpoint(STAGE).options() {
        Ok(options) => options,
        Err(error) => {
            tracing::error!("fleet heartbeats: {error}");
            return;
        }
    };
    let (client, mut events) = AsyncClient::new(options, 64);
    let mut backoff = crate::connect::mqtt::Backoff::default();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                if let Err(error) = client.try_subscribe(config.topic.clone(), QoS::AtMostOnce) {
                    tracing::error!("fleet heartbeats: cannot subscribe: {error}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                match parse(&config.topic, &publish.topic, &publish.payload) {
                    Ok((device, mut heartbeat)) => {
                        heartbeat.received_ms = crate::event::now_ms();
                        if !fleet.record_heartbeat(&device, heartbeat) {
                            tracing::debug!(device, "fleet: a heartbeat from an unknown device");
                        }
                    }
                    Err(why) => {
                        tracing::debug!(topic = publish.topic, "fleet: a heartbeat dropped: {why}")
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                if !backoff.wait(STAGE, &error, &stop).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATTERN: &str = "sluice/devices/+/heartbeat";

    fn beat(device: &str) -> Vec<u8> {
        serde_json::json!({
            "device_id": device, "config_version": "abc", "buffered_entries": 3,
            "buffered_bytes": 300, "dropped": 1, "plugin_errors": 2, "uptime_secs": 9,
            "connected_secs": 5, "sent_at_ms": 1,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_heartbeat_is_taken_only_from_its_own_devices_topic() {
        let (device, heartbeat) =
            parse(PATTERN, "sluice/devices/gw-1/heartbeat", &beat("gw-1")).unwrap();
        assert_eq!(device, "gw-1");
        assert_eq!(
            (
                heartbeat.buffered_entries,
                heartbeat.dropped,
                heartbeat.plugin_errors
            ),
            (3, 1, 2)
        );
        assert_eq!(
            parse(PATTERN, "sluice/devices/gw-2/heartbeat", &beat("gw-1")).unwrap_err(),
            "device `gw-1` published on the topic of `gw-2`"
        );
        assert!(parse(PATTERN, "sluice/devices/gw-1/heartbeat/x", &beat("gw-1")).is_err());
        assert!(parse(PATTERN, "sluice/devices/gw-1/heartbeat", b"{").is_err());
        let mut huge = beat("gw-1");
        huge.resize(MAX_HEARTBEAT_BYTES + 1, b' ');
        assert!(
            parse(PATTERN, "sluice/devices/gw-1/heartbeat", &huge)
                .unwrap_err()
                .contains("more than")
        );
    }
}
