use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

use super::*;

/// A loopback port nothing listens on (just now).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(listen: SocketAddr) -> BrokerConfig {
    BrokerConfig {
        listen: toml::Spanned::new(0..0, listen),
        tls: None,
        max_connections: 100,
        max_inflight: 100,
        max_packet_bytes: crate::connect::mqtt::DEFAULT_MAX_PACKET_BYTES,
        max_session_bytes: 64 << 20,
        users: Default::default(),
        device_publish: vec!["sensors/{device}/#".to_owned()],
        device_subscribe: Vec::new(),
        insecure: false,
    }
}

/// A connected client and its event loop, polled until the broker's CONNACK.
async fn connect(listen: SocketAddr, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let options = MqttOptions::new(id, listen.ip().to_string(), listen.port());
    connect_with(options).await.0
}

/// A client with a persistent session that acknowledges only what it is told to, and
/// whether the broker had its session.
async fn persistent(listen: SocketAddr, id: &str) -> ((AsyncClient, rumqttc::EventLoop), bool) {
    let mut options = MqttOptions::new(id, listen.ip().to_string(), listen.port());
    options.set_clean_session(false);
    options.set_manual_acks(true);
    connect_with(options).await
}

/// A persistent client (see [`persistent`]) subscribed to `filter`, its SUBACK in.
async fn subscribed(
    listen: SocketAddr,
    id: &str,
    filter: &str,
) -> (AsyncClient, rumqttc::EventLoop) {
    let ((client, mut events), _) = persistent(listen, id).await;
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    while !matches!(
        events.poll().await.unwrap(),
        Event::Incoming(Packet::SubAck(_))
    ) {}
    (client, events)
}

async fn connect_with(options: MqttOptions) -> ((AsyncClient, rumqttc::EventLoop), bool) {
    let (client, mut events) = AsyncClient::new(options, 1000);
    loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = events.poll().await.unwrap() {
            return ((client, events), ack.session_present);
        }
    }
}

/// Publish `count` QoS 1 messages `0..count` to `topic` and return once the broker has
/// acknowledged every one.
async fn publish_acknowledged(listen: SocketAddr, topic: &str, count: usize) {
    let (publisher, mut outbox) = connect(listen, "publisher").await;
    let topic = topic.to_owned();
    let sending = tokio::spawn(async move {
        for n in 0..count {
            publisher
                .publish(topic.clone(), QoS::AtLeastOnce, false, n.to_string())
                .await
                .unwrap();
        }
        publisher
    });
    let mut acknowledged = 0;
    while acknowledged < count {
        if let Event::Incoming(Packet::PubAck(_)) = outbox.poll().await.unwrap() {
            acknowledged += 1;
        }
    }
    drop(sending.await.unwrap());
}

/// The payloads of the next `count` messages, each acknowledged through `acking` if
/// given (else none is, and no more than the broker's window arrive).
async fn receive(
    events: &mut rumqttc::EventLoop,
    count: usize,
    acking: Option<&AsyncClient>,
) -> Vec<String> {
    let mut payloads = Vec::new();
    while payloads.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("a message within 10 s")
            .unwrap();
        if let Event::Incoming(Packet::Publish(message)) = event {
            payloads.push(String::from_utf8(message.payload.to_vec()).unwrap());
            if let Some(client) = acking {
                client.ack(&message).await.unwrap();
            }
        }
    }
    payloads
}

#[tokio::test]
async fn what_it_acknowledged_survives_a_crash_for_a_persistent_subscriber() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let broker = start(&config(listen), dir.path(), &[], Access::default())
        .await
        .unwrap();
    let (_subscriber, mut inbox) = subscribed(listen, "central", "sensors/#").await;
    // The subscriber takes a window of messages but acknowledges none, as a pipeline
    // that has not yet written them.
    publish_acknowledged(listen, "sensors/a", 500).await;
    assert_eq!(receive(&mut inbox, 100, None).await.len(), 100);
    drop(inbox);
    // Dropped, not stopped: what the broker held only in memory is gone, as in a kill -9.
    drop(broker);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let _broker = start(&config(listen), dir.path(), &[], Access::default())
        .await
        .unwrap();
    let ((subscriber, mut inbox), session_present) = persistent(listen, "central").await;
    assert!(
        session_present,
        "the session and its subscription were kept"
    );
    let again = receive(&mut inbox, 500, Some(&subscriber)).await;
    let expected: Vec<String> = (0..500).map(|n| n.to_string()).collect();
    assert_eq!(again, expected, "every acknowledged message, in order");
    drop(subscriber);
}

