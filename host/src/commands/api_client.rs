//! A client of a running host's API for the operator commands (`sluice fleet status`,
//! `sluice jobs`, `sluice top`): its URL, the admin token from a file, and the CA of its
//! certificate.

use std::path::PathBuf;

use anyhow::Context;
use sluice::connect::client_tls::ClientTls;

/// Where a running host's API is and how to be let in.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The host's API, e.g. `https://central.example:9443` (the quickstart's by default).
    #[arg(long, alias = "central", default_value = "http://127.0.0.1:9598")]
    pub api: String,
    /// A file holding the API's admin token (`[api] admin_token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The CA that signed the host's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// How long an ordinary request may take; a streamed answer (a tap) has no such limit,
/// since it lasts until the reader drops it.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct ApiClient {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ApiClient {
    pub fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        sluice::tls::use_ring();
        let mut client = reqwest::Client::builder().connect_timeout(REQUEST_TIMEOUT);
        if args.ca_file.is_some() {
            let tls = ClientTls {
                ca_file: args.ca_file.as_deref(),
                identity: None,
            };
            client = client.tls_backend_preconfigured(tls.config()?);
        }
        let token = args
            .token_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))
                    .map(|text| text.trim().to_owned())
            })
            .transpose()?;
        Ok(ApiClient {
            base: args.api.trim_end_matches('/').to_owned(),
            token,
            client: client.build()?,
            runtime: tokio::runtime::Runtime::new()?,
        })
    }

    /// The host's API as given, without a trailing `/`.
    #[cfg(feature = "top")]
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(reqwest::Method::GET, path)
    }

    #[cfg(feature = "jobs")]
    pub fn post(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(reqwest::Method::POST, path)
    }

    /// A GET whose answer is read as it arrives (an NDJSON tap), to be awaited on
    /// [`ApiClient::spawn`]: the response once its status is a success, else the
    /// host's message.
    #[cfg(feature = "top")]
    pub fn stream(
        &self,
        path: &str,
    ) -> impl Future<Output = anyhow::Result<reqwest::Response>> + Send + 'static {
        let url = format!("{}{path}", self.base);
        let request = self.request(reqwest::Method::GET, &url);
        async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(refusal(&url, status, body));
            }
            Ok(response)
        }
    }

    /// Run `task` on the client's runtime (a stream's reader beside a blocking caller).
    #[cfg(feature = "top")]
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(task)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Send a request; an answer other than 2xx is an error carrying the host's message.
    fn send(&self, method: reqwest::Method, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let request = self.request(method, &url).timeout(REQUEST_TIMEOUT);
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                return Err(refusal(&url, status, body));
            }
            serde_json::from_str(&body).with_context(|| format!("{url}: not JSON"))
        })
    }
}

/// An answer other than 2xx, with the host's `{"error": ...}` message (or its body).
fn refusal(url: &str, status: reqwest::StatusCode, body: String) -> anyhow::Error {
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["error"].as_str().map(str::to_owned))
        .unwrap_or(body);
    anyhow::anyhow!("{url} answered {status}: {message}")
}
