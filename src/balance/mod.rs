//! Per-endpoint state that outlives routing-table swaps.
//!
//! A table refers to endpoints through `Arc<EndpointState>` handed out by the
//! `EndpointRegistry`, keyed by address and protocol: a table rebuilt with the same
//! pods gets the same states, so upstream connection pools (and, with the balancing
//! issue, latency estimates and breakers) survive every swap. States that no table
//! refers to any more are collected after a swap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::PoolConfig;
use crate::proxy::pool::Pool;
use crate::routing::Protocol;

#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    pub pool: Pool,
}

#[derive(Debug)]
pub struct EndpointRegistry {
    pool_config: PoolConfig,
    states: Mutex<States>,
}

type States = HashMap<(SocketAddr, Protocol), Arc<EndpointState>>;

impl EndpointRegistry {
    pub fn new(pool_config: PoolConfig) -> EndpointRegistry {
        EndpointRegistry {
            pool_config,
            states: Mutex::default(),
        }
    }

    /// The state for an address, created on first use. Called while building a
    /// table, never on the request path.
    pub fn endpoint(&self, addr: SocketAddr, protocol: Protocol) -> Arc<EndpointState> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        self.get_or_create(&mut states, addr, protocol)
    }

    /// The states for a backend's addresses, under one lock.
    pub fn endpoints(&self, addrs: &[SocketAddr], protocol: Protocol) -> Vec<Arc<EndpointState>> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        addrs
            .iter()
            .map(|&addr| self.get_or_create(&mut states, addr, protocol))
            .collect()
    }

    fn get_or_create(
        &self,
        states: &mut States,
        addr: SocketAddr,
        protocol: Protocol,
    ) -> Arc<EndpointState> {
        states
            .entry((addr, protocol))
            .or_insert_with(|| {
                Arc::new(EndpointState {
                    addr,
                    pool: Pool::new(addr, protocol, self.pool_config.clone()),
                })
            })
            .clone()
    }

    /// Like `collect_unused`, for just these addresses (those a change removed),
    /// so that the cost follows the size of the change.
    pub fn collect(&self, candidates: &[(SocketAddr, Protocol)]) -> usize {
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
pub mod breaker;
pub mod ewma;
pub mod expr;
pub mod window;
