//! Upstream connections, pooled per endpoint.
//!
//! HTTP/1.1: idle connections are kept LIFO (the warmest first), up to
//! `upstream-keepalive-connections`, each closed after `upstream-keepalive-timeout`
//! idle or `upstream-keepalive-requests` uses, as nginx's `keepalive` does.
//! h2c: one multiplexed connection per endpoint, re-established when it closes.
//! TLS (`upstream::tls`): when the pod chooses HTTP/2 by ALPN (always for
//! `GRPCS`), one multiplexed connection, as h2c; else HTTP/1.1 connections
//! (hyper's client), each reused once its previous answer is read. rustls
//! resumes sessions across connections.
//!
//! An HTTP/1.1 connection goes back to the pool when its response body has been
//! read to the end (`h1::H1Body`); a connection whose response was abandoned
//! half-way is closed instead of reused. An idle connection the upstream closed
//! is noticed, and dropped, when it is next taken.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::RequestBody;
use super::error::ProxyError;
use super::h1::Connection;
use super::Protocol;
use crate::telemetry::connections::Upstream;

pub const DEFAULT_UPSTREAM_KEEPALIVE_CONNECTIONS: usize = 320;
pub const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS: u32 = 10_000;

/// Upstream keep-alive pool, per endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub upstream_keepalive_connections: usize,
    pub upstream_keepalive_timeout: Duration,
    pub upstream_keepalive_requests: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            upstream_keepalive_connections: DEFAULT_UPSTREAM_KEEPALIVE_CONNECTIONS,
            upstream_keepalive_timeout: DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
            upstream_keepalive_requests: DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS,
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    protocol: Protocol,
    config: PoolConfig,
    idle: Mutex<Vec<IdleConn>>,
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// HTTP/1.1 over TLS: senders, busy or idle (`is_ready` tells).
    senders: Mutex<Vec<http1::SendRequest<RequestBody>>>,
}

#[derive(Debug)]
struct IdleConn {
    conn: Connection,
    since: Instant,
}

/// A connection ready to carry one request.
#[derive(Debug)]
pub enum Conn {
    H1 {
        conn: Connection,
        reused: bool,
    },
    H2(http2::SendRequest<RequestBody>),
    /// HTTP/1.1 over TLS: hyper's client. The sender goes back with
    /// `Pool::checkin_sender` once the answer's head has come.
    Tls1(http1::SendRequest<RequestBody>),
}

