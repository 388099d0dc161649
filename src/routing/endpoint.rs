//! Endpoints: a ready pod address with the state that outlives table swaps (its
//! connection pool and its balancing statistics), the registry that hands that
//! state out, and the claim a request holds on the endpoint it was sent to.
//!
//! A table refers to endpoints through `Arc<EndpointState>` handed out by the
//! `EndpointRegistry`, keyed by the namespace of the Service that names the pod,
//! its address and protocol: a table rebuilt with the same pods gets the same
//! states, so upstream connection pools, latency estimates and breakers survive
//! every swap. The namespace is in the key because a tenant may point a Service
//! of its own at another tenant's pod address: its failures must then trip its
//! own breaker, never the one the owner's traffic goes through. States that no
//! table refers to any more are collected after a swap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::balance::pick::Candidate;
use crate::balance::EndpointStats;
use crate::upstream::h1::PoolOwner;
use crate::upstream::pool::{Pool, PoolConfig};
use crate::upstream::Protocol;

#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    pub pool: Pool,
    pub stats: EndpointStats,
}

impl PoolOwner for EndpointState {
    fn pool(&self) -> &Pool {
        &self.pool
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

#[derive(Debug)]
pub struct EndpointRegistry {
    pool_config: PoolConfig,
    states: Mutex<States>,
}

/// Which state an endpoint of a backend gets: namespace, address, protocol.
pub type EndpointKey = (Arc<str>, SocketAddr, Protocol);

type States = HashMap<EndpointKey, Arc<EndpointState>>;

impl EndpointRegistry {
    pub fn new(pool_config: PoolConfig) -> EndpointRegistry {
        EndpointRegistry {
            pool_config,
            states: Mutex::default(),
        }
    }

    /// The state for an address, created on first use. Called while building a
    /// table, never on the request path.
    pub fn endpoint(
        &self,
        namespace: &Arc<str>,
        addr: SocketAddr,
        protocol: Protocol,
    ) -> Arc<EndpointState> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        self.get_or_create(&mut states, namespace, addr, protocol)
    }

    /// The states for a backend's addresses, under one lock.
    pub fn endpoints(
        &self,
        namespace: &Arc<str>,
        addrs: &[SocketAddr],
        protocol: Protocol,
    ) -> Vec<Arc<EndpointState>> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        addrs
            .iter()
            .map(|&addr| self.get_or_create(&mut states, namespace, addr, protocol))
            .collect()
    }

    fn get_or_create(
        &self,
        states: &mut States,
        namespace: &Arc<str>,
        addr: SocketAddr,
        protocol: Protocol,
    ) -> Arc<EndpointState> {
        states
            .entry((namespace.clone(), addr, protocol))
            .or_insert_with(|| {
                Arc::new(EndpointState {
                    addr,
                    pool: Pool::new(addr, protocol, self.pool_config.clone()),
                    stats: EndpointStats::new(Instant::now()),
                })
            })
            .clone()
    }

    /// Like `collect_unused`, for just these addresses (those a change removed),
    /// so that the cost follows the size of the change.
    pub fn collect(&self, candidates: &[EndpointKey]) -> usize {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let mut collected = 0;
        for key in candidates {
            if states.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
                states.remove(key);
                collected += 1;
            }
        }
        collected
    }

    /// Drops states that only the registry still holds (their pods left every
    /// table); their idle connections close with them. Returns how many went.
    pub fn collect_unused(&self) -> usize {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let before = states.len();
        states.retain(|_, state| Arc::strong_count(state) > 1);
        before - states.len()
    }

    pub fn len(&self) -> usize {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
