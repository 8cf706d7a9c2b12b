//! A client of a running host's API for the operator commands (`sluice fleet status`,
//! `sluice jobs`, `sluice tap`, `sluice top`): its URL, the admin token from a file, and the CA of its
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

/// How long an ordinary request may take, or a stream's connection and headers; a
/// streamed answer (a tap) has no limit on its length, since it lasts until the reader
/// drops it.
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

    /// GET a stream of lines at the path `segments` (each percent-encoded) with `query`,
    /// handing each line to `each` as it arrives until the host ends the stream or
    /// `each` returns false. An answer other than 2xx is an error carrying the host's
    /// message.
    pub fn stream_lines(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        mut each: impl FnMut(&str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut url =
            reqwest::Url::parse(&self.base).with_context(|| format!("{}: not a URL", self.base))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{}: not a base URL", self.base))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.request(reqwest::Method::GET, url.as_str());
        self.runtime.block_on(async {
            let mut response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
                .await
                .with_context(|| format!("asking {url}: no answer in {REQUEST_TIMEOUT:?}"))?
                .with_context(|| format!("asking {url}"))?;
            let status = response.status();
            if !status.is_success() {
                return Err(refusal(url.as_str(), status, response.text().await?));
            }
            let mut pending = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .with_context(|| format!("reading {url}"))?
            {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = std::str::from_utf8(&line[..end])
                        .with_context(|| format!("{url}: a line is not UTF-8"))?;
                    if !each(line)? {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
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
