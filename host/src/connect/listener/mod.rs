//! The host's HTTP listeners, written once for the API (`[api]`) and HTTP ingest (`type =
//! "http"`): HTTPS with rustls (TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN) from
//! certificate files reloaded when they change ([`tls`]), and limits that keep a client
//! from holding the server ([`connection`]): a header-read timeout (slowloris), an idle
//! timeout, and caps on connections and on requests in flight, answered with 503.
//!
//! Secure defaults: a listener on an address other than loopback must have TLS and
//! authentication, or say `insecure = true` ([`ListenerSettings::exposures`]; the config
//! refuses it with the setting's line, the host warns when it is allowed).

mod connection;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use crate::connect::certs::TlsError;
pub use tls::TlsFiles;

/// Declares a config struct whose table holds a listener's keys (`listen`, `tls`,
/// `insecure`, `header_read_timeout_ms`, `idle_timeout_ms`, `max_connections`,
/// `max_requests_in_flight`) beside its own, and its `listener()` settings. A macro
/// rather than `#[serde(flatten)]`, which serde cannot combine with
/// `deny_unknown_fields`.
macro_rules! listener_config {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        $vis struct $name {
            /// The address to listen on.
            pub listen: toml::Spanned<std::net::SocketAddr>,
            /// Serve HTTPS with this certificate and key (PEM files, reloaded when they change).
            #[serde(default)]
            pub tls: Option<$crate::connect::listener::TlsFiles>,
            /// Serve an address other than loopback without TLS or without authentication.
            #[serde(default)]
            pub insecure: bool,
            /// How long a client may take to send a request's headers (or a TLS handshake).
            #[serde(
                rename = "header_read_timeout_ms",
                default = "crate::connect::listener::default_header_read_timeout",
                with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
            )]
            pub header_read_timeout: std::time::Duration,
            /// How long a connection may stay open with no request in progress.
            #[serde(
                rename = "idle_timeout_ms",
                default = "crate::connect::listener::default_idle_timeout",
                with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
            )]
            pub idle_timeout: std::time::Duration,
            /// Connections served at once; those past it are answered 503.
            #[serde(default = "crate::connect::listener::default_max_connections")]
            pub max_connections: usize,
            /// Requests being handled at once; those past it are answered 503.
            #[serde(default = "crate::connect::listener::default_max_requests_in_flight")]
            pub max_requests_in_flight: usize,
            $($fields)*
        }

        impl $name {
            /// The listener's settings, as [`crate::connect::listener::Listener`] takes them.
            pub fn listener(&self) -> $crate::connect::listener::ListenerSettings {
                $crate::connect::listener::ListenerSettings {
                    listen: *self.listen.get_ref(),
                    tls: self.tls.clone(),
                    insecure: self.insecure,
                    limits: $crate::connect::listener::ServerLimits {
                        header_read_timeout: self.header_read_timeout,
                        idle_timeout: self.idle_timeout,
                        max_connections: self.max_connections,
                        max_requests_in_flight: self.max_requests_in_flight,
                    },
                }
            }
        }
    };
}
pub(crate) use listener_config;

pub fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
pub fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
pub fn default_max_connections() -> usize {
    1024
}
pub fn default_max_requests_in_flight() -> usize {
    256
}

/// Where and how a listener serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Allowed to serve what [`ListenerSettings::exposures`] finds.
    pub insecure: bool,
    pub limits: ServerLimits,
}

/// What bounds one listener's clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_requests_in_flight: usize,
}

/// What a listener reachable from the network would give away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// No TLS: requests, tokens and answers travel in clear text.
    Plaintext,
    /// No token guards what the surface serves.
    Unauthenticated,
}

impl ListenerSettings {
    /// What this listener exposes to other machines: nothing on a loopback address
    /// (only this machine reaches it); otherwise the lack of TLS, and of authentication
    /// when `authenticated` is false. `insecure = true` allows them, it does not hide them.
    pub fn exposures(&self, authenticated: bool) -> Vec<Exposure> {
        let mut exposures = Vec::new();
        if self.listen.ip().is_loopback() {
            return exposures;
        }
        if self.tls.is_none() {
            exposures.push(Exposure::Plaintext);
        }
        if !authenticated {
            exposures.push(Exposure::Unauthenticated);
        }
        exposures
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound listener, ready to serve a router.
pub struct Listener {
    tcp: tokio::net::TcpListener,
    /// Names the listener in logs: `API`, `stage \`in\``.
    name: Arc<str>,
    settings: ListenerSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    /// Bind `settings.listen` and load its certificate, so that a taken port or a bad
    /// certificate stops the start. `authenticated`: whether the surface checks tokens.
    pub fn bind(
        name: &str,
        settings: &ListenerSettings,
        authenticated: bool,
    ) -> Result<Listener, ListenerError> {
        let listen = settings.listen;
        let bind_error = |source| ListenerError::Bind { listen, source };
        let tls = match &settings.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config()?)),
            None => None,
        };
        let tcp = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        tcp.set_nonblocking(true).map_err(bind_error)?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(bind_error)?;
        let exposures = settings.exposures(authenticated);
        if settings.insecure && !exposures.is_empty() {
            let without = |exposure| exposures.contains(&exposure);
            tracing::warn!(
                listener = name,
                address = %listen,
                tls = !without(Exposure::Plaintext),
                authenticated = !without(Exposure::Unauthenticated),
                "`insecure = true`: serving the network without TLS or without authentication"
            );
        }
        Ok(Listener {
            tcp,
            name: Arc::from(name),
            settings: settings.clone(),
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap_or(self.settings.listen)
    }

    pub fn settings(&self) -> &ListenerSettings {
        &self.settings
    }

    /// Serve `router` until `shutdown`; then stop accepting and wait for the open
    /// connections to finish their requests.
    pub async fn serve(self, router: axum::Router, shutdown: CancellationToken) {
        let limits = self.settings.limits;
        let shared = Arc::new(connection::Shared {
            router,
            limits,
            tls: self.tls,
            in_flight: Arc::new(Semaphore::new(limits.max_requests_in_flight)),
            name: self.name.clone(),
        });
        // Past `max_connections`, as many again are answered 503; past those, closed.
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let refusals = Arc::new(Semaphore::new(limits.max_connections));
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors, or a connection reset before it was
                        // taken: the listener goes on.
                        tracing::warn!(listener = %self.name, "cannot accept a connection: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admission = match connections.clone().try_acquire_owned() {
                Ok(permit) => connection::Admission {
                    refused: false,
                    _permit: permit,
                },
                Err(_) => match refusals.clone().try_acquire_owned() {
                    Ok(permit) => connection::Admission {
                        refused: true,
                        _permit: permit,
                    },
                    Err(_) => continue,
                },
            };
            tokio::spawn(connection::serve(
                stream,
                shared.clone(),
                admission,
                shutdown.clone(),
            ));
        }
        drop(self.tcp);
        // Every connection holds one permit until it ends.
        let all = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
        let _ = connections.acquire_many(all(limits.max_connections)).await;
        let _ = refusals.acquire_many(all(limits.max_connections)).await;
    }
}
