//! MQTT from the outside: a Mosquitto broker (Debian's) the tests can pause, stop and
//! restart, and a QoS 1 publisher that returns once the broker has every message.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{free_port, terminate, wait_until};

/// A Mosquitto broker on a free loopback port, persisting to a temporary directory so
/// that a graceful restart keeps queued messages and sessions.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::with_inflight_window(1000)
    }

    /// A broker that sends each client up to `window` unacknowledged QoS 1 messages
    /// ahead (0: no limit, as brokers with large receive windows behave).
    pub fn with_inflight_window(window: u32) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages {window}\nlog_dest file {}/mosquitto.log\nuser root\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: run scripts/setup");
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's process id, for its CPU time and memory in /proc.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Freeze the broker (SIGSTOP): connections stall as in a network outage, and
    /// sessions stay as they are.
    pub fn pause(&self) {
        signal(self.child.as_ref().unwrap(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.as_ref().unwrap(), "-CONT");
    }

    /// Stop gracefully (SIGTERM: it saves its state) and start again on the same port.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            child.wait().unwrap();
        }
        self.spawn();
    }
}

fn signal(child: &Child, signal: &str) {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The telemetry payload of event `seq`, padded to about `size` bytes.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"device_id":"d{:02}","seq":{seq},"temperature":{},"battery":80.5,"pad":""#,
        seq % 16,
        20 + seq % 70
    );
    let mut text = head;
    while text.len() + 2 < size {
        text.push('x');
    }
    text.push_str("\"}");
    text.into_bytes()
}

/// Publish `make(seq)` for every seq with QoS 1 to `topic` and return once the broker
/// has acknowledged every one (retransmitting across broker restarts). `during` runs
/// once `at` messages have gone out.
pub fn publish(
    port: u16,
    topic: &str,
    seqs: std::ops::Range<u64>,
    make: impl Fn(u64) -> Vec<u8> + Send + 'static,
    at: u64,
    during: impl FnOnce(),
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut during = Some(during);
    runtime.block_on(async {
        let mut options =
            MqttOptions::new(format!("e2e-publisher-{}", free_port()), "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_inflight(200);
        options.set_keep_alive(Duration::from_secs(5));
        // Whatever size a test publishes; the host's limits are what is tested.
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let total = seqs.end - seqs.start;
        let topic = topic.to_owned();
        let sender = tokio::spawn(async move {
            for seq in seqs {
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, make(seq))
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0u64;
        let mut sent = 0u64;
        while acked < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                    sent += 1;
                    if sent == at
                        && let Some(action) = during.take()
                    {
                        action();
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = sender.await.unwrap();
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    });
}
