//! Who may connect to the embedded broker, and where each may publish and subscribe.
//!
//! A client is one of: a user of `[broker.users]` (username and password), a device of
//! `[fleet]` (username = its id, password = its fleet token; a revoked one is refused),
//! a client whose certificate (verified against the broker's `tls.client_ca_file`)
//! names such a device or user (then no password is needed, and a username, if given,
//! must be the one named), or a process on this machine that presents no credentials
//! (the host's own sources and sinks, loopback only). A device may publish and subscribe only under the topics
//! `device_publish` and `device_subscribe` give it, with `{device}` its own id, so that
//! one compromised gateway can write neither another's data nor its heartbeats.
//! Anyone else is refused, unless the broker has no users and no devices and its
//! config says `insecure = true`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rumqttc::mqttbytes::matches;
use rumqttc::{ConnectReturnCode, Login};

use crate::config::BrokerConfig;
use crate::config::fleet::FleetConfig;
use crate::connect::certs::PeerNames;
use crate::connect::token::{self, BearerToken, Presented};

/// Who the broker admits, built from a config's `[broker]` and `[fleet]`. The default
/// admits local clients only.
#[derive(Default)]
pub struct Access {
    users: BTreeMap<String, User>,
    /// The devices not revoked, and their tokens (a device may have none and come with
    /// a certificate).
    devices: Vec<(String, Option<BearerToken>)>,
    revoked: Vec<String>,
    device_publish: Vec<String>,
    device_subscribe: Vec<String>,
    /// Clients without credentials from anywhere (`insecure = true`, nothing to check).
    anonymous: bool,
}

struct User {
    password: BearerToken,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

/// What an admitted client may do.
#[derive(Debug)]
pub struct Grant {
    /// Who it is, for logs.
    pub who: String,
    /// Topic filters it may publish to and subscribe within; `None`: everything.
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

impl Access {
    pub fn new(broker: &BrokerConfig, fleet: Option<&FleetConfig>) -> Access {
        let users: BTreeMap<String, User> = broker
            .users
            .iter()
            .map(|(name, user)| {
                let user = User {
                    password: BearerToken::new(&user.password),
                    publish: user.publish.clone(),
                    subscribe: user.subscribe.clone(),
                };
                (name.clone(), user)
            })
            .collect();
        let fleet = fleet.iter().flat_map(|fleet| fleet.devices.iter());
        let devices: Vec<(String, Option<BearerToken>)> = fleet
            .clone()
            .filter(|(_, device)| !device.revoked)
            .map(|(id, device)| (id.clone(), device.token.clone()))
            .collect();
        let revoked = fleet
            .filter(|(_, device)| device.revoked)
            .map(|(id, _)| id.clone())
            .collect();
        let anonymous = users.is_empty() && devices.is_empty() && broker.insecure;
        Access {
            users,
            devices,
            revoked,
            device_publish: broker.device_publish.clone(),
            device_subscribe: broker.device_subscribe.clone(),
            anonymous,
        }
    }

    /// Whether anyone at all can be admitted from another machine.
    pub fn authenticates(&self) -> bool {
        !self.users.is_empty() || !self.devices.is_empty()
    }

