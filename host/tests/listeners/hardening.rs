//! Slow and greedy clients: a slow-header attack does not keep `/health` from answering,
//! and the caps on connections, requests in flight and event-stream readers answer 503.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

const SLOW_CONNECTIONS: usize = 300;

/// Send a request's first header line, then a header byte every 250 ms; how long until
/// the server closed the connection, if it did within 5 s.
async fn slow_headers(address: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nx-slow: ")
        .await
        .unwrap();
    let mut buffer = [0u8; 256];
    while started.elapsed() < Duration::from_secs(5) {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if stream.write_all(b"a").await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test]
async fn a_slow_header_attack_is_cut_off_while_health_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let text = format!(
        "[api]\nlisten = \"{api}\"\nheader_read_timeout_ms = 1500\n[sources.in]\ntype = \"http\"\nlisten = \"{}\"\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out\"\n",
        free_port()
    );
    let host = start(dir.path(), &text).await;
    let attack: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|_| tokio::spawn(slow_headers(api)))
        .collect();
    let mut slowest = Duration::ZERO;
    let probing = Instant::now();
    while probing.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        let (status, body) = http(api, "GET", "/health", "").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "/health answered within {slowest:?}"
    );
    let mut closed = Vec::new();
    for connection in attack {
        closed.extend(connection.await.unwrap());
    }
    assert_eq!(
        closed.len(),
        SLOW_CONNECTIONS,
        "every slow connection was closed"
    );
    let (first, last) = (closed.iter().min().unwrap(), closed.iter().max().unwrap());
    assert!(
        *first >= Duration::from_millis(1400) && *last < Duration::from_secs(3),
        "closed after the 1.5 s header-read timeout: from {first:?} to {last:?}"
    );
    host.drain().await.unwrap();
}

/// A connection that sent a request whose body has not all come: its handler holds one
/// place among the requests in flight.
async fn stuck_request(address: SocketAddr, method: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n{{");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// A kept-alive connection that was served `GET path`, and what it read.
async fn kept_alive(address: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer))
        .await
        .expect("an answer")
        .unwrap();
    (
        stream,
        String::from_utf8_lossy(&buffer[..read]).into_owned(),
    )
}

#[tokio::test]
async fn connections_and_requests_in_flight_past_their_caps_are_answered_503() {
    let dir = tempfile::tempdir().unwrap();
    let (api, ingest) = (free_port(), free_port());
    let text = format!(
        r#"
[api]
listen = "{api}"
max_connections = 3
max_requests_in_flight = 2

[sources.in]
type = "http"
listen = "{ingest}"
max_requests_in_flight = 1

[sinks.out]
type = "file"
inputs = ["in"]
path = "out"
"#
    );
    let host = start(dir.path(), &text).await;
    let settle = || tokio::time::sleep(Duration::from_millis(200));

    // Requests in flight: two API handlers wait for their bodies.
    let stuck = [
        stuck_request(api, "PUT", "/v1/tables/t/keys/a").await,
        stuck_request(api, "PUT", "/v1/tables/t/keys/b").await,
    ];
    settle().await;
    let (status, body) = http(api, "GET", "/health", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many requests in flight"), "{body}");
    drop(stuck);
    settle().await;
    assert_eq!(http(api, "GET", "/health", "").await.0, 200);

    // HTTP ingest has its own cap.
    let stuck = stuck_request(ingest, "POST", "/ingest").await;
    settle().await;
    let (status, body) = http(ingest, "POST", "/ingest", "content-length: 0\r\n").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many requests in flight"), "{body}");
    drop(stuck);

    // Connections: three kept alive fill the API's cap; a fourth is told so and closed.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (stream, answer) = kept_alive(api, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        open.push(stream);
    }
    let (status, body) = http(api, "GET", "/health", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    open.pop();
    settle().await;
    assert_eq!(http(api, "GET", "/health", "").await.0, 200);
    drop(open);
    host.drain().await.unwrap();
}

#[tokio::test]
async fn event_stream_readers_past_a_tables_cap_are_answered_503() {
    let dir = tempfile::tempdir().unwrap();
    let (api, ingest) = (free_port(), free_port());
    let text = format!(
        r#"
[api]
listen = "{api}"

[sources.in]
type = "http"
listen = "{ingest}"

[sinks.latest]
type = "serving"
inputs = ["in"]
table = "latest"
key = "id"
public = true
max_subscribers = 2
"#
    );
    let host = start(dir.path(), &text).await;
    let events = "/v1/tables/latest/events";
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (stream, answer) = kept_alive(api, events).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("text/event-stream"), "{answer}");
        readers.push(stream);
    }
    let (status, body) = http(api, "GET", events, "").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("as many event-stream readers as it takes"),
        "{body}"
    );
    // A reader that leaves gives its place back.
    readers.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_reader, answer) = kept_alive(api, events).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(readers);
    host.drain().await.unwrap();
}
