//! Choosing an endpoint for a request, and learning from how it went.
//!
//! * `ewma`: power of two choices over latency x (in-flight + 1), divided by the
//!   slow-start ramp, so new endpoints ease in.
//! * `least_request`: the same over in-flight requests only.
//! * `round_robin`.
//! * With a hash key (`upstream-hash-by`): the ring's endpoint for that key.
//!
//! Every algorithm skips endpoints whose breaker is open (and those this request
//! already tried). When nothing is left, all endpoints are used anyway (Envoy's
//! panic mode): a partial failure never becomes a total one by our hand.
//!
//! No lock is shared between requests: random choices come from a thread-local
//! generator, estimates and counters are per-endpoint atomics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{BreakerState, Finished, Transition};
use super::policy::{Algorithm, BalancePolicy};
use super::window::Outcome;
use super::InFlight;
use crate::routing::{Backend, Endpoint, EndpointSet};

/// The latency assumed before a backend has answered anything.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(10);
/// A brand-new endpoint starts at this share of its weight.
const MIN_RAMP: f64 = 0.1;

#[derive(Debug)]
pub struct Pick {
    pub endpoint: Endpoint,
    /// This request is the breaker's HalfOpen probe.
    pub probe: bool,
    /// Chosen in panic mode (every candidate was ejected).
    pub panic: bool,
    pub in_flight: InFlight,
}

pub fn pick_endpoint(
    backend: &Backend,
    policy: &BalancePolicy,
    hash: Option<u64>,
    exclude: &[SocketAddr],
) -> Option<Pick> {
    let set = backend.endpoint_set();
    let endpoints = &set.endpoints;
    if endpoints.is_empty() {
        return None;
    }
    let now = Instant::now();
    let usable = |i: usize| {
        let e = &endpoints[i];
        !exclude.contains(&e.addr()) && e.state.stats.breaker.available(e.state.stats.nanos(now))
    };
    let typical = backend.typical_latency(DEFAULT_LATENCY);
    let cost = |i: usize| cost(&endpoints[i], policy, now, typical);

    // Two rounds: an endpoint found available may lose its HalfOpen probe slot to
    // a concurrent request before we claim it.
    for _ in 0..2 {
        let chosen = match (hash, policy.algorithm) {
            (Some(key), _) => by_hash(&set, key, &usable),
            (None, Algorithm::RoundRobin) => round_robin(endpoints.len(), &backend.cursor, &usable),
            (None, Algorithm::Ewma | Algorithm::LeastRequest) => {
                power_of_two(endpoints.len(), &usable, &cost)
            }
        };
        let Some(i) = chosen else { break };
        let endpoint = &endpoints[i];
        if let Some(probe) = endpoint
            .state
            .stats
            .breaker
            .admit(endpoint.state.stats.nanos(now))
        {
            return Some(claim(endpoint, probe, false));
        }
    }

    // Panic mode: every candidate is ejected. Ignore the breakers, but still avoid
    // endpoints this request already tried when there are others.
    metrics::counter!(crate::telemetry::BALANCER_PANICS).increment(1);
    let untried = |i: usize| !exclude.contains(&endpoints[i].addr());
    let any = |_: usize| true;
    let i = power_of_two(endpoints.len(), &untried, &cost)
        .or_else(|| power_of_two(endpoints.len(), &any, &cost))?;
    tracing::debug!(backend = %backend.name, "every endpoint is ejected: panic mode");
    Some(claim(&endpoints[i], false, true))
}

fn claim(endpoint: &Endpoint, probe: bool, panic: bool) -> Pick {
    Pick {
        endpoint: endpoint.clone(),
        probe,
        panic,
        in_flight: InFlight::new(endpoint.state.clone()),
    }
}

fn cost(endpoint: &Endpoint, policy: &BalancePolicy, now: Instant, typical: f64) -> f64 {
    let stats = &endpoint.state.stats;
    let load = f64::from(stats.in_flight()) + 1.0;
    let ramp = if policy.slow_start.is_zero() {
        1.0
    } else {
        (now.saturating_duration_since(stats.since).as_secs_f64() / policy.slow_start.as_secs_f64())
            .clamp(MIN_RAMP, 1.0)
    };
    let latency = match policy.algorithm {
        Algorithm::LeastRequest | Algorithm::RoundRobin => 1.0,
        Algorithm::Ewma => stats
            .latency
            .estimate(stats.nanos(now), policy.decay, typical)
            .max(1.0),
    };
    latency * load / ramp
}

