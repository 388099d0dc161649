//! The plaintext listener: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one
//! port, told apart per connection by the client preface (hyper-util's `auto`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;

use super::passthrough;
use super::tls::{Acceptor, Handshake};
use crate::policy::client_cert::PeerCertificate;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::Counted;
use super::conn::ConnInfo;
use super::pipeline::Proxy;
use super::proxy_protocol;
use crate::config::Config;
use crate::telemetry;
use crate::telemetry::connections::Downstream;

/// Pause after an accept error (e.g. out of file descriptors) instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper times a request head from the end of the previous answer, idle
        // time included. The idle watchdog (`serve_connection`) closes a
        // connection that sends nothing for `keep-alive`; this timer then gives
        // a head that has started at least `client-header-timeout`.
        .header_read_timeout(config.keep_alive + config.client_header_timeout)
        .max_buf_size(config.max_header_bytes());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        // Bounds what one client makes us buffer per stream and connection.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(Some(H2_PENDING_RESETS))
        .keep_alive_interval(Some(config.http2_ping_interval))
        .keep_alive_timeout(config.http2_ping_interval);
    builder
}

/// HTTP/2 flow-control windows: request body bytes one client can make us buffer
/// per stream and, in all, per connection (hyper's defaults, stated here because
/// they are a bound).
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONNECTION_WINDOW: u32 = 1 << 20;
/// Streams a client may reset before we accept them (rapid reset, CVE-2023-44487).
const H2_PENDING_RESETS: usize = 20;

/// What bounds a client connection before hyper takes it.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Client connections open at once, across listeners; `None`: no cap.
    pub slots: Option<Arc<Semaphore>>,
    /// Time for the first bytes of a plaintext connection.
    pub first_bytes: Duration,
    /// Time without a new request after which a connection is closed
    /// gracefully (`keep-alive`; for HTTP/2 as well).
    pub idle: Duration,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl ConnectionLimits {
    pub fn new(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            slots: (config.max_worker_connections > 0)
                .then(|| Arc::new(Semaphore::new(config.max_worker_connections))),
            first_bytes: config.client_header_timeout,
            idle: config.keep_alive,
            proxy_protocol: config.use_proxy_protocol,
        }
    }
}

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts until `stop_accepting`; each connection is closed gracefully (in-flight
/// requests finish) once `close_connections` fires. Connections are spawned on
/// `connections` so drain can wait for them. With `tls`, each connection is a
/// TLS handshake first (HTTP/2 or HTTP/1.1 by ALPN).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Acceptor>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    limits: ConnectionLimits,
    stop_accepting: CancellationToken,
    close_connections: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = stop_accepting.cancelled() => break,
        };
        // Idle clients must not use up the descriptors that the data plane's
        // upstreams and the apiserver watches need: past the cap, close at once.
        let slot = match &limits.slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    metrics::counter!(telemetry::DOWNSTREAM_CONNECTIONS_REFUSED, "reason" => "max-worker-connections").increment(1);
                    tracing::debug!(%peer, "max-worker-connections reached; connection closed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => continue,
        };
        let builder = builder.clone();
        let proxy = proxy.clone();
        let close = close_connections.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            let first_bytes = limits.first_bytes;
            let Some(peer) = client_of(&mut stream, peer, &limits, &proxy).await else {
                return;
            };
            let idle = limits.idle;
            let info = Arc::new(ConnInfo::new(peer, local, tls.is_some()));
            match tls {
                None => {
                    // Telling HTTP/1 from h2c waits for the first bytes: bound it.
                    // `peek`, not `readable`: tokio reports a new socket readable
                    // before anything has arrived.
                    let mut first = [0u8; 1];
                    let first = stream.peek(&mut first);
                    if tokio::time::timeout(first_bytes, first).await.is_err() {
                        metrics::counter!(telemetry::DOWNSTREAM_CONNECTIONS_REFUSED, "reason" => "no-first-bytes").increment(1);
                        tracing::debug!(%peer, "no bytes within client-header-timeout; connection closed");
                        return;
                    }
                    serve_connection(stream, builder, proxy, info, close, idle).await
                }
                Some(acceptor) => {
                    // SSL passthrough: only when some host asks for it, the
                    // ClientHello's name is peeked (never read).
                    if !proxy.table.load().passthrough.is_empty() {
                        let name = passthrough::peek_server_name(&stream, HANDSHAKE_TIMEOUT).await;
                        let table = proxy.table.load();
                        if let Some(to) = name.and_then(|name| table.passthrough.get(&name)) {
                            let to = to.clone();
                            drop(table);
                            info.count_as(Downstream::Tls);
                            passthrough::splice(stream, to).await;
                            return;
                        }
                    }
                    let Some((stream, client_cert)) = handshake(&acceptor, stream, peer).await
                    else {
                        return;
                    };
                    if let Some(client_cert) = client_cert {
                        let _ = info.client_cert.set(*client_cert);
                    }
                    info.count_as(match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Downstream::H2,
                        _ => Downstream::Tls,
                    });
                    serve_connection(stream, builder, proxy, info, close, idle).await
                }
            }
        });
    }
    tracing::info!("stopped accepting connections");
}

