//! Kafka client settings shared by the `kafka` source and sink: the brokers, and
//! librdkafka options passed through from the config (`security.protocol`, `sasl.*`,
//! `ssl.*`, ...), except the few the guarantees depend on.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use super::SettingsError;

/// A librdkafka client config: `required` settings, then the user's `options`, which may
/// not touch a required key (that would void at-least-once).
pub fn client_config(
    stage: &str,
    bootstrap_servers: &str,
    options: &BTreeMap<String, String>,
    required: &[(&str, &str)],
) -> Result<ClientConfig, SettingsError> {
    if bootstrap_servers.trim().is_empty() {
        return Err(SettingsError::new(stage, "`bootstrap_servers` is empty"));
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    config.set("client.id", format!("sluice-{stage}"));
    for (key, value) in options {
        if let Some((_, fixed)) = required.iter().find(|(name, _)| name == key) {
            return Err(SettingsError::new(
                stage,
                format!(
                    "option `{key}` is set by Sluice to `{fixed}`: offsets and deliveries are \
                     acknowledged only after the sinks have the events"
                ),
            ));
        }
        if key == "bootstrap.servers" {
            return Err(SettingsError::new(
                stage,
                "set the brokers with `bootstrap_servers`, not in `options`",
            ));
        }
        config.set(key, value);
    }
    for (key, value) in required {
        config.set(*key, *value);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_pass_through_but_cannot_override_the_guarantees() {
        let mut options = BTreeMap::new();
        options.insert("security.protocol".to_owned(), "sasl_ssl".to_owned());
        let config = client_config("in", "127.0.0.1:9092", &options, &[("acks", "all")]).unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("acks"), Some("all"));

        options.insert("acks".to_owned(), "0".to_owned());
        let error = client_config("in", "b:9092", &options, &[("acks", "all")]).unwrap_err();
        assert!(
            error.to_string().contains("option `acks` is set by Sluice"),
            "{error}"
        );
    }
}
