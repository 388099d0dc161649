//! Upstream connections, pooled per endpoint.
//!
//! HTTP/1.1: idle connections are kept LIFO (the warmest first), up to
//! `upstream-keepalive-connections`, each closed after `upstream-keepalive-timeout`
//! idle or `upstream-keepalive-requests` uses, as nginx's `keepalive` does.
//! h2c: one multiplexed connection per endpoint, re-established when it closes.
//!
//! A connection goes back to the pool only once hyper reports it ready again, i.e.
//! after the response body was read to the end; a connection whose response was
//! abandoned half-way is closed instead of reused.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::RequestBody;
use super::error::ProxyError;
use crate::balance::EndpointState;
use crate::config::PoolConfig;
use crate::routing::Protocol;
use crate::telemetry::connections::Upstream;

#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    protocol: Protocol,
    config: PoolConfig,
    idle: Mutex<Vec<IdleConn>>,
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

#[derive(Debug)]
struct IdleConn {
    conn: H1Conn,
    since: Instant,
}

/// An HTTP/1.1 connection checked out of the pool.
#[derive(Debug)]
pub struct H1Conn {
    sender: http1::SendRequest<RequestBody>,
    requests: u32,
    /// Shared with the connection's IO so each request can set its own send timeout.
    send_timeout_ms: Arc<AtomicU64>,
}

/// A connection ready to carry one request.
#[derive(Debug)]
pub enum Conn {
    H1 { conn: H1Conn, reused: bool },
    H2(http2::SendRequest<RequestBody>),
}

impl Pool {
    pub fn new(addr: SocketAddr, protocol: Protocol, config: PoolConfig) -> Pool {
        Pool {
            addr,
            protocol,
            config,
            idle: Mutex::default(),
            shared: Mutex::default(),
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A pooled connection if one is usable, else a new one, with the time
    /// connecting took.
    pub async fn checkout(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<(Conn, Option<Duration>), ProxyError> {
        match self.protocol {
            Protocol::Http1 => {
                if let Some(conn) = self.take_idle() {
                    conn.send_timeout_ms
                        .store(millis(send_timeout), Ordering::Relaxed);
                    return Ok((Conn::H1 { conn, reused: true }, None));
                }
                // Boxed, here and below: connecting is the cold path, and inline its
                // state would enlarge every request's future (moved several times).
                let (conn, took) =
                    Box::pin(self.connect_fresh(connect_timeout, send_timeout)).await?;
                let conn = Conn::H1 {
                    conn,
                    reused: false,
                };
                Ok((conn, Some(took)))
            }
            Protocol::H2c => {
                if let Some(sender) = self.shared_h2() {
                    return Ok((Conn::H2(sender), None));
                }
                let started = Instant::now();
                let sender = Box::pin(self.connect_h2(connect_timeout, send_timeout)).await?;
                *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
                Ok((Conn::H2(sender), Some(started.elapsed())))
            }
        }
    }

    /// A new HTTP/1.1 connection, bypassing the idle list (also used to retry a
    /// request that a reused connection closed before sending), and the time it took.
    pub async fn connect_fresh(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<(H1Conn, Duration), ProxyError> {
        let started = Instant::now();
        let conn = self.connect_h1(connect_timeout, send_timeout).await?;
        Ok((conn, started.elapsed()))
    }

    fn take_idle(&self) -> Option<H1Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let timeout = self.config.upstream_keepalive_timeout;
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < timeout && entry.conn.sender.is_ready() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn checkin(&self, conn: H1Conn) {
        if conn.requests >= self.config.upstream_keepalive_requests {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest sit at the front: drop those past their keep-alive timeout.
        let timeout = self.config.upstream_keepalive_timeout;
        let expired = idle
            .iter()
            .take_while(|e| e.since.elapsed() >= timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < self.config.upstream_keepalive_connections {
            idle.push(IdleConn {
                conn,
                since: Instant::now(),
            });
        }
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_tcp(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<(TokioIo<UpstreamIo>, Arc<AtomicU64>), ProxyError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout)?
            .map_err(ProxyError::Connect)?;
        // Small request and response heads must not wait for Nagle.
        stream.set_nodelay(true).map_err(ProxyError::Connect)?;
        let send_timeout_ms = Arc::new(AtomicU64::new(millis(send_timeout)));
        let io = UpstreamIo::new(stream, send_timeout_ms.clone());
        Ok((TokioIo::new(io), send_timeout_ms))
    }

    async fn connect_h1(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<H1Conn, ProxyError> {
        let (io, send_timeout_ms) = self.connect_tcp(connect_timeout, send_timeout).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            Upstream::Http1.opened();
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
            Upstream::Http1.closed();
        });
        tracing::debug!(%addr, "new upstream connection");
        Ok(H1Conn {
            sender,
            requests: 0,
            send_timeout_ms,
        })
    }

    async fn connect_h2(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let deadline = Instant::now() + connect_timeout;
        let (io, _) = self.connect_tcp(connect_timeout, send_timeout).await?;
        let handshake = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io);
        let (sender, connection) = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| ProxyError::ConnectTimeout)?
            .map_err(ProxyError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            Upstream::H2c.opened();
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "upstream h2 connection ended with an error");
            }
            Upstream::H2c.closed();
        });
        tracing::debug!(%addr, "new upstream h2c connection");
        Ok(sender)
    }
}