#[tokio::test]
async fn acknowledged_messages_leave_the_disk() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _broker = start(&config(listen), dir.path(), &[], Access::default())
        .await
        .unwrap();
    let (subscriber, mut inbox) = subscribed(listen, "central", "t").await;
    publish_acknowledged(listen, "t", 3000).await;
    let mut acknowledged = 0;
    while acknowledged < 3000 {
        if let Event::Incoming(Packet::Publish(message)) = inbox.poll().await.unwrap() {
            subscriber.ack(&message).await.unwrap();
            acknowledged += 1;
        }
    }
    // Flush the last PUBACKs.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            inbox.poll().await.unwrap();
        }
    })
    .await;
    let queued: u64 = walk_bytes(&dir.path().join("broker/sessions"));
    assert!(queued < 64 << 10, "{queued} bytes still queued on disk");
}

/// Bytes of the files under `dir`.
fn walk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[tokio::test]
async fn a_declared_session_holds_messages_published_before_its_client_first_connects() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let local = [LocalSession {
        client_id: "sluice-telemetry".to_owned(),
        filters: vec!["sensors/+/telemetry".to_owned()],
    }];
    let _broker = start(&config(listen), dir.path(), &local, Access::default())
        .await
        .unwrap();
    publish_acknowledged(listen, "sensors/a/telemetry", 10).await;
    let ((_subscriber, mut inbox), session_present) = persistent(listen, "sluice-telemetry").await;
    assert!(session_present);
    assert_eq!(receive(&mut inbox, 10, None).await.len(), 10);
}

#[tokio::test]
async fn a_shared_subscription_is_refused_not_silently_empty() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _broker = start(&config(listen), dir.path(), &[], Access::default())
        .await
        .unwrap();
    let (client, mut events) = connect(listen, "member").await;
    client
        .subscribe("$share/central/sensors/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await.unwrap() {
            assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure]);
            break;
        }
    }
}

#[test]
fn local_sources_are_those_that_name_the_brokers_address() {
    let listen: SocketAddr = "127.0.0.1:18830".parse().unwrap();
    assert!(names("127.0.0.1", 18830, listen));
    assert!(names("localhost", 18830, listen));
    assert!(!names("127.0.0.1", 1883, listen));
    assert!(!names("10.1.2.3", 18830, listen));
    assert!(names("10.1.2.3", 18830, "0.0.0.0:18830".parse().unwrap()));
}

#[tokio::test]
async fn once_started_it_relays_messages_and_once_stopped_it_lets_go_of_its_port() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let broker = start(&config(listen), dir.path(), &[], Access::default())
        .await
        .unwrap();

    let (subscriber, mut inbox) = connect(listen, "sub").await;
    subscriber.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    while !matches!(
        inbox.poll().await.unwrap(),
        Event::Incoming(Packet::SubAck(_))
    ) {}
    let (publisher, mut outbox) = connect(listen, "pub").await;
    publisher
        .publish("t", QoS::AtLeastOnce, false, "hello")
        .await
        .unwrap();
    let delivered = async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = inbox.poll().await.unwrap() {
                return p.payload;
            }
        }
    };
    let sending = async {
        loop {
            outbox.poll().await.unwrap();
        }
    };
    let payload = tokio::select! {
        payload = delivered => payload,
        _ = sending => unreachable!(),
        _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("nothing relayed"),
    };
    assert_eq!(&payload[..], b"hello");

    broker.stop().await;
    assert!(!accepts(listen).await, "the listener is closed");
    let disconnected = tokio::time::timeout(Duration::from_secs(5), async {
        while inbox.poll().await.is_ok() {}
    })
    .await;
    assert!(disconnected.is_ok(), "clients are disconnected");
    std::net::TcpListener::bind(listen).expect("the port is free again");
}

