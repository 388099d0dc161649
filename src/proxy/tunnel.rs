//! Upgraded connections (WebSockets): bytes copied both ways until either side
//! closes, or until neither has sent a byte for `tunnel-idle-timeout`, so an
//! abandoned tunnel cannot hold its two sockets forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::activity::{quiet_for, Counted};

/// The pod's side of a tunnel.
pub enum UpstreamSide {
    /// sluice's own HTTP/1.1 connection, and what the pod sent right after
    /// its `101`.
    Plain(TcpStream, BytesMut),
    /// hyper's (HTTP/1.1 over TLS), which keeps any early bytes itself.
    Hyper(OnUpgrade),
}

/// Copies between an upgraded client and upstream.
pub async fn run(client: OnUpgrade, upstream: UpstreamSide, idle: Duration) {
    let client = match client.await {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    match upstream {
        UpstreamSide::Plain(upstream, early) => {
            if !early.is_empty() {
                if let Err(error) = client.write_all(&early).await {
                    tracing::debug!(%error, "tunnel closed with an error");
                    return;
                }
            }
            copy(client, upstream, idle).await;
        }
        UpstreamSide::Hyper(upstream) => match upstream.await {
            Ok(upstream) => copy(client, TokioIo::new(upstream), idle).await,
            Err(error) => tracing::debug!(%error, "upstream upgrade failed"),
        },
    }
}

async fn copy(
    client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: impl AsyncRead + AsyncWrite + Unpin,
    idle: Duration,
) {
    let reads = Arc::new(AtomicU64::new(0));
    let mut client = Counted {
        io: client,
        reads: reads.clone(),
    };
    let mut upstream = Counted {
        io: upstream,
        reads: reads.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let quiet = quiet_for(|| reads.load(Ordering::Relaxed), idle);
    tokio::select! {
        copied = copy => match copied {
            Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
            Err(error) => tracing::debug!(%error, "tunnel closed with an error"),
        },
        () = quiet => tracing::debug!(?idle, "tunnel idle; closed"),
    }
}