impl Pool {
    pub fn new(addr: SocketAddr, protocol: Protocol, config: PoolConfig) -> Pool {
        Pool {
            addr,
            protocol,
            config,
            idle: Mutex::default(),
            shared: Mutex::default(),
            senders: Mutex::default(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.protocol, Protocol::Tls(_))
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
        match &self.protocol {
            Protocol::Http1 => {
                if let Some(mut conn) = self.take_idle() {
                    conn.set_send_timeout(send_timeout);
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
                let sender = Box::pin(self.connect_h2(connect_timeout, send_timeout, None)).await?;
                *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
                Ok((Conn::H2(sender), Some(started.elapsed())))
            }
            Protocol::Tls(tls) if tls.spec.h2 => {
                if let Some(sender) = self.shared_h2() {
                    return Ok((Conn::H2(sender), None));
                }
                let started = Instant::now();
                let sender =
                    Box::pin(self.connect_h2(connect_timeout, send_timeout, Some(tls))).await?;
                *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
                Ok((Conn::H2(sender), Some(started.elapsed())))
            }
            Protocol::Tls(tls) => {
                if let Some(sender) = self.shared_h2() {
                    return Ok((Conn::H2(sender), None));
                }
                if let Some(sender) = self.ready_sender() {
                    return Ok((Conn::Tls1(sender), None));
                }
                let started = Instant::now();
                let conn = Box::pin(self.connect_https(connect_timeout, send_timeout, tls)).await?;
                if let Conn::H2(sender) = &conn {
                    *self.shared.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(sender.clone());
                }
                Ok((conn, Some(started.elapsed())))
            }
        }
    }

    /// An idle HTTP/1.1-over-TLS sender; closed ones are dropped on the way.
    fn ready_sender(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.retain(|s| !s.is_closed());
        let ready = senders.iter().rposition(http1::SendRequest::is_ready)?;
        Some(senders.swap_remove(ready))
    }

    /// Keeps an HTTP/1.1-over-TLS sender whose answer is coming: it is ready
    /// for the next request once that answer has been read.
    pub fn checkin_sender(&self, sender: http1::SendRequest<RequestBody>) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if senders.len() < self.config.upstream_keepalive_connections && !sender.is_closed() {
            senders.push(sender);
        }
    }

    /// `checkout` for a request that asks to upgrade (a WebSocket). To a
    /// TLS pod, that is a connection of its own, HTTP/1.1 whatever the pod
    /// prefers (HTTP/2 carries no upgrade), never pooled, since the upgrade
    /// takes it over.
    pub async fn checkout_upgrade(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<(Conn, Option<Duration>), ProxyError> {
        let Protocol::Tls(tls) = &self.protocol else {
            return self.checkout(connect_timeout, send_timeout).await;
        };
        let started = Instant::now();
        let stream = self
            .connect_tls(connect_timeout, send_timeout, &tls.config_h1, tls)
            .await?;
        let conn = self.spawn_http1(stream).await?;
        Ok((conn, Some(started.elapsed())))
    }

    /// TCP, then the TLS handshake (its failure is its own class).
    async fn connect_tls(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
        config: &Arc<rustls::ClientConfig>,
        tls: &super::tls::UpstreamTls,
    ) -> Result<tokio_rustls::client::TlsStream<UpstreamIo>, ProxyError> {
        let deadline = Instant::now() + connect_timeout;
        let stream = self.connect_tcp(connect_timeout).await?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let handshake = connector.connect(
            tls.server_name.clone(),
            UpstreamIo::new(stream, send_timeout),
        );
        match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => Err(ProxyError::ConnectTimeout),
            Ok(Err(error)) => {
                let reason = crate::telemetry::connections::tls_failure_reason(&error);
                metrics::counter!(crate::telemetry::UPSTREAM_TLS_FAILURES, "reason" => reason)
                    .increment(1);
                Err(ProxyError::TlsHandshake(error))
            }
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    /// `HTTPS`: HTTP/2 when the pod offers it (one multiplexed connection,
    /// kept), else HTTP/1.1.
    async fn connect_https(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
        tls: &super::tls::UpstreamTls,
    ) -> Result<Conn, ProxyError> {
        let deadline = Instant::now() + connect_timeout;
        let stream = self
            .connect_tls(connect_timeout, send_timeout, &tls.config, tls)
            .await?;
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            let sender = h2_handshake(self.addr, TokioIo::new(stream), deadline).await?;
            return Ok(Conn::H2(sender));
        }
        self.spawn_http1(stream).await
    }

    /// hyper's HTTP/1.1 client on a TLS stream, its connection driven by a
    /// task of its own (which hands the stream over on an upgrade).
    async fn spawn_http1(
        &self,
        stream: tokio_rustls::client::TlsStream<UpstreamIo>,
    ) -> Result<Conn, ProxyError> {
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            Upstream::Http1.opened();
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream TLS connection ended with an error");
            }
            Upstream::Http1.closed();
        });
        tracing::debug!(%addr, "new upstream TLS connection");
        Ok(Conn::Tls1(sender))
    }

    /// A new HTTP/1.1 connection, bypassing the idle list (also used to retry a
    /// request that a reused connection closed before sending), and the time it took.
    pub async fn connect_fresh(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<(Connection, Duration), ProxyError> {
        let started = Instant::now();
        let stream = self.connect_tcp(connect_timeout).await?;
        tracing::debug!(addr = %self.addr, "new upstream connection");
        Ok((Connection::new(stream, send_timeout), started.elapsed()))
    }

    fn take_idle(&self) -> Option<Connection> {
        let timeout = self.config.upstream_keepalive_timeout;
        loop {
            // Popped under the lock, checked outside it: the check may be a syscall.
            let entry = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            let mut conn = entry.conn;
            if entry.since.elapsed() < timeout && conn.is_open() {
                return Some(conn);
            }
        }
    }

    /// Takes back a connection whose response was read to the end.
    pub(super) fn checkin(&self, conn: Connection) {
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

    async fn connect_tcp(&self, connect_timeout: Duration) -> Result<TcpStream, ProxyError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout)?
            .map_err(ProxyError::Connect)?;
        // Small request and response heads must not wait for Nagle.
        stream.set_nodelay(true).map_err(ProxyError::Connect)?;
        Ok(stream)
    }

    async fn connect_h2(
        &self,
        connect_timeout: Duration,
        send_timeout: Duration,
        tls: Option<&super::tls::UpstreamTls>,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let deadline = Instant::now() + connect_timeout;
        let addr = self.addr;
        match tls {
            None => {
                let stream = self.connect_tcp(connect_timeout).await?;
                let io = TokioIo::new(UpstreamIo::new(stream, send_timeout));
                h2_handshake(addr, io, deadline).await
            }
            Some(tls) => {
                let stream = self
                    .connect_tls(connect_timeout, send_timeout, &tls.config, tls)
                    .await?;
                h2_handshake(addr, TokioIo::new(stream), deadline).await
            }
        }
    }
}

/// The HTTP/2 handshake over `io`, and the connection's task.
async fn h2_handshake<T>(
    addr: SocketAddr,
    io: T,
    deadline: Instant,
) -> Result<http2::SendRequest<RequestBody>, ProxyError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io);
    let (sender, connection) = tokio::time::timeout_at(deadline, handshake)
        .await
        .map_err(|_| ProxyError::ConnectTimeout)?
        .map_err(ProxyError::Handshake)?;
    tokio::spawn(async move {
        Upstream::H2c.opened();
        if let Err(error) = connection.await {
            tracing::debug!(%addr, %error, "upstream h2 connection ended with an error");
        }
        Upstream::H2c.closed();
    });
    tracing::debug!(%addr, "new upstream h2 connection");
    Ok(sender)
}

/// An h2c upstream socket, failing writes that stall longer than the send timeout
/// (nginx's `proxy_send_timeout`: between two successive writes). hyper wants `Unpin`
/// IO, hence the boxed timer (one allocation per connection, not per request).
pub struct UpstreamIo {
    stream: TcpStream,
    send_timeout: Duration,
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl UpstreamIo {
    fn new(stream: TcpStream, send_timeout: Duration) -> UpstreamIo {
        UpstreamIo {
            stream,
            send_timeout,
            stall: Box::pin(tokio::time::sleep(Duration::MAX)),
            stalled: false,
        }
    }

    /// Called when a write would block: start (or keep) the stall timer.
    fn on_write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.stalled {
            self.stalled = true;
            let timeout = self.send_timeout;
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
