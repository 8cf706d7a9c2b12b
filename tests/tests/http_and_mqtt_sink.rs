//! The HTTP ingest source's answers and the MQTT sink's topics.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// POST to the ingest path, with the bearer token when given.
fn post(port: u16, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    http_post(
        port,
        path,
        auth.as_slice()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        body,
    )
}

#[test]
fn http_ingest_answers_after_delivery_and_refuses_bad_requests() {
    let pipeline = HttpPipeline::start(
        "path = \"/v1/events\"\ntoken = \"${INGEST_TOKEN:-s3cret}\"\nmax_body_bytes = 4096",
        "[sinks.out]\ntype = \"file\"\ninputs = [\"ingest\"]\npath = \"out\"",
        Stdio::null(),
    );
    let out = pipeline.data("out");
    let HttpPipeline {
        host,
        ingest,
        dir: _dir,
    } = pipeline;

    let (status, body) = post(
        ingest,
        "/v1/events",
        Some("s3cret"),
        b"{\"seq\":1}\n{\"seq\":2}\n",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":2}"#));
    // 200 means durable: the lines are on disk already.
    assert_eq!(seq_counts(&read_lines(&out)).len(), 2);

    assert_eq!(
        post(
            ingest,
            "/v1/events",
            Some("s3cret"),
            br#"[{"seq":3},{"seq":4}]"#
        )
        .0,
        200
    );
    assert_eq!(post(ingest, "/v1/events", None, b"{\"seq\":5}").0, 401);
    assert_eq!(
        post(ingest, "/v1/events", Some("wrong"), b"{\"seq\":5}").0,
        401
    );
    let (status, body) = post(
        ingest,
        "/v1/events",
        Some("s3cret"),
        b"{\"seq\":6}\nnot json\n",
    );
    assert_eq!(status, 400);
    assert!(body.contains("line 2: invalid JSON"), "{body}");
    assert_eq!(
        post(ingest, "/v1/events", Some("s3cret"), &vec![b' '; 10_000]).0,
        413
    );
    assert_eq!(
        seq_counts(&read_lines(&out)).len(),
        4,
        "refused requests deliver nothing"
    );
    assert!(host.stop().success());
}

#[test]
fn the_mqtt_sink_publishes_to_topics_rendered_from_each_event() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = dir.path().join("sink.toml");
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[sources.in]
type = "mqtt"
url = "{url}"
topics = ["in/#"]
[sinks.out]
type = "mqtt"
inputs = ["in"]
url = "{url}"
topic = "out/{{device_id}}/telemetry"
qos = 1
"#,
            data = dir.path().join("data").display(),
            url = broker.url()
        ),
    )
    .unwrap();
    let mut options = MqttOptions::new("e2e-subscriber", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 100);
    client.subscribe("out/#", QoS::AtLeastOnce).unwrap();
    let received = std::thread::spawn(move || {
        let mut topics = Vec::new();
        for event in connection.iter() {
            if let Ok(Event::Incoming(Packet::Publish(publish))) = event {
                topics.push(publish.topic);
                if topics.len() == 32 {
                    break;
                }
            }
        }
        topics
    });
    std::thread::sleep(Duration::from_millis(300));
    let _host = Host::start(&config, api, Stdio::null());
    publish(
        broker.port,
        "in/x",
        0..32,
        |seq| payload(seq, 100),
        0,
        || (),
    );
    let mut topics = received.join().unwrap();
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), 16, "{topics:?}");
    assert!(
        topics.contains(&"out/d07/telemetry".to_owned()),
        "{topics:?}"
    );
}
