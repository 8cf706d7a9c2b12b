//! The MQTT source over TLS with a username and password, against Mosquitto configured
//! with a CA-signed server certificate and a password file; and the MQTT source and sink
//! presenting client certificates to a Mosquitto that requires them (mutual TLS).

mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::tls;
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

/// Mosquitto on a free port whose one listener requires a client certificate from `ca`
/// (its CN the username), its files and log in `dir`; killed when dropped.
struct MutualTlsMosquitto {
    port: u16,
    child: std::process::Child,
}

impl MutualTlsMosquitto {
    fn start(dir: &Path, ca: &tls::Ca) -> MutualTlsMosquitto {
        let server = ca.server();
        let port = free_port();
        let config = format!(
            "per_listener_settings false\nallow_anonymous false\n\
             listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\nuse_identity_as_username true\n\
             persistence false\nlog_type all\nlog_dest file {}/mosquitto.log\nuser root\n",
            ca.file.display(),
            server.cert.display(),
            server.key.display(),
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), "mosquitto", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        MutualTlsMosquitto { port, child }
    }
}

impl Drop for MutualTlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mosquitto_pub/_sub arguments of a client presenting `pair` on `port`.
fn tool_tls(port: u16, ca: &tls::Ca, pair: &tls::Pair) -> Vec<String> {
    [
        "-h",
        "localhost",
        "-p",
        &port.to_string(),
        "--cafile",
        &ca.file.display().to_string(),
        "--cert",
        &pair.cert.display().to_string(),
        "--key",
        &pair.key.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn the_mqtt_source_and_sink_present_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = tls::Ca::new(d, "mqtt");
    let relay = ca.client("relay");
    let broker = MutualTlsMosquitto::start(d, &ca);
    let port = broker.port;
    let mosquitto_log = || std::fs::read_to_string(d.join("mosquitto.log")).unwrap_or_default();

    // The source (`in/#`) and the sink (to `out/relayed`) present `relay`'s certificate,
    // the second pipeline's source none.
    let pipeline = |api: u16, identity: &str| {
        let connection = format!(
            "url = \"mqtts://localhost:{port}\"\nca_file = \"{}\"\n{identity}",
            ca.file.display()
        );
        let text = format!(
            r#"
data_dir = "{d}/data-{api}"
[api]
listen = "127.0.0.1:{api}"
[sources.incoming]
type = "mqtt"
{connection}
client_id = "relay-in-{api}"
topics = ["in/#"]
qos = 1
[sinks.relayed]
type = "mqtt"
inputs = ["incoming"]
{connection}
client_id = "relay-out-{api}"
topic = "out/relayed"
qos = 1
[sinks.out]
type = "file"
inputs = ["incoming"]
path = "out"
"#,
            d = d.display()
        );
        let path = d.join(format!("pipeline-{api}.toml"));
        std::fs::write(&path, text).unwrap();
        Host::start(&path, api, Stdio::null())
    };
    let with_certificate = format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        relay.cert.display(),
        relay.key.display()
    );
    let host = pipeline(free_port(), &with_certificate);
    let anonymous = pipeline(free_port(), "");
    wait_until(
        Duration::from_secs(30),
        "the subscription over mutual TLS",
        || host.log_text().contains("subscribed"),
    );
    wait_until(
        Duration::from_secs(30),
        "the refusal of the source without a certificate",
        || anonymous.log_text().contains("MQTT connection"),
    );

    // A subscriber to what the sink publishes, itself presenting a certificate.
    let subscriber = ca.client("subscriber");
    const COUNT: usize = 50;
    let sub = Command::new("mosquitto_sub")
        .args(tool_tls(port, &ca, &subscriber))
        .args(["-i", "e2e-subscriber", "-q", "1", "-t", "out/relayed"])
        .args(["-C", &COUNT.to_string(), "-W", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the subscriber", || {
        mosquitto_log().contains("e2e-subscriber 1 out/relayed")
    });
    let publisher = ca.client("publisher");
    for seq in 1..=COUNT {
        run(Command::new("mosquitto_pub")
            .args(tool_tls(port, &ca, &publisher))
            .args(["-q", "1", "-t", &format!("in/{seq}")])
            .args(["-m", &format!(r#"{{"seq":{seq}}}"#)]));
    }
    let output = sub.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let relayed: Vec<u64> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?["seq"].as_u64())
        .collect();
    assert!(
        output.status.success(),
        "{} relayed of {COUNT}: {}\n{stdout}",
        relayed.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut sorted = relayed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=COUNT as u64).collect::<Vec<_>>(), "{stdout}");
    let out = d.join(format!("data-{}/out", host.api_port));
    wait_until(Duration::from_secs(30), "every message in the file", || {
        read_lines(&out).len() >= COUNT
    });
    assert_eq!(read_lines(&out).len(), COUNT);
    // Mosquitto took the certificate's CN as the username.
    assert!(mosquitto_log().contains("u'relay'"), "{}", mosquitto_log());

    // Without a certificate: refused at the handshake, said in the log, nothing in.
    let refused_log = anonymous.log_text();
    assert!(
        refused_log.contains("MQTT connection")
            && refused_log.contains("received fatal alert: CertificateRequired"),
        "{refused_log}"
    );
    assert!(!refused_log.contains("subscribed"), "{refused_log}");
    assert!(read_lines(&d.join(format!("data-{}/out", anonymous.api_port))).is_empty());
}
