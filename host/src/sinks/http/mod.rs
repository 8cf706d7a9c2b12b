//! `type = "http"` sink: webhooks. Each event (or each batch of events, as one JSON
//! array) is POSTed (or PUT) to `url`, its body the event's payload or a JSON template
//! over the payload's fields ([`body`]); an event is acknowledged upstream once the
//! receiver answers 2xx. Refusals become dead letters with the receiver's status and
//! body; outages are waited out in order ([`send`], [`retry`]).
//!
//! Secrets (`token`, header values, a URL holding one) come from `${VAR}`s and travel
//! only over TLS: a credential sent over plain `http://` to another machine is refused
//! unless the config says `insecure = true`.

mod body;
mod retry;
mod send;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Url, redirect};
use serde::Deserialize;
use serde_with::{As, DurationSeconds};

use crate::component::{BuildContext, BuildError, Declaration, Problem};
use crate::connect::client_tls::ClientTls;
use crate::connect::token::ClientToken;
use body::BodyTemplate;
use send::HttpSink;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// `https://host[:port]/path` (or `http://`).
    pub url: String,
    #[serde(default)]
    pub method: Method,
    /// Request headers; values may be `${SECRET}`s. `Content-Type` defaults to
    /// `application/json`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<ClientToken>,
    /// A JSON template with `{{field}}` placeholders (see [`body`]); without it, the
    /// event's payload as it is.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Events per request in `batch` mode (default 100).
    #[serde(default)]
    pub max_events: Option<usize>,
    /// How long one request may take, connecting included.
    #[serde(
        rename = "timeout_secs",
        default = "default_timeout",
        with = "As::<DurationSeconds<u64>>"
    )]
    pub timeout: Duration,
    /// How long the receiver may keep failing (5xx, 408, 429, no connection) before
    /// events that fail become dead letters (see [`retry`]).
    #[serde(
        rename = "retry_for_secs",
        default = "default_retry_for",
        with = "As::<DurationSeconds<u64>>"
    )]
    pub retry_for: Duration,
    /// The longest wait between two attempts, without a `Retry-After`.
    #[serde(
        rename = "max_backoff_secs",
        default = "default_max_backoff",
        with = "As::<DurationSeconds<u64>>"
    )]
    pub max_backoff: Duration,
    /// PEM file of the CAs that sign the receiver's certificate; the system's without.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present (PEM; mutual TLS), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Send credentials over plain `http://` to another machine all the same.
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub enum Method {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
}

/// One request per event, or up to `max_events` per request as a JSON array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    PerEvent,
    Batch,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_for() -> Duration {
    Duration::from_secs(300)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

const DEFAULT_MAX_EVENTS: usize = 100;

/// A config problem with its hint.
fn problem(message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        hint: hint.into(),
    }
}

