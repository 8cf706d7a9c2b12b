use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::pipeline::{Ack, Batch, DeadLetter, Inlet, Outputs};

/// Outputs of `stage` (each test its own name: the registry is the process's) with a
/// default reader, `routes` each with a reader, and a dead-letter reader; and the
/// readers' receiving ends, kept open.
fn outputs(stage: &str, routes: &[&str]) -> (Outputs, Vec<mpsc::Receiver<Batch>>) {
    let mut receivers = Vec::new();
    let mut inlet = |reader: &str| {
        let (sender, receiver) = mpsc::channel(64);
        receivers.push(receiver);
        Inlet::new(Arc::from(reader), sender)
    };
    let default = vec![inlet("reader")];
    let routes: HashMap<String, Vec<Inlet>> = routes
        .iter()
        .map(|route| (route.to_string(), vec![inlet(route)]))
        .collect();
    let dead = vec![inlet("dead")];
    (
        Outputs::new(Arc::from(stage), default, routes, dead),
        receivers,
    )
}

fn batch(count: usize) -> Batch {
    let mut batch = Batch::default();
    for seq in 0..count {
        batch.push(
            Event::new(format!(r#"{{"seq":{seq}}}"#), "test"),
            Ack::none(),
        );
    }
    batch
}

/// The payloads of the events queued for `tap`, as JSON.
fn sampled(tap: &mut Tap) -> Vec<serde_json::Value> {
    std::iter::from_fn(|| tap.try_recv())
        .map(|event| serde_json::from_slice(&event.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn a_tapped_output_delivers_its_rate_of_events_and_counts_the_rest_as_dropped() {
    let (outputs, mut readers) = outputs("tap-rate", &[]);
    let mut tap = subscribe("tap-rate", None, 10);

    outputs.send(batch(100)).await.unwrap();
    let first = sampled(&mut tap);
    // A second's worth at once, from the front of the batch, as the stage sent them.
    assert_eq!(first.len(), 10);
    assert_eq!(first[3]["seq"], 3);
    assert_eq!(tap.dropped(), 90);
    // The pipeline itself lost nothing.
    assert_eq!(readers[0].try_recv().unwrap().len(), 100);

    tokio::time::sleep(Duration::from_millis(300)).await;
    outputs.send(batch(100)).await.unwrap();
    let later = sampled(&mut tap).len();
    assert!(
        (2..=4).contains(&later),
        "{later} records after 0.3 s at 10/s"
    );
    assert_eq!(tap.dropped() + (first.len() + later) as u64, 200);
}

#[tokio::test]
async fn an_untapped_output_samples_nothing_and_has_no_subscribers() {
    let (outputs, _readers) = outputs("tap-untapped", &["alerts"]);
    outputs.send(batch(10)).await.unwrap();
    let routed = vec![(
        Some(Arc::from("alerts")),
        Event::new("{}", "t"),
        Ack::none(),
    )];
    outputs.send_routed(routed).await.unwrap();
    for route in [None, Some("alerts"), Some("dead_letter")] {
        let point = point("tap-untapped", route);
        assert_eq!(point.subscribers(), 0);
        assert!(point.sample(&batch(3).events).is_none());
    }
}

#[tokio::test]
async fn a_dropped_tap_unsubscribes() {
    let (outputs, _readers) = outputs("tap-dropped", &[]);
    let first = subscribe("tap-dropped", None, 100);
    let second = subscribe("tap-dropped", None, 100);
    let point = point("tap-dropped", None);
    assert_eq!(point.subscribers(), 2);
    drop(first);
    assert_eq!(point.subscribers(), 1);
    drop(second);
    assert_eq!(point.subscribers(), 0);
    outputs.send(batch(5)).await.unwrap();
    assert!(point.sample(&batch(1).events).is_none());
}

#[tokio::test]
async fn a_route_and_the_dead_letters_are_tapped_apart_from_the_default_output() {
    let (outputs, _readers) = outputs("tap-routes", &["alerts"]);
    let mut default = subscribe("tap-routes", None, 100);
    let mut alerts = subscribe("tap-routes", Some("alerts"), 100);
    let mut dead = subscribe("tap-routes", Some("dead_letter"), 100);
    assert_eq!(
        (alerts.stage(), alerts.route()),
        ("tap-routes", Some("alerts"))
    );

    let routed = vec![
        (None, Event::new(r#"{"t":20}"#, "t"), Ack::none()),
        (
            Some(Arc::from("alerts")),
            Event::new(r#"{"t":90}"#, "t"),
            Ack::none(),
        ),
    ];
    outputs.send_routed(routed).await.unwrap();
    let letter = DeadLetter {
        event: Event::new("not json", "t"),
        ack: Ack::none(),
        reason: "no field `t`".into(),
    };
    outputs.dead_letter(vec![letter]).await.unwrap();

    let default = sampled(&mut default);
    assert_eq!(default.len(), 1);
    assert_eq!(default[0]["t"], 20);
    let alerts = sampled(&mut alerts);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["t"], 90);
    // The dead-letter point shows the record that is sent on: the reason with the event.
    let dead = sampled(&mut dead);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["stage"], "tap-routes");
    assert_eq!(dead[0]["reason"], "no field `t`");
    assert_eq!(dead[0]["payload"], "not json");
}

#[tokio::test]
async fn a_tap_outlives_the_outputs_it_was_made_under() {
    let mut tap = subscribe("tap-reload", None, 100);
    let (before, _old) = outputs("tap-reload", &[]);
    before.send(batch(1)).await.unwrap();
    drop(before);
    // A reload builds the stage's outputs again under the same name.
    let (after, _new) = outputs("tap-reload", &[]);
    after.send(batch(2)).await.unwrap();
    assert_eq!(sampled(&mut tap).len(), 3);
}

#[test]
fn a_subscriber_that_does_not_read_loses_events_not_the_pipeline() {
    let tap = subscribe("tap-full", None, 5);
    let point = point("tap-full", None);
    point.offer(&batch(5).events);
    assert_eq!(tap.dropped(), 0);
    std::thread::sleep(Duration::from_millis(1100));
    // The bucket refilled, but the queue still holds a second's worth: never waited for.
    point.offer(&batch(5).events);
    assert_eq!(tap.dropped(), 5);
}

#[test]
fn the_bucket_allows_a_seconds_burst_then_the_rate() {
    let start = Instant::now();
    let mut bucket = TokenBucket::new(100, start);
    assert_eq!(bucket.take(500, start), 100);
    assert_eq!(bucket.take(500, start), 0);
    assert_eq!(bucket.take(500, start + Duration::from_millis(250)), 25);
    // Idle time fills it to one second's worth, no more.
    assert_eq!(bucket.take(500, start + Duration::from_secs(60)), 100);
    assert_eq!(bucket.take(3, start + Duration::from_secs(61)), 3);
}
