//! Upgraded connections (WebSockets): bytes copied both ways until either side
//! closes, or until neither has sent a byte for `tunnel-idle-timeout`, so an
//! abandoned tunnel cannot hold its two sockets forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::activity::{quiet_for, Counted};

/// Copies between an upgraded client and upstream; first, what the upstream
/// sent right after its `101`.
pub async fn run(client: OnUpgrade, (upstream, early): (TcpStream, BytesMut), idle: Duration) {
    let client = match client.await {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    if !early.is_empty() {
        if let Err(error) = client.write_all(&early).await {
            tracing::debug!(%error, "tunnel closed with an error");
            return;
        }
    }
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
