//! What stages take from the machine: two stages (or a stage and the API or the embedded
//! broker) cannot listen on one address, and two sinks cannot write one directory
//! (their files would interleave and their rotation would race).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, Diagnostic};

pub fn check(config: &Config, diagnostics: &mut Vec<Diagnostic>) {
    let mut listeners: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if let Some(api) = &config.api {
        listeners.insert(api.listen, "the API (`[api]`)".to_owned());
    }
    if let Some(broker) = &config.broker {
        listeners.insert(broker.listen, "the embedded broker (`[broker]`)".to_owned());
    }
    let mut writers: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (stage, span, declaration) in config.declarations() {
        for address in declaration.listens {
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
