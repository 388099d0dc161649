//! The plaintext listener: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one
//! port, told apart per connection by the client preface (hyper-util's `auto`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{ConnInfo, Proxy};
use crate::config::Config;

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

/// Accepts until `stop_accepting`; each connection is closed gracefully (in-flight
/// requests finish) once `close_connections` fires. Connections are spawned on
/// `connections` so drain can wait for them.
pub async fn serve(
    listener: TcpListener,
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
        connections.spawn(async move {
            let info = Arc::new(ConnInfo::new(peer, local));
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                let info = info.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, &info).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
        });
    }
    tracing::info!("stopped accepting connections");
}
