//! One connection of a listener: the TLS handshake, HTTP/1.1 or HTTP/2 (by ALPN), and a
//! watchdog that ends it when a client is too slow or silent too long.
//!
//! hyper's own header-read timeout cannot serve here: it also runs while an HTTP/1.1
//! connection waits for its next request, so it would replace the idle timeout. The
//! watchdog tells the two apart by what it sees: bytes arriving while no request is open
//! start a request's headers (HTTP/1.1; HTTP/2 frames between requests are not headers),
//! a request is open from its handler's call until its response body ends (an event
//! stream stays open), and a connection with no request open is idle.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use super::ServerLimits;
use crate::connect::certs::PeerNames;

/// What every connection of one listener shares.
pub(super) struct Shared {
    pub router: axum::Router,
    pub limits: ServerLimits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Requests being handled, across the listener's connections.
    pub in_flight: Arc<Semaphore>,
    pub name: Arc<str>,
}

/// A connection's place: within `max_connections`, or past it (answered 503). The
/// permit is given back when the connection ends.
pub(super) struct Admission {
    pub refused: bool,
    pub _permit: OwnedSemaphorePermit,
}

pub(super) async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    admission: Admission,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let watch = Arc::new(Watch::default());
    let stream = Watched {
        inner: stream,
        watch: watch.clone(),
    };
    let refused = admission.refused;
    let connection = Connection {
        shared: shared.clone(),
        watch,
        refused,
    };
    match &shared.tls {
        None => connection.drive(stream, false, None, &shutdown).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(shared.limits.header_read_timeout, handshake).await {
                Ok(Ok(tls)) => {
                    let session = tls.get_ref().1;
                    let http2 = session.alpn_protocol() == Some(b"h2");
                    let peer = PeerNames::of_chain(session.peer_certificates());
                    connection.drive(tls, http2, peer, &shutdown).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(listener = %shared.name, "TLS handshake failed: {error}");
                }
                Err(_) => {
                    tracing::debug!(listener = %shared.name, "TLS handshake timed out");
                }
            }
        }
    }
    drop(admission);
}

struct Connection {
    shared: Arc<Shared>,
    watch: Arc<Watch>,
    refused: bool,
}

/// Why the watchdog ends a connection.
#[derive(Clone, Copy)]
enum Expiry {
    /// A request's headers took longer than `header_read_timeout`: closed at once.
    SlowHeaders,
    /// No request for `idle_timeout`: closed gracefully.
    Idle,
}

impl Connection {
    /// Serve HTTP on `io`; `peer`: the names of the client's verified certificate, which
    /// every request carries as an extension.
    async fn drive<I>(
        self,
        io: I,
        http2: bool,
        peer: Option<PeerNames>,
        shutdown: &CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.shared.limits;
        // A refused connection gets its answer, then as long as a slow client needs.
        let idle_timeout = match self.refused {
            true => limits.header_read_timeout,
            false => limits.idle_timeout,
        };
        self.watch.start(!http2);
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let builder = match http2 {
            true => builder.http2_only(),
            false => builder.http1_only(),
        };
        let (shared, watch, refused) = (self.shared.clone(), self.watch.clone(), self.refused);
        let stopping = shutdown.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let exchange = Exchange::open(watch.clone());
            if let Some(peer) = &peer {
                request.extensions_mut().insert(peer.clone());
            }
            let (shared, stopping) = (shared.clone(), stopping.clone());
            async move {
                let response = match refused {
                    true => refusal("too many connections; retry later", true),
                    false => shared.respond(request).await,
                };
                Ok::<_, Infallible>(
                    response.map(|body| ExchangeBody::new(body, exchange, stopping)),
                )
            }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            let (deadline, expiry) = self
                .watch
                .deadline(limits.header_read_timeout, idle_timeout);
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(listener = %self.shared.name, "connection ended: {error}");
                    }
                    return;
                }
                _ = self.watch.changed.notified() => {}
                _ = tokio::time::sleep_until(deadline), if !closing => match expiry {
                    Some(Expiry::SlowHeaders) => {
                        tracing::debug!(listener = %self.shared.name, "closed a connection whose request headers were too slow");
                        return;
                    }
                    Some(Expiry::Idle) => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    None => {}
                },
                _ = shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

impl Shared {
    /// The router's answer, or 503 when `max_requests_in_flight` are being handled.
    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return refusal("too many requests in flight; retry later", false);
        };
        match self.router.clone().call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// 503 with a JSON error, `Retry-After: 1`, and `Connection: close` when `close`.
fn refusal(message: &str, close: bool) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What the watchdog knows of a connection.
#[derive(Default)]
struct Watch {
    state: Mutex<WatchState>,
    /// Wakes the watchdog when a request starts or ends.
    changed: Notify,
}

struct WatchState {
    /// Requests whose response has not ended.
    open: usize,
    /// When the last request ended (or the connection started).
    quiet_since: Instant,
    /// When bytes of a request's headers first arrived, until its handler is called.
    headers_since: Option<Instant>,
    /// Whether arriving bytes start headers: HTTP/1.1, once the TLS handshake is done.
    times_headers: bool,
}

impl Default for WatchState {
    fn default() -> Self {
        WatchState {
            open: 0,
            quiet_since: Instant::now(),
            headers_since: None,
            times_headers: false,
        }
    }
}

impl Watch {
    /// The connection speaks HTTP from now on (after the handshake, which has its own timeout).
    fn start(&self, times_headers: bool) {
        let mut state = self.state.lock().unwrap();
        state.quiet_since = Instant::now();
        state.times_headers = times_headers;
    }

    fn bytes_arrived(&self) {
        let mut state = self.state.lock().unwrap();
        if state.times_headers && state.open == 0 && state.headers_since.is_none() {
            state.headers_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// When the watchdog should look again, and what will have expired then.
    fn deadline(&self, header_read: Duration, idle: Duration) -> (Instant, Option<Expiry>) {
        let state = self.state.lock().unwrap();
        if let Some(since) = state.headers_since {
            return (since + header_read, Some(Expiry::SlowHeaders));
        }
        if state.open == 0 {
            return (state.quiet_since + idle, Some(Expiry::Idle));
        }
        // A request is open: its end notifies.
        (Instant::now() + idle, None)
    }
}

/// One request, from its handler's call to the end of its response body.
struct Exchange(Arc<Watch>);

impl Exchange {
    fn open(watch: Arc<Watch>) -> Exchange {
        let mut state = watch.state.lock().unwrap();
        state.open += 1;
        state.headers_since = None;
        drop(state);
        watch.changed.notify_one();
        Exchange(watch)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.open -= 1;
        state.quiet_since = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request open until it ends or is dropped. One of
/// unknown length (an event stream) ends when the listener shuts down, so that a stop
/// does not wait for its readers to leave.
struct ExchangeBody {
    body: Body,
    _exchange: Exchange,
    stopped: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl ExchangeBody {
    fn new(body: Body, exchange: Exchange, shutdown: CancellationToken) -> ExchangeBody {
        let unbounded = http_body::Body::size_hint(&body).exact().is_none();
        ExchangeBody {
            body,
            _exchange: exchange,
            stopped: unbounded.then(|| Box::pin(shutdown.cancelled_owned())),
        }
    }
}

impl http_body::Body for ExchangeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Some(stopped) = &mut self.stopped
            && stopped.as_mut().poll(context).is_ready()
        {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, telling the watch when bytes arrive.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buf);
        if buf.filled().len() > before {
            self.watch.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
