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
    states: Mutex<HashMap<(SocketAddr, Protocol), Arc<EndpointState>>>,
}

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
