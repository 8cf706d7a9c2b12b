//! MQTT connection settings shared by the `mqtt` source and sink.

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{MqttOptions, QoS, Transport};
use tokio_util::sync::CancellationToken;

use crate::stage::BuildError;

/// Where and how to connect; the fields of `[sources.X]` / `[sinks.X]` of type `mqtt`.
pub struct Endpoint<'a> {
    /// The stage connecting: names errors and the default client id.
    pub stage: &'a str,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: &'a str,
    /// Defaults to `sluice-<stage>`; keep it stable so the broker finds the session.
    pub client_id: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// PEM file of the CA that signed the broker's certificate (for `mqtts://`).
    pub ca_file: Option<&'a PathBuf>,
}

impl Endpoint<'_> {
    /// Connection options, or an error naming the stage.
    pub fn options(&self) -> Result<MqttOptions, BuildError> {
        self.parse()
            .map_err(|error| BuildError::stage(self.stage, error))
    }

    fn parse(&self) -> Result<MqttOptions, String> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "url `{}` must start with mqtt:// or mqtts://",
                self.url
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("url `{}` has an invalid port", self.url))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("url `{}` has no host", self.url));
        }
        let client_id = self
            .client_id
            .map_or_else(|| format!("sluice-{}", self.stage), str::to_owned);
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(15));
        // Room for many pending acknowledgements and publishes between polls.
        options.set_request_channel_capacity(10_000);
        if let Some(username) = self.username {
            options.set_credentials(username, self.password.unwrap_or_default());
        }
        if tls {
            let transport = match self.ca_file {
                Some(path) => {
                    let ca = std::fs::read(path).map_err(|error| {
                        format!("cannot read CA file {}: {error}", path.display())
                    })?;
                    Transport::tls(ca, None, None)
                }
                None => Transport::tls_with_default_config(),
            };
            options.set_transport(transport);
        }
        Ok(options)
    }
}

/// The QoS a config's `qos` names: 0 or 1.
pub fn qos(stage: &str, value: u8) -> Result<QoS, BuildError> {
    match value {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        other => Err(BuildError::stage(
            stage,
            format!("`qos` must be 0 or 1, not {other}"),
        )),
    }
}

/// Reconnect pacing shared by the MQTT source and sink: 200 ms, doubling up to 5 s,
/// back to 200 ms after every successful connection.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Self::FIRST)
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Log a connection error and wait before the next attempt. Returns false when
    /// `stop` fired meanwhile.
    pub async fn wait(
        &mut self,
        stage: &str,
        error: &rumqttc::ConnectionError,
        stop: &CancellationToken,
    ) -> bool {
        tracing::warn!(%stage, "MQTT connection: {error}; retrying in {:?}", self.0);
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(self.0) => false,
        };
        self.0 = (self.0 * 2).min(Self::MAX);
        !stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint<'_> {
        Endpoint {
            stage: "s",
            url,
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
        }
    }

    #[test]
    fn parses_urls() {
        let options = endpoint("mqtt://127.0.0.1:1884").options().unwrap();
        assert_eq!(options.broker_address(), ("127.0.0.1".into(), 1884));
        assert_eq!(options.client_id(), "sluice-s");
        assert_eq!(
            endpoint("mqtt://broker")
                .options()
                .unwrap()
                .broker_address()
                .1,
            1883
        );
        assert!(
            endpoint("tcp://x")
                .parse()
                .unwrap_err()
                .contains("must start with mqtt://")
        );
        let error = endpoint("mqtt://x:port").options().unwrap_err().to_string();
        assert_eq!(error, "stage `s`: url `mqtt://x:port` has an invalid port");
    }
}
