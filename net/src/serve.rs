//! The accept loop of control's REST and gRPC listeners and of the gateway: hyper's HTTP/1 and
//! HTTP/2 (and WebSocket upgrades) with limits that a client cannot talk its way around.
//!
//! - At most `max_connections` open connections, and `max_connections_per_address` from one
//!   client address (trusted proxies count only towards the total): a connection beyond either
//!   is accepted and closed at once, so it does not wait in the kernel's backlog.
//! - A request's head must arrive within `header_timeout` (HTTP/1), and its body within
//!   `body_timeout` of the request starting (the body then fails with [`BodyTimedOut`], which
//!   the services turn into a clear error).
//! - A connection with no request in flight for `idle_timeout` is shut down gracefully (and
//!   dropped if it does not finish within a few seconds). That covers keep-alive connections
//!   nobody uses, a client that never sends a byte, and HTTP/2 connections without a stream. A
//!   streaming response (gRPC server streams) counts as in flight until its body ends.
//! - An upgraded connection (WebSocket) keeps its connection slot for as long as it lives; its
//!   liveness is the relay's business.
//!
//! Concurrency model: one task accepts; each connection is its own task owning the connection
//! and a watcher of that connection's activity (shared with the per-request service wrapper
//! through an `Arc`). The connection table is behind one mutex held for a lookup at accept and
//! at close.

use std::{
    collections::HashMap,
    convert::Infallible,
    error::Error as StdError,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    time::Instant,
};
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::address::Cidr;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long a connection asked to shut down (idle, or the server stopping) may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The limits of one listener. Durations are whole seconds in configuration files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most (trusted proxies are exempt: what
    /// comes through them counts towards `max_connections` only).
    pub max_connections_per_address: usize,
    /// A request's head (HTTP/1) must arrive within this.
    #[serde(with = "secs")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this of the request starting.
    #[serde(with = "secs")]
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Proxies (a Kubernetes ingress, a load balancer) whose `X-Forwarded-For` is believed and
    /// whose connections are not limited per address.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_address: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            trusted_proxies: vec![],
        }
    }
}

impl ServeLimits {
    /// Checks the values; `section` names them in the message (e.g. `http`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections_per_address == 0 {
            return Err(format!(
                "{section}.max_connections and {section}.max_connections_per_address must be at least 1"
            ));
        }
        if self.max_connections_per_address > self.max_connections {
            return Err(format!(
                "{section}.max_connections_per_address ({}) must not exceed {section}.max_connections ({})",
                self.max_connections_per_address, self.max_connections
            ));
        }
        for (name, value) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(3600) {
                return Err(format!("{section}.{name} must be 1 to 3600 seconds"));
            }
        }
        Ok(())
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|range| range.contains(ip))
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// The socket's peer, put into every request's extensions (the client address for rate limits
/// is derived from it with [`crate::client_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A request body that did not arrive within the listener's `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// What the limits did, for the process's `/metrics`: a handle on one listener's series of the
/// families [`ConnectionStats::register`] adds to a registry (or standalone ones, in tests).
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    open: Gauge,
    accepted: Counter,
    refused_total_limit: Counter,
    refused_address_limit: Counter,
    idle_closed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    listener: &'static str,
    reason: &'static str,
}

/// The connection families of one process's registry; [`ConnectionFamilies::listener`] gives
/// each listener its series.
#[derive(Clone)]
pub struct ConnectionFamilies {
    open: Family<ListenerLabels, Gauge>,
    accepted: Family<ListenerLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    idle_closed: Family<ListenerLabels, Counter>,
}

impl ConnectionStats {
    /// Adds the connection families (`connections_open`, `connections_accepted_total`,
    /// `connections_refused_total{reason}`, `connections_idle_closed_total`, each by
    /// `listener`) to `registry`.
    pub fn register(registry: &mut Registry) -> ConnectionFamilies {
        let families = ConnectionFamilies {
            open: Family::default(),
            accepted: Family::default(),
            refused: Family::default(),
            idle_closed: Family::default(),
        };
        registry.register(
            "connections_open",
            "Open connections by listener",
            families.open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted by listener",
            families.accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once by listener and reason (max_connections, \
             max_connections_per_address)",
            families.refused.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "Connections closed after idle_timeout with no request in flight, by listener",
            families.idle_closed.clone(),
        );
        families
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.get().max(0) as u64
    }
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }
    /// Connections closed at once: (over `max_connections`, over the per-address limit).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_total_limit.get(),
            self.refused_address_limit.get(),
        )
    }
    /// Connections closed for having had no request in flight for `idle_timeout`.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.get()
    }
}

