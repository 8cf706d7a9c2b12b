//! The MQTT source over TLS with a username and password, against Mosquitto configured
//! with a CA-signed server certificate and a password file.

mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificates(dir: &Path) {
    let path = |name: &str| dir.join(name).display().to_string();
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=sluice test CA",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.pem"),
        ]));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-keyout", &path("server.key"), "-out", &path("server.csr")]));
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in", &path("server.csr")])
        .args([
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
        ])
        .args(["-extfile", &path("san.ext"), "-out", &path("server.pem")]));
}

#[test]
fn the_mqtt_source_connects_over_tls_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    run(Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(dir.path().join("passwords"))
        .args(["sensor", "hunter2"]));
    let (tls_port, plain_port) = (free_port(), free_port());
    let d = dir.path().display();
    let config = format!(
        "per_listener_settings false\nallow_anonymous false\npassword_file {d}/passwords\n\
         listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         listener {plain_port} 127.0.0.1\npersistence false\nlog_dest file {d}/mosquitto.log\nuser root\n"
    );
    std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
    let mut broker = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(dir.path().join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "mosquitto", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });

    let pipeline = |password: &str, api: u16| {
        let text = format!(
            r#"
data_dir = "{d}/data-{api}"
[api]
listen = "127.0.0.1:{api}"
[sources.secure]
type = "mqtt"
url = "mqtts://127.0.0.1:{tls_port}"
ca_file = "{d}/ca.pem"
username = "sensor"
password = "{password}"
topics = ["secure/#"]
[sinks.out]
type = "file"
inputs = ["secure"]
path = "out"
"#
        );
        let path = dir.path().join(format!("pipeline-{api}.toml"));
        std::fs::write(&path, text).unwrap();
        Host::start(&path, api, Stdio::null())
    };
    let wrong_api = free_port();
    let refused = pipeline("wrong", wrong_api);
    let host = pipeline("hunter2", free_port());
    wait_until(Duration::from_secs(30), "the TLS subscription", || {
        host.log_text().contains("subscribed")
    });
    run(Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &plain_port.to_string(),
            "-u",
            "sensor",
            "-P",
            "hunter2",
        ])
        .args([
            "-q",
            "1",
            "-t",
            "secure/a",
            "-m",
            r#"{"seq":1,"secret":true}"#,
        ]));
    let out = dir
        .path()
        .join(format!("data-{}", host.api_port))
        .join("out");
    wait_until(Duration::from_secs(30), "the event over TLS", || {
        read_lines(&out).len() == 1
    });
    assert_eq!(read_lines(&out)[0]["secret"], true);
    assert!(
        refused.log_text().contains("MQTT connection"),
        "{}",
        refused.log_text()
    );
    assert!(read_lines(&dir.path().join(format!("data-{wrong_api}")).join("out")).is_empty());
    let _ = broker.kill();
    let _ = broker.wait();
}