/// Two distinct random candidates, the cheaper wins. When either is unusable,
/// falls back to choosing among the usable ones.
fn power_of_two(
    n: usize,
    usable: &impl Fn(usize) -> bool,
    cost: &impl Fn(usize) -> f64,
) -> Option<usize> {
    if n == 1 {
        return usable(0).then_some(0);
    }
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    match (usable(a), usable(b)) {
        (true, true) => Some(if cost(a) <= cost(b) { a } else { b }),
        (true, false) => Some(a),
        (false, true) => Some(b),
        (false, false) => {
            // Slow path, only while endpoints are ejected or already tried.
            let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
            match candidates.len() {
                0 => None,
                1 => Some(candidates[0]),
                m => {
                    let a = candidates[fastrand::usize(..m)];
                    let b = candidates[fastrand::usize(..m)];
                    Some(if cost(a) <= cost(b) { a } else { b })
                }
            }
        }
    }
}

fn round_robin(
    n: usize,
    cursor: &std::sync::atomic::AtomicUsize,
    usable: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
}

/// The first usable endpoint at or after the key's point on the ring.
fn by_hash(set: &EndpointSet, key: u64, usable: &impl Fn(usize) -> bool) -> Option<usize> {
    let ring = set.ring();
    let start = ring.partition_point(|(point, _)| *point < key);
    (0..ring.len())
        .map(|k| ring[(start + k) % ring.len()].1 as usize)
        .find(|&i| usable(i))
}

/// Feeds the outcome of a request back: latency estimates, the breaker, metrics.
pub fn record(
    backend: &Backend,
    policy: &BalancePolicy,
    pick: &Pick,
    outcome: Outcome,
    latency: Duration,
) {
    let state = &pick.endpoint.state;
    let stats = &state.stats;
    let nanos = stats.nanos(Instant::now());
    match outcome {
        Outcome::Response(_) => {
            stats.latency.observe(latency, nanos, policy.decay);
            backend.observe_latency(latency);
        }
        // A timeout or broken connection counts as slow as it was.
        Outcome::NetworkError => stats.latency.observe(latency, nanos, policy.decay),
        Outcome::ConnectFailure => {}
    }
    let finished = Finished {
        outcome,
        latency,
        now_ns: nanos,
        probe: pick.probe,
    };
    let may_eject = || {
        let set = backend.endpoint_set();
        let n = set.endpoints.len();
        let ejected = set
            .endpoints
            .iter()
            .filter(|e| e.state.stats.breaker.state() != BreakerState::Closed)
            .count();
        (ejected + 1) * 100 <= usize::from(policy.max_ejection_percent) * n
    };
    let Some(transition) =
        stats
            .breaker
            .record(finished, &policy.breaker, may_eject, fastrand::f64())
    else {
        return;
    };
    let endpoint = state.addr;
    let to = match transition {
        Transition::Tripped { ejection } => {
            tracing::warn!(%endpoint, backend = %backend.name, ejection_ms = ejection.as_millis() as u64, rule = %policy.breaker, "circuit breaker opened");
            // Rare, so the label set is resolved here rather than ahead.
            metrics::counter!(
                crate::telemetry::BREAKER_TRIPS,
                "namespace" => backend.name.namespace.clone(),
                "service" => backend.name.service.clone()
            )
            .increment(1);
            "open"
        }
        Transition::Reopened { ejection } => {
            tracing::info!(%endpoint, backend = %backend.name, ejection_ms = ejection.as_millis() as u64, "probe failed; circuit breaker open again");
            "open"
        }
        Transition::Closed => {
            tracing::info!(%endpoint, backend = %backend.name, "probe succeeded; circuit breaker closed");
            "closed"
        }
        Transition::TripDenied => {
            tracing::debug!(%endpoint, backend = %backend.name, "breaker rule holds, but the ejection limit is reached");
            "denied"
        }
    };
    metrics::counter!(crate::telemetry::BREAKER_TRANSITIONS, "to" => to).increment(1);
}