impl ConnectionFamilies {
    /// The series of one listener (`http`, `grpc`, `signalling`), at 0 from the start.
    pub fn listener(&self, listener: &'static str) -> ConnectionStats {
        let labels = ListenerLabels { listener };
        let refused = |reason| {
            self.refused
                .get_or_create(&RefusalLabels { listener, reason })
                .clone()
        };
        ConnectionStats {
            open: self.open.get_or_create(&labels).clone(),
            accepted: self.accepted.get_or_create(&labels).clone(),
            refused_total_limit: refused("max_connections"),
            refused_address_limit: refused("max_connections_per_address"),
            idle_closed: self.idle_closed.get_or_create(&labels).clone(),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and gives open connections
/// a few seconds to finish. `make_service` is called once per connection with its peer address.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    limits: ServeLimits,
    stats: ConnectionStats,
    make_service: M,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: tower::Service<Request<DeadlineBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = Arc::new(limits);
    let stats = Arc::new(stats);
    let table = Arc::new(ConnectionTable::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match table.admit(peer.ip(), &limits, &stats) {
            Ok(permit) => permit,
            Err(()) => {
                drop(stream);
                continue;
            }
        };
        stats.accepted.inc();
        let _ = stream.set_nodelay(true);
        let service = make_service(peer);
        connections.spawn(connection(
            LimitedIo {
                stream,
                _permit: permit,
            },
            peer,
            service,
            limits.clone(),
            stats.clone(),
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            left = connections.len(),
            "connections still open at shutdown; dropped"
        );
    }
    Ok(())
}

async fn connection<S, B>(
    io: LimitedIo,
    peer: SocketAddr,
    service: S,
    limits: Arc<ServeLimits>,
    stats: Arc<ConnectionStats>,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<Request<DeadlineBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
        peer,
        body_timeout: limits.body_timeout,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(32 * 1024)
        // A peer that stopped answering is found out, even on a long-lived stream.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let why = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        () = activity.idle_for(limits.idle_timeout) => "idle",
        _ = stop.wait_for(|stopping| *stopping) => "server stopping",
    };
    if why == "idle" {
        stats.idle_closed.inc();
    }
    debug!(%peer, why, "closing connection");
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(SHUTDOWN_GRACE, conn).await.is_err() {
        debug!(%peer, "connection did not close gracefully; dropped");
    }
}

/// Open connections, overall and per address.
#[derive(Default)]
struct ConnectionTable {
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place in the table, given back when the connection's IO is dropped (for an
/// upgraded connection: when the WebSocket ends).
struct Permit {
    table: Arc<ConnectionTable>,
    address: Option<IpAddr>,
    stats: Arc<ConnectionStats>,
}

impl ConnectionTable {
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ServeLimits,
        stats: &Arc<ConnectionStats>,
    ) -> Result<Permit, ()> {
        let address = (!limits.is_trusted_proxy(ip)).then_some(ip);
        let mut counts = self.counts.lock().expect("connection table lock");
        if counts.0 >= limits.max_connections {
            stats.refused_total_limit.inc();
            debug!(%ip, "connection refused: max_connections reached");
            return Err(());
        }
        if let Some(address) = address {
            let from_there = counts.1.entry(address).or_insert(0);
            if *from_there >= limits.max_connections_per_address {
                stats.refused_address_limit.inc();
                debug!(%ip, "connection refused: max_connections_per_address reached");
                return Err(());
            }
            *from_there += 1;
        }
        counts.0 += 1;
        stats.open.inc();
        Ok(Permit {
            table: self.clone(),
            address,
            stats: stats.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().expect("connection table lock");
        counts.0 -= 1;
        if let Some(address) = self.address
            && let Some(n) = counts.1.get_mut(&address)
        {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&address);
            }
        }
        self.stats.open.dec();
    }
}

pin_project_lite::pin_project! {
    /// The TCP stream with its connection permit, so that the permit lives exactly as long as
    /// the socket, upgraded or not.
    struct LimitedIo {
        #[pin]
        stream: TcpStream,
        _permit: Permit,
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().stream.poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Requests in flight on one connection, and since when there have been none.
struct Activity {
    state: Mutex<(usize, Instant)>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.state.lock().expect("activity lock").0 += 1;
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (in_flight, since) = *self.state.lock().expect("activity lock");
            if in_flight > 0 {
                notified.await;
                continue;
            }
            let deadline = since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = notified => {}
            }
        }
    }
}

/// One request (and its response body) in flight.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("activity lock");
        state.0 -= 1;
        state.1 = Instant::now();
        drop(state);
        self.0.changed.notify_waiters();
    }
}

/// The caller's service as hyper sees it: counts requests in flight, puts the peer address into
/// the request and the body deadline on its body.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: SocketAddr,
    body_timeout: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<DeadlineBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.start();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(PeerAddr(self.peer));
        let request = Request::from_parts(parts, DeadlineBody::new(body, self.body_timeout));
        let service = self.inner.clone();
        Box::pin(async move {
            let response = service.oneshot(request).await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it ends.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: InFlight,
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimedOut`] if it is not complete by its deadline.
    pub struct DeadlineBody {
        #[pin]
        inner: Incoming,
        deadline: Instant,
        timeout: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            sleep: None,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(*this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