impl HttpSinkConfig {
    /// The receiver's URL: http or https, with a host.
    fn target(&self) -> Result<Url, Problem> {
        let hint = "e.g. `url = \"https://alertmanager.example:9093/api/v2/alerts\"`";
        let url = Url::parse(&self.url)
            .map_err(|error| problem(format!("`url` `{}`: {error}", self.url), hint))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(problem(
                format!("`url` `{}` is not an http:// or https:// URL", self.url),
                hint,
            ));
        }
        Ok(url)
    }

    /// The headers every request carries: the configured ones, the token's, and
    /// `Content-Type: application/json` unless set.
    fn headers(&self) -> Result<HeaderMap, Problem> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|_| {
                problem(format!("`headers`: `{name}` is not a header name"), "letters, digits and `-`")
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                problem(
                    format!("`headers`: the value of `{name}` is not a header value"),
                    "visible ASCII without line breaks (check the variable it comes from)",
                )
            })?;
            // Any header may carry a secret: keep them all out of the client's logs.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(token) = &self.token {
            if headers.contains_key(AUTHORIZATION) {
                return Err(problem(
                    "both `token` and an `Authorization` header are set",
                    "`token = \"${TOKEN}\"` sends `Authorization: Bearer ...`: keep one",
                ));
            }
            headers.insert(AUTHORIZATION, token.authorization());
        }
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        Ok(headers)
    }

    fn body_template(&self) -> Result<Option<BodyTemplate>, Problem> {
        self.body.as_deref().map(BodyTemplate::parse).transpose().map_err(|error| {
            problem(
                error.to_string(),
                "`{{field}}` outside quotes is the field's JSON value (`\"labels\": {{labels}}`), inside quotes its text (`\"text\": \"{{alert}} is {{status}}\"`)",
            )
        })
    }

    /// Events per request in batch mode; `None` in per-event mode.
    fn batch(&self) -> Result<Option<usize>, Problem> {
        match (self.mode, self.max_events) {
            (Mode::PerEvent, None) => Ok(None),
            (Mode::PerEvent, Some(_)) => Err(problem(
                "`max_events` is for `mode = \"batch\"`",
                "add `mode = \"batch\"` to send JSON arrays of events, or remove `max_events`",
            )),
            (Mode::Batch, Some(0)) => Err(problem("`max_events` must be at least 1", "e.g. 100")),
            (Mode::Batch, max) => Ok(Some(max.unwrap_or(DEFAULT_MAX_EVENTS))),
        }
    }

    fn identity(&self) -> Result<Option<(&Path, &Path)>, Problem> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(problem(
                "`cert_file` and `key_file` go together",
                "a client certificate needs its private key",
            )),
        }
    }

    /// What TLS and plain HTTP allow: TLS files need https://, and credentials sent
    /// over plain http:// must stay on this machine (or be `insecure`).
    fn transport_problems(&self, url: &Url, headers: &HeaderMap) -> Vec<Problem> {
        let mut problems = Vec::new();
        if url.scheme() == "https" {
            return problems;
        }
        if self.ca_file.is_some() || self.cert_file.is_some() {
            problems.push(problem(
                "`ca_file`, `cert_file` and `key_file` are for TLS",
                format!("use https:// in `url` (now `{}`)", self.url),
            ));
        }
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || (host.trim_start_matches('[').trim_end_matches(']'))
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if headers.contains_key(AUTHORIZATION) && !loopback && !self.insecure {
            problems.push(problem(
                format!("credentials would travel in clear to `{}`", self.url),
                "use https:// (set `ca_file` for a private CA), or `insecure = true` if the network between is trusted",
            ));
        }
        problems
    }

    /// Every problem of the config, for `validate`.
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let target = self.target();
        let headers = self.headers();
        if let (Ok(url), Ok(headers)) = (&target, &headers) {
            problems.extend(self.transport_problems(url, headers));
        }
        problems.extend(target.err());
        problems.extend(headers.err());
        problems.extend(self.body_template().err());
        problems.extend(self.batch().err());
        problems.extend(self.identity().err());
        if self.timeout.is_zero() || self.max_backoff.is_zero() {
            problems.push(problem(
                "`timeout_secs` and `max_backoff_secs` must be at least 1",
                "e.g. `timeout_secs = 10`, `max_backoff_secs = 30`",
            ));
        }
        problems
    }
}

impl super::SinkConfig for HttpSinkConfig {
    fn declare(&self) -> Declaration<'_> {
        Declaration {
            // A receiver's refusal (a 4xx), or a body an event cannot fill.
            rejects: true,
            problems: self.problems(),
            ..Declaration::default()
        }
    }

    fn build(&self, context: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        Ok(Box::new(self.open(context.stage)?))
    }
}

impl HttpSinkConfig {
    /// The sink of `stage`: its client made, nothing connected.
    fn open(&self, stage: &str) -> Result<HttpSink, BuildError> {
        let invalid = |problem: Problem| BuildError::stage(stage, problem.message);
        if let Some(problem) = self.problems().into_iter().next() {
            return Err(invalid(problem));
        }
        let url = self.target().map_err(invalid)?;
        crate::tls::use_ring();
        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .default_headers(self.headers().map_err(invalid)?);
        if url.scheme() == "https" {
            let tls = ClientTls {
                ca_file: self.ca_file.as_deref(),
                identity: self.identity().map_err(invalid)?,
            };
            let config = tls.config().map_err(|error| BuildError::stage(stage, error))?;
            client = client.tls_backend_preconfigured(config);
        }
        let client = client
            .build()
            .map_err(|error| BuildError::stage(stage, format!("HTTP client: {error}")))?;
        Ok(HttpSink {
            client,
            method: match self.method {
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
            },
            url,
            body: self.body_template().map_err(invalid)?,
            batch: self.batch().map_err(invalid)?,
            schedule: retry::Schedule::new(self.retry_for, self.max_backoff),
            delay: None,
            rejected: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