    /// Admit a client connecting from `peer` with `login`, or say why not.
    pub fn admit(&self, peer: &Peer, login: Option<&Login>) -> Result<Grant, ConnectReturnCode> {
        if let Some(names) = &peer.certificate {
            if names.find(&self.revoked).is_some() {
                return Err(ConnectReturnCode::NotAuthorized);
            }
            let device = names.find(self.devices.iter().map(|(id, _)| id));
            let user = names.find(self.users.keys());
            if let Some(named) = device.or(user) {
                if login.is_some_and(|login| login.username != named) {
                    return Err(ConnectReturnCode::NotAuthorized);
                }
                return Ok(match device {
                    Some(id) => self.device_grant(id),
                    None => user_grant(named, &self.users[named]),
                });
            }
        }
        let peer = peer.address;
        let Some(login) = login else {
            let local = peer.is_some_and(|peer| peer.ip().is_loopback());
            return if local || self.anonymous {
                Ok(Grant::everything(if local {
                    "a local client"
                } else {
                    "anonymous"
                }))
            } else {
                Err(ConnectReturnCode::NotAuthorized)
            };
        };
        let presented = Presented::secret(login.password.as_bytes());
        if let Some(user) = self.users.get(&login.username) {
            return if user.password.matches(&presented) {
                Ok(user_grant(&login.username, user))
            } else {
                Err(ConnectReturnCode::BadUserNamePassword)
            };
        }
        if self.revoked.contains(&login.username) {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        let tokens = self.devices.iter();
        let device = token::find(
            &presented,
            tokens.filter_map(|(id, token)| Some((id.as_str(), token.as_ref()?))),
        );
        match device {
            Some(id) if id == login.username => Ok(self.device_grant(id)),
            _ => Err(ConnectReturnCode::BadUserNamePassword),
        }
    }

    fn device_grant(&self, id: &str) -> Grant {
        Grant {
            who: format!("device {id}"),
            publish: Some(expand(&self.device_publish, "device", id)),
            subscribe: Some(expand(&self.device_subscribe, "device", id)),
        }
    }
}

fn user_grant(name: &str, user: &User) -> Grant {
    Grant {
        who: format!("user {name}"),
        publish: Some(expand(&user.publish, "user", name)),
        subscribe: Some(expand(&user.subscribe, "user", name)),
    }
}

/// Where a client connects from, and what its certificate names (over mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub address: Option<SocketAddr>,
    pub certificate: Option<PeerNames>,
}

impl Grant {
    fn everything(who: &str) -> Grant {
        Grant {
            who: who.to_owned(),
            publish: None,
            subscribe: None,
        }
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|filters| filters.iter().any(|filter| matches(topic, filter)))
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| within(filter, a)))
    }
}

/// `filters` with `{placeholder}` replaced by `value`. A value with a wildcard or a
/// level separator could widen a filter, so such an id gets no topics at all.
fn expand(filters: &[String], placeholder: &str, value: &str) -> Vec<String> {
    if value.contains(['+', '#', '/']) || value.is_empty() {
        return Vec::new();
    }
    let pattern = format!("{{{placeholder}}}");
    filters
        .iter()
        .map(|filter| filter.replace(&pattern, value))
        .collect()
}

