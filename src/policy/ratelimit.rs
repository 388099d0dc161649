//! Per-Ingress rate limits, GCRA (the generic cell rate algorithm): one atomic
//! "theoretical arrival time" per limit, updated with compare-and-swap, so the
//! Ingress-wide limit takes no lock. Per-client limits keep one such time per key
//! in a sharded, bounded table: old keys are evicted, memory stays fixed however
//! many clients there are.
//!
//! Two meanings, by prefix. `sluice.io/limit-rps|rpm` (+ `limit-burst`) limit the
//! Ingress as a whole, all clients together (`limit-key` switches to per-client
//! keys). ingress-nginx's `limit-rps|rpm` (+ `limit-burst-multiplier`,
//! `limit-whitelist`) keep their per-client-address meaning.
//!
//! Limits hold per sluice instance. `limit-scope: cluster` divides the rate by the
//! configured number of instances: approximate, since traffic is rarely spread
//! evenly, but it needs no coordination on the request path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::header::HeaderName;
use http::HeaderMap;
use tokio::time::Instant;

use super::canary::Cidr;
use crate::balance::policy::hash64;

const SHARDS: usize = 64;
/// Per-client keys kept at most (across shards): a few MB whatever the traffic.
pub const MAX_KEYS: usize = 64 * 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The Ingress as a whole.
    Ingress,
    ClientIp,
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    pub per_second: f64,
    /// Requests allowed at once above the steady rate.
    pub burst: u32,
    pub key: LimitKey,
    /// Client ranges never limited (`limit-whitelist`).
    pub exempt: Vec<Cidr>,
}

#[derive(Debug)]
pub struct Limiter {
    spec: LimitSpec,
    /// Time between two requests at the steady rate, ns.
    interval: u64,
    /// How far ahead of now the arrival time may run: the burst, ns.
    tolerance: u64,
    clock: Instant,
    whole: AtomicU64,
    keyed: Vec<Mutex<HashMap<u64, u64>>>,
    rejected: metrics::Counter,
}

impl Limiter {
    pub fn new(spec: LimitSpec, namespace: &str, ingress: &str) -> Limiter {
        let interval = (1e9 / spec.per_second.max(1e-6)) as u64;
        let tolerance = interval.saturating_mul(u64::from(spec.burst));
        let keyed = match spec.key {
            LimitKey::Ingress => Vec::new(),
            _ => (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        };
        let labels = [
            ("namespace", namespace.to_owned()),
            ("ingress", ingress.to_owned()),
        ];
        Limiter {
            spec,
            interval,
            tolerance,
            clock: Instant::now(),
            whole: AtomicU64::new(0),
            keyed,
            rejected: metrics::counter!(crate::telemetry::RATE_LIMITED, &labels),
        }
    }

    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// `Err(retry_after)` when over the limit.
    pub fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), Duration> {
        if self.spec.exempt.iter().any(|c| c.contains(client)) {
            return Ok(());
        }
        let now = self.clock.elapsed().as_nanos() as u64 + self.tolerance + self.interval;
        let result = match &self.spec.key {
            LimitKey::Ingress => self.check_whole(now),
            LimitKey::ClientIp => self.check_key(hash64(&client), now),
            LimitKey::Header(name) => match headers.get(name) {
                Some(value) => self.check_key(hash64(value.as_bytes()), now),
                // No key: limited together, as one client.
                None => self.check_key(0, now),
            },
        };
        if result.is_err() {
            self.rejected.increment(1);
        }
        result
    }

    /// GCRA: allow when the arrival time is within the tolerance of now, then move
    /// it one interval on. (`now` is offset so that a fresh 0 reads as "long ago".)
    fn decide(&self, tat: u64, now: u64) -> Result<u64, Duration> {
        let tat = tat.max(now);
        if tat - now > self.tolerance {
            return Err(Duration::from_nanos(tat - now - self.tolerance));
        }
        Ok(tat + self.interval)
    }

    fn check_whole(&self, now: u64) -> Result<(), Duration> {
        let mut current = self.whole.load(Ordering::Acquire);
        loop {
            let next = self.decide(current, now)?;
            match self.whole.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    fn check_key(&self, key: u64, now: u64) -> Result<(), Duration> {
        let shard = &self.keyed[(key % SHARDS as u64) as usize];
        let mut tats = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = tats.get(&key).copied().unwrap_or(0);
        let next = self.decide(tat, now)?;
        let capacity = MAX_KEYS / SHARDS;
        if tats.len() >= capacity && !tats.contains_key(&key) {
            // Keys whose arrival time has passed know nothing a new key would not;
            // if that is not enough, drop an eighth at once so that this scan
            // happens once per many new keys, not for each.
            tats.retain(|_, t| *t > now);
            let excess = tats.len().saturating_sub(capacity - capacity / 8);
            let victims: Vec<u64> = tats.keys().take(excess).copied().collect();
            for victim in victims {
                tats.remove(&victim);
            }
        }
        tats.insert(key, next);
        Ok(())
    }

    /// Per-client keys held now.
    pub fn keys(&self) -> usize {
        self.keyed
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(per_second: f64, burst: u32, key: LimitKey) -> LimitSpec {
        LimitSpec {
            per_second,
            burst,
            key,
            exempt: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn steady_rate_and_burst() {
        let limiter = Limiter::new(spec(10.0, 5, LimitKey::Ingress), "ns", "ing");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let headers = HeaderMap::new();
        let allowed = (0..20)
            .filter(|_| limiter.check(&headers, ip).is_ok())
            .count();
        assert_eq!(allowed, 6, "the burst plus one");
        let retry = limiter.check(&headers, ip).unwrap_err();
        assert!(retry <= Duration::from_millis(100), "{retry:?}");
        // Over 10 s at the steady rate: 10 per second.
        let mut passed = 0;
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_millis(10)).await;
            passed += usize::from(limiter.check(&headers, ip).is_ok());
        }
        assert!((99..=101).contains(&passed), "{passed}");
    }

    #[tokio::test(start_paused = true)]
    async fn per_client_keys_and_exemptions() {
        let mut s = spec(1.0, 0, LimitKey::ClientIp);
        s.exempt = vec![Cidr::parse("192.168.0.0/16").unwrap()];
        let limiter = Limiter::new(s, "ns", "ing");
        let headers = HeaderMap::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.check(&headers, a).is_ok());
        assert!(limiter.check(&headers, a).is_err());
        assert!(
            limiter.check(&headers, b).is_ok(),
            "another client has its own budget"
        );
        let office: IpAddr = "192.168.1.1".parse().unwrap();
        assert!((0..10).all(|_| limiter.check(&headers, office).is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_million_keys_stay_bounded() {
        let limiter = Limiter::new(
            spec(1.0, 0, LimitKey::Header(HeaderName::from_static("x-user"))),
            "ns",
            "ing",
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        for i in 0..1_000_000u32 {
            headers.insert("x-user", i.into());
            let _ = limiter.check(&headers, ip);
        }
        assert!(limiter.keys() <= MAX_KEYS, "{}", limiter.keys());
    }
}
