//! The plaintext listener: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one
//! port, told apart per connection by the client preface (hyper-util's `auto`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{ConnInfo, Proxy};
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
        // Since hyper 1.6 this also bounds the idle time between two requests,
        // which makes it the `keep-alive` timeout as well as the header timeout.
        .header_read_timeout(config.keep_alive)
        .max_buf_size(config.max_header_bytes());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX));
    builder
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
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
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
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => continue,
        };
        let builder = builder.clone();
        let proxy = proxy.clone();
        let close = close_connections.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let info = Arc::new(ConnInfo::new(peer, local, tls.is_some()));
            match tls {
                None => serve_connection(stream, builder, proxy, info, close).await,
                Some(acceptor) => {
                    let Some(stream) = handshake(acceptor, stream, peer).await else {
                        return;
                    };
                    info.count_as(match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Downstream::H2,
                        _ => Downstream::Tls,
                    });
                    serve_connection(stream, builder, proxy, info, close).await
                }
            }
        });
    }
    tracing::info!("stopped accepting connections");
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let version = match stream.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "other",
            };
            metrics::counter!(telemetry::TLS_HANDSHAKES, "result" => "ok", "version" => version)
                .increment(1);
            Some(stream)
        }
        Ok(Err(error)) => {
            // A bad ClientHello, a plaintext request on this port, an unknown
            // protocol: only this connection is affected.
            tracing::debug!(%peer, %error, "TLS handshake failed");
            metrics::counter!(telemetry::TLS_HANDSHAKES, "result" => "error", "version" => "")
                .increment(1);
            None
        }
        Err(_) => {
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
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request, &info).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = close.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}
