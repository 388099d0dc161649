//! What the admin and webhook listeners share: their clients (scrapers,
//! probes, the apiserver) send small requests at once, so a client that
//! does not is closed, and a few hundred connections are plenty. Kept apart
//! from the data plane's bounds, so neither can starve the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The longest wait for a request's head (and HTTP/2's keep-alive answer).
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 256;

/// A connection builder with these bounds.
pub(super) fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(16)
        .keep_alive_interval(Some(HEAD_TIMEOUT))
        .keep_alive_timeout(HEAD_TIMEOUT);
    builder
}

/// The connections a listener serves at once.
pub(super) struct Slots(Arc<Semaphore>);

impl Slots {
    pub(super) fn new() -> Slots {
        Slots(Arc::new(Semaphore::new(MAX_CONNECTIONS)))
    }

    /// The next connection with a free slot, which it holds until dropped;
    /// `None` once `stop` is cancelled. `what` names the listener in logs.
    pub(super) async fn accept(
        &self,
        listener: &TcpListener,
        stop: &CancellationToken,
        what: &str,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "{what} accept failed");
                        continue;
                    }
                },
                () = stop.cancelled() => return None,
            };
            match self.0.clone().try_acquire_owned() {
                Ok(slot) => return Some((stream, peer, slot)),
                Err(_) => tracing::debug!(%peer, "{what} connection limit reached; closed"),
            }
        }
    }
}
