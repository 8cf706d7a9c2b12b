//! The embedded broker's listener as a client sees it: MQTT over TLS with a certificate
//! from its files, plaintext to the TLS port refused, and the secure defaults
//! `validate` enforces on an address other machines reach.

#[path = "listeners/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use support::*;

/// What a client's first connection attempt gets: its CONNACK, or the error.
async fn first_answer(options: MqttOptions) -> Result<rumqttc::ConnAck, String> {
    let (_, mut events) = AsyncClient::new(options, 10);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await
    .expect("an answer within 10 s")
}

fn tls_options(port: u16, roots: rustls::RootCertStore) -> MqttOptions {
    sluice::tls::use_ring();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut options = MqttOptions::new("tls-client", "localhost", port);
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(
        std::sync::Arc::new(client),
    )));
    options
}

#[tokio::test]
async fn the_broker_speaks_tls_with_its_certificate_and_refuses_plaintext_and_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let tls = ca.server("broker").write(dir.path());
    let port = free_port().port();
    let host = start(
        dir.path(),
        &format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n{tls}\n\n\
             [sources.in]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopics = [\"t\"]\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out\"\n"
        ),
    )
    .await;
    let ack = first_answer(tls_options(port, ca.roots())).await.unwrap();
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);

    let (client, mut events) = AsyncClient::new(tls_options(port, ca.roots()), 10);
    client.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    client
        .publish("t", QoS::AtLeastOnce, false, "over tls")
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::Publish(message)) = events.poll().await.unwrap() {
                return message.payload;
            }
        }
    })
    .await
    .expect("the message comes back over TLS");
    assert_eq!(&echoed[..], b"over tls");

    let plaintext = first_answer(MqttOptions::new("plain", "127.0.0.1", port)).await;
    assert!(
        plaintext.is_err(),
        "plaintext to the TLS port: {plaintext:?}"
    );
    let stranger = first_answer(tls_options(port, Ca::new("another CA").roots())).await;
    let error = stranger.expect_err("a client trusting another CA");
    assert!(error.contains("UnknownIssuer"), "{error}");
    host.drain().await.unwrap();
}

#[tokio::test]
async fn a_broker_other_machines_reach_needs_tls_and_someone_to_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().port();
    let plain = format!(
        "[broker]\nlisten = \"0.0.0.0:{port}\"\n\n\
         [sources.in]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopics = [\"t\"]\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out\"\n"
    );
    let report = refused(dir.path(), &plain);
    for expected in [
        "refused.toml:2:10\n".to_owned(),
        format!(
            "the embedded broker (`[broker]`) listens on 0.0.0.0:{port}, which other machines reach, without TLS"
        ),
        format!(
            "the embedded broker (`[broker]`) listens on 0.0.0.0:{port}, which other machines reach, without anyone to authenticate"
        ),
        "or `insecure = true`".to_owned(),
    ] {
        assert!(report.contains(&expected), "{expected:?} in:\n{report}");
    }
    let ca = Ca::new("test CA");
    let tls = ca.server("broker").write(dir.path());
    let secured = plain.replace(
        "\n\n[sources",
        &format!(
            "\n{tls}\nusers.central = {{ password = \"pw\", subscribe = [\"#\"] }}\n\n[sources"
        ),
    );
    start(dir.path(), &secured).await.drain().await.unwrap();
}
