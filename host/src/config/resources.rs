//! What stages take from the machine and show the network: two stages (or a stage and
//! the API or the embedded broker) cannot listen on one address, two sinks cannot write
//! one directory (their files would interleave and their rotation would race), and a
//! listener that other machines reach needs TLS and authentication unless it says
//! `insecure = true`, and a listener's certificate files must load.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, Diagnostic};
use crate::component::Listening;
use crate::connect::listener::Exposure;

pub fn check(config: &Config, diagnostics: &mut Vec<Diagnostic>) {
    let mut listeners: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if let Some(api) = &config.api {
        let listening = Listening {
            settings: api.listener(),
            span: api.listen.span(),
            authenticated: api.authenticates(),
            auth_key: "admin_token",
        };
        check_exposure("the API (`[api]`)", &listening, diagnostics);
        check_certificates("the API (`[api]`)", &listening, diagnostics);
        let mutual = api
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_file.is_some());
        let tokenless = config.fleet.iter().flat_map(|fleet| &fleet.devices);
        let tokenless: Vec<&str> = tokenless
            .filter(|(_, device)| device.token.is_none())
            .map(|(id, _)| id.as_str())
            .collect();
        if !tokenless.is_empty() && !mutual {
            diagnostics.push(
                Diagnostic::new(
                    Some(api.listen.span()),
                    format!(
                        "fleet devices without a `token` ({}) cannot prove who they are: the API takes no client certificates",
                        tokenless.join(", ")
                    ),
                )
                .with_hint("give each device a `token`, or add `client_ca_file` to the API's `tls`"),
            );
        }
        if !api.admin_certificates.is_empty() && !mutual {
            diagnostics.push(
                Diagnostic::new(
                    Some(api.listen.span()),
                    "`admin_certificates` are set, but the API takes no client certificates",
                )
                .with_hint("add `client_ca_file` to `tls`: the CA that signs them"),
            );
        }
        listeners.insert(listening.settings.listen, "the API (`[api]`)".to_owned());
    }
    if let Some(broker) = &config.broker {
        let owner = "the embedded broker (`[broker]`)";
        let devices = config.fleet.as_ref().is_some_and(|f| !f.devices.is_empty());
        let listening = Listening {
            settings: broker.listener(),
            span: broker.listen.span(),
            authenticated: !broker.users.is_empty() || devices,
            auth_key: "users",
        };
        check_exposure(owner, &listening, diagnostics);
        check_certificates(owner, &listening, diagnostics);
        listeners.insert(*broker.listen.get_ref(), owner.to_owned());
    }
    let mut writers: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (stage, span, declaration) in config.declarations() {
        for listening in declaration.listens {
            let address = listening.settings.listen;
            check_exposure(&format!("stage `{stage}`"), &listening, diagnostics);
            check_certificates(&format!("stage `{stage}`"), &listening, diagnostics);
            if let Some(owner) = listeners.get(&address) {
                diagnostics.push(
                    Diagnostic::new(
                        Some(span.clone()),
                        format!("stage `{stage}` listens on {address}, as {owner} does"),
                    )
                    .with_hint("give each listener its own port"),
                );
            } else {
                listeners.insert(address, format!("stage `{stage}`"));
            }
        }
        for path in declaration.writes {
            let resolved = config.data_dir.join(&path);
            if let Some(owner) = writers.get(&resolved) {
                diagnostics.push(
                    Diagnostic::new(
                        Some(span.clone()),
                        format!(
                            "stage `{stage}` writes {}, as {owner} does",
                            resolved.display()
                        ),
                    )
                    .with_hint("give each sink its own `path`, or feed one sink from both inputs"),
                );
            } else {
                writers.insert(resolved, format!("stage `{stage}`"));
            }
        }
    }
}

/// A listener's certificate, key and client CA must load now, not when it starts.
fn check_certificates(owner: &str, listening: &Listening, diagnostics: &mut Vec<Diagnostic>) {
    let Some(tls) = &listening.settings.tls else {
        return;
    };
    if let Err(error) = tls.server_config() {
        diagnostics.push(
            Diagnostic::new(Some(listening.span.clone()), format!("{owner}: {error}"))
                .with_hint("`tls` names PEM files, relative to the working directory"),
        );
    }
}

/// A listener that other machines reach without TLS or authentication is refused at its
/// `listen`, unless it says `insecure = true`.
fn check_exposure(owner: &str, listening: &Listening, diagnostics: &mut Vec<Diagnostic>) {
    if listening.settings.insecure {
        return;
    }
    let address = listening.settings.listen;
    let allow = "or `insecure = true` to serve it anyway on a network you trust (the host then warns at start)";
    for exposure in listening.settings.exposures(listening.authenticated) {
        let (lacks, fix) = match exposure {
            Exposure::Plaintext => (
                "TLS".to_owned(),
                "add `tls = { cert_file = \"server.crt\", key_file = \"server.key\" }`".to_owned(),
            ),
            Exposure::Unauthenticated if listening.auth_key == "users" => (
                "anyone to authenticate".to_owned(),
                "add `users.NAME = { password = \"${SECRET}\", publish = [...] }` or fleet \
                 devices (they connect with their tokens)"
                    .to_owned(),
            ),
            Exposure::Unauthenticated => {
                let key = listening.auth_key;
                (
                    format!("`{key}`"),
                    format!("set `{key} = \"${{SECRET}}\"` (a token from the environment)"),
                )
            }
        };
        diagnostics.push(
            Diagnostic::new(
                Some(listening.span.clone()),
                format!(
                    "{owner} listens on {address}, which other machines reach, without {lacks}"
                ),
            )
            .with_hint(format!(
                "{fix}, {allow}; a loopback address (127.0.0.1) needs neither"
            )),
        );
    }
}
