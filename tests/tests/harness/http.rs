//! Bare HTTP/1.0 requests on loopback: what a test asks the host's API and its ingest
//! sources, with nothing between the test and the socket.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A bare HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[])
}

/// A bare HTTP/1.0 GET with extra header lines (`"Authorization: Bearer x"`).
pub fn http_get_with(port: u16, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    http_get_headers(port, path, headers).map(|(status, _, body)| (status, body))
}

/// [`http_get_with`], with the response's headers (names in lower case).
pub fn http_get_headers(
    port: u16,
    path: &str,
    headers: &[&str],
) -> Option<(u16, HashMap<String, String>, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    // A binary body (a plugin) comes back lossily: its status is what tests read.
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    Some((status, headers, body.to_owned()))
}

/// The `config_version` a release's `config.toml` gives its uplinks: what the device's
/// heartbeats report while it runs that release.
pub fn config_version(config: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let value = line.trim().strip_prefix("config_version")?;
        let value = value.trim_start().strip_prefix('=')?.trim();
        Some(value.strip_prefix('"')?.strip_suffix('"')?.to_owned())
    })
}

/// A bare HTTP/1.0 POST on loopback with extra header lines: (status, body). A
/// server that answers before reading the whole body (413) is fine.
pub fn http_post(port: u16, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    http_send("POST", port, path, headers, body)
}

/// A bare HTTP/1.0 PUT of a JSON body on loopback: (status, body).
pub fn http_put(port: u16, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    let mut headers = headers.to_vec();
    headers.push("Content-Type: application/json");
    http_send("PUT", port, path, &headers, body)
}

fn http_send(method: &str, port: u16, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .unwrap();
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
