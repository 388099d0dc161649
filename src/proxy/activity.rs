//! Telling a quiet connection from a busy one, for the idle watchdogs of client
//! connections and tunnels: a count of the reads that brought bytes (no clock
//! read per read), and a wait until a count stops changing.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// An IO that counts each read bringing bytes into `reads`. Writes pass
/// straight through, vectored ones included.
pub struct Counted<I> {
    pub io: I,
    pub reads: Arc<AtomicU64>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Returns once `activity` has not changed for `idle`, give or take a quarter:
/// it is read four times per `idle`.
pub async fn quiet_for(activity: impl Fn() -> u64, idle: Duration) {
    let check = idle / 4;
    let mut seen = activity();
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(check).await;
        let now = activity();
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        } else if quiet_since.elapsed() >= idle {
            return;
        }
    }
}
