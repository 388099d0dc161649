//! One downstream connection: who it is from, what it has carried, and when it
//! has gone idle (the keep-alive watchdog in `listener` waits on `idle_for`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::HeaderValue;

use crate::policy::client_cert::PeerCertificate;
use crate::telemetry::connections::Downstream;

/// One downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Arrived on the TLS listener.
    pub tls: bool,
    pub requests: AtomicU32,
    /// Header values every request of this connection sends: formatted once.
    pub(super) client_ip: HeaderValue,
    pub(super) local_port: HeaderValue,
    /// Counted as open under this protocol until dropped: known after the TLS
    /// handshake, or, in plaintext, from the first request (h2c or HTTP/1).
    protocol: OnceLock<Downstream>,
    /// Requests started on this connection, for the idle watchdog (a count, not
    /// a time: reading the clock for every request costs more).
    started: AtomicU64,
    /// Reads that brought bytes from the client (see `activity`), counted by
    /// the connection's `activity::Counted` IO.
    reads: Arc<AtomicU64>,
    /// The client's certificate, judged after a handshake for a host that
    /// asks for one (`auth-tls-*`).
    pub client_cert: OnceLock<PeerCertificate>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            local,
            tls,
            requests: AtomicU32::new(0),
            client_ip: HeaderValue::try_from(peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("")),
            local_port: HeaderValue::from(local.port()),
            protocol: OnceLock::new(),
            started: AtomicU64::new(0),
            reads: Arc::default(),
            client_cert: OnceLock::new(),
        }
    }

    /// The count of reads from the client, for its `activity::Counted` IO.
    pub fn reads(&self) -> Arc<AtomicU64> {
        self.reads.clone()
    }

    /// What the idle watchdog watches change. Over HTTP/1, bytes on their way
    /// count as well as requests started, so a head still arriving is left to
    /// `client-header-timeout` rather than cut as idle. Over HTTP/2 only new
    /// streams count: pings and their answers are not use.
    fn activity(&self) -> u64 {
        let started = self.started.load(Ordering::Relaxed);
        match self.protocol.get() {
            Some(Downstream::H2 | Downstream::H2c) => started,
            _ => started.wrapping_add(self.reads.load(Ordering::Relaxed)),
        }
    }

    /// Notes that a request started.
    pub(super) fn touch(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns once the connection has been idle (`activity`) for `idle`.
    pub async fn idle_for(&self, idle: std::time::Duration) {
        super::activity::quiet_for(|| self.activity(), idle).await;
    }

    /// Counts the connection as open (once).
    pub fn count_as(&self, protocol: Downstream) {
        if self.protocol.get().is_none() && self.protocol.set(protocol).is_ok() {
            protocol.opened();
        }
    }
}

impl Drop for ConnInfo {
    fn drop(&mut self) {
        if let Some(protocol) = self.protocol.get() {
            protocol.closed();
        }
    }
}