#[tokio::test]
async fn dropping_it_stops_it() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    drop(
        start(&config(listen), dir.path(), &[], Access::default())
            .await
            .unwrap(),
    );
    let released = tokio::time::timeout(Duration::from_secs(5), async {
        while accepts(listen).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "still listening after the handle was dropped"
    );
}

#[tokio::test]
async fn an_address_in_use_is_refused() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let error = start(&config(listen), dir.path(), &[], Access::default())
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        format!("embedded broker on {listen}: the address is already in use")
    );
}

#[tokio::test]
async fn port_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = start(
        &config("127.0.0.1:0".parse().unwrap()),
        dir.path(),
        &[],
        Access::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("give a fixed port"), "{error}");
}

/// Whether something accepts TCP connections at `address`.
async fn accepts(address: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn a_device_cannot_publish_under_another_devices_topics() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let fleet: crate::config::fleet::FleetConfig =
        toml::from_str("groups = {}\n[devices.gw1]\ngroup = \"g\"\ntoken = \"t1\"\n").unwrap();
    let access = Access::new(&config(listen), Some(&fleet));
    let _broker = start(&config(listen), dir.path(), &[], access)
        .await
        .unwrap();
    let (subscriber, mut inbox) = subscribed(listen, "central", "sensors/#").await;

    let mut options = MqttOptions::new("gw1", listen.ip().to_string(), listen.port());
    options.set_credentials("gw1", "t1");
    let ((device, mut outbox), _) = connect_with(options).await;
    for topic in ["sensors/gw2/telemetry", "sensors/gw1/telemetry"] {
        device
            .publish(topic, QoS::AtLeastOnce, false, topic)
            .await
            .unwrap();
    }
    let mut acknowledged = 0;
    while acknowledged < 2 {
        if let Event::Incoming(Packet::PubAck(_)) = outbox.poll().await.unwrap() {
            acknowledged += 1;
        }
    }
    assert_eq!(
        receive(&mut inbox, 1, Some(&subscriber)).await,
        ["sensors/gw1/telemetry"],
        "only its own topic went through"
    );
    let nothing_else = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Event::Incoming(Packet::Publish(message)) = inbox.poll().await.unwrap() {
                return message.topic;
            }
        }
    })
    .await;
    assert!(
        nothing_else.is_err(),
        "the spoofed message was routed: {nothing_else:?}"
    );

    let mut options = MqttOptions::new("gw1-guess", listen.ip().to_string(), listen.port());
    options.set_credentials("gw1", "guess");
    let (_, mut refused) = AsyncClient::new(options, 10);
    let answer = loop {
        match refused.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => break Ok(ack.code),
            Ok(_) => {}
            Err(error) => break Err(error.to_string()),
        }
    };
    assert!(
        format!("{answer:?}").contains("BadUserNamePassword"),
        "a wrong token is refused at CONNECT: {answer:?}"
    );
}

#[test]
fn durable_sources_get_their_sessions_over_tls_too() {
    let text = "[broker]\nlisten = \"127.0.0.1:18831\"\n\
                [sources.plain]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:18831\"\ntopics = [\"a/#\"]\nqos = 1\n\
                [sources.tls]\ntype = \"mqtt\"\nurl = \"mqtts://localhost:18831\"\ntopics = [\"b/#\"]\nqos = 1\n\
                [sources.lossy]\ntype = \"mqtt\"\nurl = \"mqtts://localhost:18831\"\ntopics = [\"c/#\"]\nqos = 0\n\
                [sinks.out]\ntype = \"console\"\ninputs = [\"plain\", \"tls\", \"lossy\"]\n";
    let config = Config::from_text(Path::new("test.toml"), text, |_| None).unwrap();
    let sessions: Vec<(String, Vec<String>)> = crate::broker::local_sessions(&config)
        .into_iter()
        .map(|session| (session.client_id, session.filters))
        .collect();
    assert_eq!(
        sessions,
        [
            ("sluice-plain".to_owned(), vec!["a/#".to_owned()]),
            ("sluice-tls".to_owned(), vec!["b/#".to_owned()]),
        ],
        "QoS 1 sources over mqtt:// and mqtts:// alike; a QoS 0 one keeps no session"
    );
}