/// Whether every topic `requested` matches is matched by `allowed` too.
fn within(requested: &str, allowed: &str) -> bool {
    let mut requested = requested.split('/');
    let mut allowed = allowed.split('/');
    loop {
        match (requested.next(), allowed.next()) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("#"), _) | (None, Some(_)) | (Some(_), None) => return false,
            (Some(_), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(level), Some(other)) if level == other => {}
            (Some(_), Some(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(broker: &str, fleet: &str) -> Access {
        let broker: BrokerConfig =
            toml::from_str(&format!("listen = \"0.0.0.0:8883\"\n{broker}")).unwrap();
        let fleet = match fleet {
            "" => "devices = {}".to_owned(),
            devices => devices.to_owned(),
        };
        let fleet: FleetConfig = toml::from_str(&format!("groups = {{}}\n{fleet}")).unwrap();
        Access::new(&broker, Some(&fleet))
    }

    fn login(username: &str, password: &str) -> Login {
        Login::new(username, password)
    }

    const REMOTE: Peer = Peer {
        address: Some(SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)),
            40000,
        )),
        certificate: None,
    };

    /// A remote client whose verified certificate names `name`.
    fn certified(name: &str) -> Peer {
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Peer {
            certificate: Some(PeerNames::of(certificate.der())),
            ..REMOTE
        }
    }
    const FLEET: &str = "[devices.gw1]\ngroup = \"g\"\ntoken = \"t1\"\n\
                         [devices.gw2]\ngroup = \"g\"\ntoken = \"t2\"\n\
                         [devices.gw3]\ngroup = \"g\"\ntoken = \"t3\"\nrevoked = true\n";

    #[test]
    fn a_device_is_admitted_by_its_own_token_and_confined_to_its_topics() {
        let access = access("", FLEET);
        let grant = access.admit(&REMOTE, Some(&login("gw1", "t1"))).unwrap();
        assert!(grant.may_publish("sensors/gw1/telemetry"));
        assert!(grant.may_publish("sluice/devices/gw1/heartbeat"));
        assert!(!grant.may_publish("sensors/gw2/telemetry"));
        assert!(!grant.may_publish("sluice/devices/gw2/heartbeat"));
        assert!(!grant.may_subscribe("sensors/#"));
        assert_eq!(
            access.admit(&REMOTE, Some(&login("gw1", "t2"))).err(),
            Some(ConnectReturnCode::BadUserNamePassword),
            "another device's token"
        );
        assert_eq!(
            access.admit(&REMOTE, Some(&login("gw3", "t3"))).err(),
            Some(ConnectReturnCode::NotAuthorized),
            "a revoked device"
        );
    }

    #[test]
    fn only_local_clients_need_no_credentials_unless_insecure() {
        let access = access("", FLEET);
        assert_eq!(
            access.admit(&REMOTE, None).err(),
            Some(ConnectReturnCode::NotAuthorized)
        );
        let local = Peer {
            address: Some("127.0.0.1:40000".parse().unwrap()),
            certificate: None,
        };
        assert!(
            access
                .admit(&local, None)
                .unwrap()
                .may_publish("anything/at/all")
        );
        let open = super::tests::access("insecure = true", "");
        assert!(open.admit(&REMOTE, None).is_ok());
        let checked = super::tests::access("insecure = true", FLEET);
        assert!(
            checked.admit(&REMOTE, None).is_err(),
            "with devices to check, insecure admits no anonymous client"
        );
    }

    #[test]
    fn a_certificate_naming_a_device_admits_it_without_a_password() {
        let access = access(
            "[users.central]\npassword = \"pw\"\npublish = [\"alerts/#\"]",
            FLEET,
        );
        let grant = access.admit(&certified("gw1"), None).unwrap();
        assert_eq!(grant.who, "device gw1");
        assert!(grant.may_publish("sensors/gw1/telemetry"));
        assert!(!grant.may_publish("sensors/gw2/telemetry"));
        assert!(
            access
                .admit(&certified("gw1"), Some(&login("gw1", "")))
                .is_ok(),
            "the username it names"
        );
        assert_eq!(
            access
                .admit(&certified("gw1"), Some(&login("gw2", "t2")))
                .err(),
            Some(ConnectReturnCode::NotAuthorized),
            "another device's name and token beside gw1's certificate"
        );
        assert_eq!(
            access.admit(&certified("gw3"), None).err(),
            Some(ConnectReturnCode::NotAuthorized),
            "a revoked device's certificate"
        );
        let user = access.admit(&certified("central"), None).unwrap();
        assert!(user.may_publish("alerts/x"));
        assert_eq!(
            access.admit(&certified("stranger"), None).err(),
            Some(ConnectReturnCode::NotAuthorized),
            "a certificate naming nobody is no credential"
        );
        assert!(
            access
                .admit(&certified("stranger"), Some(&login("gw2", "t2")))
                .is_ok(),
            "tokens keep working beside certificates"
        );
    }

    #[test]
    fn a_user_has_the_topics_its_config_gives() {
        let access = access(
            "[users.central]\npassword = \"pw\"\npublish = [\"alerts/#\"]\nsubscribe = [\"sensors/#\"]",
            "",
        );
        let grant = access
            .admit(&REMOTE, Some(&login("central", "pw")))
            .unwrap();
        assert!(grant.may_publish("alerts/gw1"));
        assert!(!grant.may_publish("sensors/gw1/telemetry"));
        assert!(grant.may_subscribe("sensors/+/telemetry"));
        assert_eq!(
            access
                .admit(&REMOTE, Some(&login("central", "wrong")))
                .err(),
            Some(ConnectReturnCode::BadUserNamePassword)
        );
    }

    #[test]
    fn a_filter_is_within_another_only_if_it_matches_no_more() {
        assert!(within("sensors/gw1/#", "sensors/gw1/#"));
        assert!(within("sensors/gw1/+/telemetry", "sensors/gw1/#"));
        assert!(within("sensors/gw1/a", "sensors/+/a"));
        assert!(
            within("sensors/gw1", "sensors/gw1/#"),
            "# matches its parent too"
        );
        assert!(!within("sensors/#", "sensors/gw1/#"));
        assert!(!within("sensors/+/a", "sensors/gw1/a"));
        assert!(!within("sensors/gw2/a", "sensors/gw1/#"));
        assert!(!within("sensors/gw1/a/b", "sensors/gw1/+"));
        assert!(!within("#", "sensors/#"));
    }

    #[test]
    fn an_id_that_would_widen_a_filter_gets_no_topics() {
        let filters = vec!["sensors/{device}/#".to_owned()];
        assert_eq!(expand(&filters, "device", "gw1"), ["sensors/gw1/#"]);
        assert!(expand(&filters, "device", "+").is_empty());
        assert!(expand(&filters, "device", "a/b").is_empty());
        assert!(expand(&filters, "device", "#").is_empty());
    }
}
