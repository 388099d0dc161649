//! `limit-connections`: requests in progress at once from one client
//! address, per Ingress, as nginx's `limit_conn` (keyed by
//! `$binary_remote_addr`, released when the answer has been sent). Over
//! the limit, the request is refused (`limit-conn-status-code`, 503).
//!
//! One map per Ingress, holding only the addresses with a request in
//! progress: it never grows past the requests in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::canary::Cidr;

#[derive(Debug)]
pub struct ConnLimiter {
    max: u32,
    /// Client ranges never limited (`limit-whitelist`).
    exempt: Vec<Cidr>,
    active: Mutex<HashMap<IpAddr, u32>>,
    rejected: metrics::Counter,
}

/// The client address has as many requests in progress as it may.
#[derive(Debug)]
pub struct OverLimit;

/// One request in progress; its address's count goes down when it drops.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    client: IpAddr,
}

impl ConnLimiter {
    pub fn new(max: u32, exempt: Vec<Cidr>, namespace: &str, ingress: &str) -> ConnLimiter {
        let labels = [
            ("namespace", namespace.to_owned()),
            ("ingress", ingress.to_owned()),
        ];
        ConnLimiter {
            max,
            exempt,
            active: Mutex::default(),
            rejected: metrics::counter!(crate::telemetry::RATE_LIMITED, &labels),
        }
    }

    /// Whether this limiter does what `max` and `exempt` say (a table swap
    /// keeps it, and its counts, when it does).
    pub fn is(&self, max: u32, exempt: &[Cidr]) -> bool {
        self.max == max && self.exempt == exempt
    }

    /// A slot for one more request from `client` (`None`: exempt), or
    /// `OverLimit` when it has `max` in progress already.
    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Result<Option<ConnSlot>, OverLimit> {
        if self.exempt.iter().any(|c| c.contains(client)) {
            return Ok(None);
        }
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let count = active.entry(client).or_insert(0);
        if *count >= self.max {
            drop(active);
            self.rejected.increment(1);
            return Err(OverLimit);
        }
        *count += 1;
        Ok(Some(ConnSlot {
            limiter: self.clone(),
            client,
        }))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut active = self
            .limiter
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = active.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                active.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_count_and_slots_give_it_back() {
        let limiter = Arc::new(ConnLimiter::new(
            2,
            vec![Cidr::parse("10.9.0.0/16").unwrap()],
            "ns",
            "app",
        ));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let first = limiter.acquire(a).unwrap();
        let second = limiter.acquire(a).unwrap();
        assert!(limiter.acquire(a).is_err(), "a third at once is refused");
        assert!(
            limiter.acquire(b).unwrap().is_some(),
            "another address is not"
        );
        drop(first);
        let third = limiter.acquire(a).unwrap();
        assert!(third.is_some());
        drop((second, third));
        assert!(limiter.active.lock().unwrap().is_empty(), "nothing kept");
        for _ in 0..5 {
            assert!(limiter
                .acquire("10.9.1.1".parse().unwrap())
                .unwrap()
                .is_none());
        }
    }
}