/// The client's address: the TCP peer, or with `use-proxy-protocol` the source
/// its header declares when the peer is a trusted proxy. `None`: close.
async fn client_of(
    stream: &mut TcpStream,
    peer: SocketAddr,
    limits: &ConnectionLimits,
    proxy: &Proxy,
) -> Option<SocketAddr> {
    if !limits.proxy_protocol {
        return Some(peer);
    }
    match proxy_protocol::read(stream, limits.first_bytes).await {
        Ok(Some(source)) => {
            let settings = proxy.settings.load();
            let trusted = settings.real_ip_from.iter().any(|c| c.contains(peer.ip()));
            if !trusted {
                tracing::debug!(%peer, %source, "PROXY header from an untrusted peer; its address is ignored");
            }
            Some(if trusted { source } else { peer })
        }
        Ok(None) => Some(peer),
        Err(error) => {
            metrics::counter!(telemetry::DOWNSTREAM_CONNECTIONS_REFUSED, "reason" => "proxy-protocol").increment(1);
            tracing::debug!(%peer, %error, "no valid PROXY protocol header; connection closed");
            None
        }
    }
}

async fn handshake(
    acceptor: &Acceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Option<Box<PeerCertificate>>)> {
    match acceptor.accept(stream, HANDSHAKE_TIMEOUT).await {
        Handshake::Done(stream, client_cert) => {
            let version = match stream.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "other",
            };
            metrics::counter!(telemetry::TLS_HANDSHAKES, "result" => "ok", "version" => version)
                .increment(1);
            Some((*stream, client_cert))
        }
        Handshake::Failed(error) => {
            // A bad ClientHello, a plaintext request on this port, an unknown
            // protocol: only this connection is affected.
            tracing::debug!(%peer, %error, "TLS handshake failed");
            metrics::counter!(telemetry::TLS_HANDSHAKES, "result" => "error", "version" => "")
                .increment(1);
            None
        }
        Handshake::TimedOut => {
            tracing::debug!(%peer, "TLS handshake timed out");
            metrics::counter!(telemetry::TLS_HANDSHAKES, "result" => "timeout", "version" => "")
                .increment(1);
            None
        }
    }
}

async fn serve_connection<I>(
    io: I,
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    close: CancellationToken,
    idle: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    // Nothing from the client for `keep-alive` (`ConnInfo::activity`): HTTP/2
    // gets a GOAWAY, HTTP/1 is closed after any answer still in progress, which
    // both finish. Watched by a task of its own, so that serving a request does
    // not poll an idle timer too.
    let closing = close.child_token();
    let watchdog = tokio::spawn({
        let (info, closing) = (info.clone(), closing.clone());
        async move {
            info.idle_for(idle).await;
            tracing::debug!(peer = %info.peer, "client connection idle; closing");
            closing.cancel();
        }
    });
    let reads = info.reads();
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request, &info).await) }
    });
    let io = Counted { io, reads };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    watchdog.abort();
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}
