//! Several central hosts on one MQTT shared subscription split the stream. When one is
//! killed the others go on; members keep persistent sessions (at-least-once), so
//! Mosquitto keeps the dead member's in-flight messages, and its share of what arrives
//! meanwhile, in its session until it returns: nothing is lost, and the restarted host
//! delivers them.

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::*;

fn host(broker: &Mosquitto, client: &str) -> Pipeline {
    Pipeline::start(&format!(
        "[sources.in]\ntype = \"mqtt\"\nurl = \"{}\"\ntopics = [\"plant/+/telemetry\"]\n\
         shared_group = \"central\"\nclient_id = \"{client}\"\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out\"\n",
        broker.url()
    ))
}

fn arrivals(hosts: &[&Pipeline]) -> HashMap<u64, usize> {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for host in hosts {
        for (seq, n) in seq_counts(&read_lines(&host.data("out"))) {
            *counts.entry(seq).or_default() += n;
        }
    }
    counts
}

#[test]
fn hosts_in_a_shared_group_split_the_stream_and_survive_a_kill() {
    const TOTAL: u64 = 20_000;
    let broker = Mosquitto::start();
    let mut first = host(&broker, "central-a");
    let second = host(&broker, "central-b");
    // Both have subscribed once their API is ready and a moment has passed for SUBACK.
    wait_until(Duration::from_secs(10), "both subscriptions", || {
        first.host.log_text().contains("subscribed")
            && second.host.log_text().contains("subscribed")
    });
    publish(
        broker.port,
        "plant/p1/telemetry",
        0..TOTAL / 2,
        |seq| payload(seq, 120),
        u64::MAX,
        || {},
    );
    wait_until(Duration::from_secs(60), "the first half", || {
        arrivals(&[&first, &second]).len() as u64 == TOTAL / 2
    });
    let (a, b) = (
        read_lines(&first.data("out")).len(),
        read_lines(&second.data("out")).len(),
    );
    assert!(a > 0 && b > 0, "the broker split the stream: {a} and {b}");

    first.kill_9();
    let before = read_lines(&second.data("out")).len();
    publish(
        broker.port,
        "plant/p2/telemetry",
        TOTAL / 2..TOTAL,
        |seq| payload(seq, 120),
        u64::MAX,
        || {},
    );
    // The survivor goes on taking its share while the other is down.
    wait_until(
        Duration::from_secs(60),
        "the survivor to take new messages",
        || read_lines(&second.data("out")).len() >= before + (TOTAL / 2) as usize / 4,
    );
    // What the killed host held comes back when it does.
    first.restart();
    wait_until(Duration::from_secs(60), "every event", || {
        arrivals(&[&first, &second]).len() as u64 == TOTAL
    });
    let counts = arrivals(&[&first, &second]);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("duplicates after the kill: {duplicates}");
    assert!(duplicates <= 2_000, "{duplicates} duplicates");
}
