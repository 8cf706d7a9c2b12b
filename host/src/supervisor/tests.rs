//! The supervisor in process: real sockets, a real embedded broker, files on disk.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ReplaceError, Supervisor};
use crate::config::Config;

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A config in `dir` named `name`: an HTTP source on `ingest` into a file sink `out`.
fn config(dir: &Path, name: &str, ingest: SocketAddr, extra: &str) -> Config {
    let file = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"data_dir = "{data}"
{extra}
[sources.ingest]
type = "http"
listen = "{ingest}"

[sinks.out]
type = "file"
inputs = ["ingest"]
path = "{name}"
"#,
        data = dir.join("data").display(),
    );
    std::fs::write(&file, text).unwrap();
    Config::load(&file).unwrap_or_else(|errors| panic!("{}", errors.report()))
}

/// One HTTP/1.1 request; the status code and the body.
async fn request(address: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// The next message the client receives, counting the connections it makes meanwhile.
async fn next_message(events: &mut rumqttc::EventLoop, connections: &mut usize) -> String {
    loop {
        match events.poll().await.expect("the broker stays up") {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => *connections += 1,
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)) => {
                return String::from_utf8_lossy(&publish.payload).into_owned();
            }
            _ => {}
        }
    }
}

/// Everything the file sink wrote under `data/<dir>`.
fn stored(root: &Path, dir: &str) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(root.join("data").join(dir)).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    text
}

#[tokio::test]
async fn a_config_with_a_broker_reloads_keeping_the_broker_and_the_api_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (api, broker) = (free_port(), free_port());
    let services = format!("[api]\nlisten = \"{api}\"\n[broker]\nlisten = \"{broker}\"\n");
    let (first, second) = (free_port(), free_port());
    let mut supervisor = Supervisor::start(config(dir.path(), "a", first, &services))
        .await
        .unwrap();

    // A client of the embedded broker, connected before the reload.
    let mut options = rumqttc::MqttOptions::new("watcher", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe("reload/t", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut connections = 0;
    client
        .publish("reload/t", rumqttc::QoS::AtLeastOnce, false, "before")
        .await
        .unwrap();
    assert_eq!(next_message(&mut events, &mut connections).await, "before");
    assert_eq!(request(first, "POST", "/ingest", "{\"n\":1}").await.0, 200);

    supervisor
        .replace(config(dir.path(), "b", second, &services))
        .await
        .unwrap();

    assert_eq!(
        request(api, "GET", "/ready", "").await,
        (200, "ready\n".into())
    );
    assert_eq!(request(second, "POST", "/ingest", "{\"n\":2}").await.0, 200);
    client
        .publish("reload/t", rumqttc::QoS::AtLeastOnce, false, "after")
        .await
        .unwrap();
    assert_eq!(next_message(&mut events, &mut connections).await, "after");
    assert_eq!(connections, 1, "the client never had to reconnect");
    supervisor.drain().await.unwrap();
    assert_eq!(stored(dir.path(), "a"), "{\"n\":1}\n");
    assert_eq!(stored(dir.path(), "b"), "{\"n\":2}\n");
}

#[tokio::test]
async fn a_config_that_cannot_start_is_rolled_back_to_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = free_port();
    let mut supervisor = Supervisor::start(config(dir.path(), "a", ingest, ""))
        .await
        .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let candidate = config(dir.path(), "b", taken.local_addr().unwrap(), "");

    let error = supervisor.replace(candidate).await.unwrap_err();

    assert!(matches!(error, ReplaceError::RolledBack(_)), "{error}");
    assert!(error.to_string().contains("cannot listen"), "{error}");
    assert_eq!(request(ingest, "POST", "/ingest", "{\"n\":1}").await.0, 200);
    assert!(supervisor.config().unwrap().file.ends_with("a.toml"));
    supervisor.drain().await.unwrap();
    assert_eq!(stored(dir.path(), "a"), "{\"n\":1}\n");
}

#[tokio::test]
async fn a_refused_config_leaves_the_running_pipeline_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = free_port();
    let mut supervisor = Supervisor::start(config(dir.path(), "a", ingest, ""))
        .await
        .unwrap();
    assert_eq!(request(ingest, "POST", "/ingest", "{\"n\":1}").await.0, 200);
    let fleet_without_api = "[fleet]\ngroups = {}\ndevices = {}\n";
    let candidate = config(dir.path(), "b", free_port(), fleet_without_api);

    let error = supervisor.replace(candidate).await.unwrap_err();

    assert!(matches!(error, ReplaceError::Refused(_)), "{error}");
    assert!(error.to_string().contains("add `[api] listen"), "{error}");
    // Not even drained: the file sink's open file still takes events.
    assert_eq!(request(ingest, "POST", "/ingest", "{\"n\":2}").await.0, 200);
    supervisor.drain().await.unwrap();
    assert_eq!(stored(dir.path(), "a"), "{\"n\":1}\n{\"n\":2}\n");
}

#[cfg(feature = "jobs")]
#[tokio::test(flavor = "multi_thread")]
async fn a_config_of_jobs_only_runs_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    let text = format!(
        r#"data_dir = "{data}"

[jobs.tick]
type = "command"
every = "1s"
command = "sh"
args = ["-c", "echo {{slot_ms}} >> ticks"]
"#,
        data = dir.path().join("data").display(),
    );
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&file).unwrap_or_else(|errors| panic!("{}", errors.report()));
    let mut supervisor = Supervisor::start(config).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_millis(3500), supervisor.ended()).await;
    assert!(
        ended.is_err(),
        "the host went on without sources: {ended:?}"
    );
    let ticks = std::fs::read_to_string(dir.path().join("ticks")).unwrap_or_default();
    assert!(
        ticks.lines().count() >= 2,
        "its job ran each second: {ticks:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), supervisor.drain())
        .await
        .expect("a stop ends it")
        .unwrap();
}