/// An upstream's answer, and for HTTP/1.1 the connection it came on, which goes
/// back to the pool when the response body has been read to the end.
#[derive(Debug)]
pub struct Answer {
    pub response: Response<Incoming>,
    pub checkin: Option<Checkin>,
}

/// An HTTP/1.1 connection lent to one response.
#[derive(Debug)]
pub struct Checkin {
    conn: H1Conn,
    endpoint: Arc<EndpointState>,
}

impl Checkin {
    /// The response body ended: the connection is reusable once hyper says it is
    /// ready again. Usually it already is (its dispatcher finishes the response in
    /// the same poll that hands over the last bytes), so the common case costs no
    /// task; otherwise one waits for it, as hyper-util's pool does for every request.
    pub fn body_done(mut self) {
        if self.conn.sender.is_ready() {
            self.endpoint.pool.checkin(self.conn);
            return;
        }
        tokio::spawn(async move {
            if self.conn.sender.ready().await.is_ok() {
                self.endpoint.pool.checkin(self.conn);
            }
        });
    }
}

impl H1Conn {
    /// Sends a request. When hyper could not even start sending (the pooled
    /// connection had just closed), the request comes back.
    pub async fn send(
        mut self,
        request: Request<RequestBody>,
        endpoint: &Arc<EndpointState>,
    ) -> Result<Answer, (ProxyError, Option<Request<RequestBody>>)> {
        self.requests += 1;
        match self.sender.try_send_request(request).await {
            Ok(response) => Ok(Answer {
                response,
                checkin: Some(Checkin {
                    conn: self,
                    endpoint: endpoint.clone(),
                }),
            }),
            Err(mut e) => {
                let unsent = e.take_message();
                Err((ProxyError::from_upstream(e.into_error()), unsent))
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The upstream socket, failing writes that stall longer than the send timeout
/// (nginx's `proxy_send_timeout`: between two successive writes). hyper wants `Unpin`
/// IO, hence the boxed timer (one allocation per connection, not per request).
pub struct UpstreamIo {
    stream: TcpStream,
    send_timeout_ms: Arc<AtomicU64>,
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl UpstreamIo {
    fn new(stream: TcpStream, send_timeout_ms: Arc<AtomicU64>) -> UpstreamIo {
        UpstreamIo {
            stream,
            send_timeout_ms,
            stall: Box::pin(tokio::time::sleep(Duration::MAX)),
            stalled: false,
        }
    }

    /// Called when a write would block: start (or keep) the stall timer.
    fn on_write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.stalled {
            self.stalled = true;
            let timeout = Duration::from_millis(self.send_timeout_ms.load(Ordering::Relaxed));
            self.stall.as_mut().reset(Instant::now() + timeout);
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                ProxyError::SendTimeout,
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.on_write_pending(cx),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.on_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
