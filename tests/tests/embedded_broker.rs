//! The embedded broker (`[broker]`) in the quickstart's shape: devices' uplinks publish
//! into the central host's own broker, and the central pipeline reads from it. A PUBACK
//! from that broker lets a device delete what it buffered, so the broker must keep what
//! it acknowledged: a `kill -9` of the central host loses nothing.

mod harness;

use std::time::Duration;

use harness::readings::{arrivals, audit, highest};
use harness::*;

/// The central host: its embedded broker on `broker_port`, every telemetry message into
/// `out`. The source holds a batch up to two seconds, so that at any moment some
/// messages the broker acknowledged are not yet written.
fn central(broker_port: u16) -> Pipeline {
    Pipeline::start(&format!(
        r#"
[broker]
listen = "127.0.0.1:{broker_port}"

[sources.telemetry]
type = "mqtt"
url = "mqtt://127.0.0.1:{broker_port}"
topics = ["sensors/+/telemetry"]
batch_size = 100000
batch_timeout_ms = 2000

[sinks.out]
type = "file"
inputs = ["telemetry"]
path = "out"
"#
    ))
}

/// A device: five simulated sensors every 10 ms through its durable uplink.
fn device(broker_port: u16) -> Pipeline {
    Pipeline::start(&sensors_to_uplink(
        &format!("mqtt://127.0.0.1:{broker_port}"),
        "gateway-1",
        5,
        10,
        "path = \"buffer\", max_bytes = 67108864",
    ))
}

#[test]
fn a_killed_central_host_loses_nothing_its_broker_acknowledged() {
    let broker_port = free_port();
    let mut central = central(broker_port);
    let device = device(broker_port);
    let out = central.data("out");
    for round in 0..3 {
        let before = arrivals(&out).values().map(Vec::len).sum::<usize>();
        wait_until(
            Duration::from_secs(60),
            &format!("readings in round {round}"),
            || arrivals(&out).values().map(Vec::len).sum::<usize>() > before + 500,
        );
        // Mid-batch: up to two seconds of acknowledged messages are only in the broker.
        std::thread::sleep(Duration::from_millis(1300));
        central.kill_9();
        std::thread::sleep(Duration::from_secs(1));
        central.restart();
    }
    let at_last_kill = highest(&arrivals(&out));
    wait_until(
        Duration::from_secs(60),
        "readings made after the last restart from every sensor",
        || {
            let now = highest(&arrivals(&out));
            now.len() == 5
                && at_last_kill
                    .iter()
                    .all(|(device, seq)| now.get(device).is_some_and(|n| *n > seq + 300))
        },
    );
    let audit = audit(&arrivals(&out));
    eprintln!("{audit:?}");
    assert_eq!(
        audit.missing, 0,
        "every reading the broker acknowledged reached the central files"
    );
    assert!(
        audit.in_order,
        "each sensor's first arrivals keep their order"
    );
    drop(device);
}
