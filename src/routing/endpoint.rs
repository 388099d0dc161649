//! Endpoints: a ready pod address with the state that outlives table swaps (its
//! connection pool and its balancing statistics), and the claim a request holds
//! on the endpoint it was sent to.
//!
//! A table refers to endpoints through `Arc<EndpointState>`, handed out by the
//! home of retained state (`discovery::retained`) and keyed by the namespace of
//! the Service that names the pod, its address and protocol (`EndpointKey`): a
//! table rebuilt with the same pods gets the same states, so upstream connection
//! pools, latency estimates and breakers survive every swap. The namespace is in
//! the key because a tenant may point a Service of its own at another tenant's
//! pod address: its failures must then trip its own breaker, never the one the
//! owner's traffic goes through.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::balance::pick::Candidate;
use crate::balance::EndpointStats;
use crate::upstream::pool::{Pool, PoolConfig};
use crate::upstream::Protocol;

/// Which state an endpoint of a backend gets: namespace, address, protocol.
pub type EndpointKey = (Arc<str>, SocketAddr, Protocol);

#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    protocol: Protocol,
    pool_config: Arc<PoolConfig>,
    /// Made on the first request: most endpoints of a big cluster get none
    /// through a given instance. Shared with the answers whose connections go
    /// back to it.
    pool: OnceLock<Arc<Pool>>,
    pub stats: EndpointStats,
}

impl EndpointState {
    pub fn new(
        addr: SocketAddr,
        protocol: Protocol,
        pool_config: Arc<PoolConfig>,
        stats: EndpointStats,
    ) -> EndpointState {
        EndpointState {
            addr,
            protocol,
            pool_config,
            pool: OnceLock::new(),
            stats,
        }
    }

    /// The endpoint's connection pool, made on first use.
    pub fn pool(&self) -> &Arc<Pool> {
        self.pool.get_or_init(|| {
            Arc::new(Pool::new(
                self.addr,
                self.protocol.clone(),
                PoolConfig::clone(&self.pool_config),
            ))
        })
    }

    /// Idle connections kept, without making a pool to count them.
    pub fn idle_connections(&self) -> usize {
        self.pool.get().map_or(0, |pool| pool.idle_count())
    }
}

/// A ready pod address, with the state that outlives table swaps.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }
}

impl Candidate for Endpoint {
    fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    fn stats(&self) -> &EndpointStats {
        &self.state.stats
    }
}

/// Counts a request as in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    pub fn new(endpoint: Arc<EndpointState>) -> InFlight {
        endpoint.stats.begin_request();
        InFlight(endpoint)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.end_request();
    }
}

/// The endpoint a request was sent to, claimed until its answer is done.
#[derive(Debug)]
pub struct Pick {
    pub endpoint: Endpoint,
    /// This request is the breaker's HalfOpen probe.
    pub probe: bool,
    /// Chosen in panic mode (every candidate was ejected).
    pub panic: bool,
    pub in_flight: InFlight,
}
