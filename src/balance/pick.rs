//! Choosing an endpoint for a request, and learning from how it went.
//!
//! * `ewma`: power of two random choices over latency x (in-flight + 1), divided
//!   by the slow-start ramp, so new endpoints ease in. Two latency estimates
//!   count as different only when they differ by more than their noise (`prefer`):
//!   twice the samples' combined mean deviation, and at least a fifth of the
//!   smaller. Within it, load decides, and between equals the endpoint chosen
//!   longer ago wins. So identical pods share evenly (a round-robin among
//!   equals, which also keeps a short burst of sequential requests from missing
//!   any pod), while a pod that is really slower, or busier, loses.
//! * `least_request`: the same over in-flight requests only.
//! * `round_robin`.
//! * With a hash key (`upstream-hash-by`): the ring's endpoint for that key.
//!
//! Every algorithm skips endpoints whose breaker is open (and those this request
//! already tried). When nothing is left, all endpoints are used anyway (Envoy's
//! panic mode): a partial failure never becomes a total one by our hand.
//!
//! How the anchors handle this, and why this choice: linkerd2-proxy compares
//! peak-EWMA costs exactly (its default RTT for new endpoints is our typical
//! latency); Envoy's least-request weighs in-flight counts with an active-request
//! bias; Finagle's aperture narrows the set each client talks to. Exact cost
//! comparison is what made identical pods' shares follow their noise (one pod 25
//! of 2,000, another 338; `ewma` explains the estimator side). Comparing against
//! measured noise keeps latency awareness where it is real, and the
//! least-recently-chosen tie-break gives even shares without state beyond one
//! timestamp per endpoint.
//!
//! No lock is shared between requests: random choices come from the caller's
//! generator (thread-local on the data plane), estimates and counters are
//! per-endpoint atomics. The caller passes the clock and the randomness, and
//! turns the chosen index into a claimed endpoint (`routing::Backend::pick`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{BreakerState, Finished, Transition};
use super::policy::{hash64, Algorithm, BalancePolicy};
use super::window::Outcome;
use super::{BackendStats, EndpointStats, Random};

/// The latency assumed before a backend has answered anything.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(10);
/// A brand-new endpoint starts at this share of its weight.
const MIN_RAMP: f64 = 0.1;

/// What `pick` is given: an endpoint's address and its statistics.
pub trait Candidate {
    fn addr(&self) -> SocketAddr;
    fn stats(&self) -> &EndpointStats;
}

/// The endpoint chosen, by index into the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    /// This request is the breaker's HalfOpen probe.
    pub probe: bool,
    /// Chosen in panic mode (every candidate was ejected).
    pub panic: bool,
}

/// The consistent-hash ring over a set of candidates (ketama), built on first
/// use by a route with `upstream-hash-by`.
#[derive(Debug, Default)]
pub struct Ring(OnceLock<Vec<(u64, u32)>>);

/// Points per endpoint on the ring: enough for an even spread of keys.
const RING_POINTS: u64 = 160;

impl Ring {
    /// Each endpoint owns the arcs before its points, so removing an endpoint
    /// moves only its own keys.
    pub fn points<C: Candidate>(&self, candidates: &[C]) -> &[(u64, u32)] {
        self.0.get_or_init(|| {
            let mut ring = Vec::with_capacity(candidates.len() * RING_POINTS as usize);
            for (i, candidate) in candidates.iter().enumerate() {
                for point in 0..RING_POINTS {
                    ring.push((ring_point(candidate.addr(), point), i as u32));
                }
            }
            ring.sort_unstable();
            ring
        })
    }
}

fn ring_point(addr: SocketAddr, point: u64) -> u64 {
    hash64(&(addr, point))
}

/// A key the ring maps to this endpoint (its first point): what a
/// persistent affinity cookie holds.
pub fn endpoint_key(addr: SocketAddr) -> u64 {
    ring_point(addr, 0)
}

/// Chooses among `candidates` (none excluded by `exclude`, none ejected unless
/// all are). `ring` is the candidates' hash ring; `backend` their backend's
/// statistics.
#[allow(clippy::too_many_arguments)] // each is one input of the decision
pub fn pick<C: Candidate>(
    candidates: &[C],
    ring: &Ring,
    backend: &BackendStats,
    policy: &BalancePolicy,
    hash: Option<u64>,
    exclude: &[SocketAddr],
    now: Instant,
    random: &mut impl Random,
) -> Option<Choice> {
    let endpoints = candidates;
    if endpoints.is_empty() {
        return None;
    }
    let usable = |i: usize| {
        let e = &endpoints[i];
        !exclude.contains(&e.addr()) && e.stats().breaker.available(e.stats().nanos(now))
    };
    let typical = backend.typical_latency(now, DEFAULT_LATENCY);
    let stamp = backend.nanos(now);
    let prefer = |a: usize, b: usize| {
        let view = |i: usize| View::of(endpoints[i].stats(), policy, now, typical);
        prefer(&view(a), &view(b))
    };

    // Two rounds: an endpoint found available may lose its HalfOpen probe slot to
    // a concurrent request before we claim it.
    for _ in 0..2 {
        let chosen = match (hash, policy.algorithm) {
            (Some(key), _) => match policy.hash_subset {
                Some(size) => by_hash_subset(ring.points(endpoints), key, size, &usable, random),
                None => by_hash(ring.points(endpoints), key, &usable),
            },
            (None, Algorithm::RoundRobin) => round_robin(endpoints.len(), &backend.cursor, &usable),
            (None, Algorithm::Ewma | Algorithm::LeastRequest) => {
                power_of_two(endpoints.len(), &usable, &prefer, random)
            }
        };
        let Some(i) = chosen else { break };
        let stats = endpoints[i].stats();
        if let Some(probe) = stats.breaker.admit(stats.nanos(now)) {
            stats.mark_picked(stamp);
            return Some(Choice {
                index: i,
                probe,
                panic: false,
            });
        }
    }

    // Panic mode: every candidate is ejected. Ignore the breakers, but still avoid
    // endpoints this request already tried when there are others.
    metrics::counter!(crate::telemetry::BALANCER_PANICS).increment(1);
    let untried = |i: usize| !exclude.contains(&endpoints[i].addr());
    let any = |_: usize| true;
    let i = power_of_two(endpoints.len(), &untried, &prefer, random)
        .or_else(|| power_of_two(endpoints.len(), &any, &prefer, random))?;
    endpoints[i].stats().mark_picked(stamp);
    Some(Choice {
        index: i,
        probe: false,
        panic: true,
    })
}

/// Differences between two latency estimates smaller than this many mean
/// deviations (of the two, added) are noise.
const NOISE_DEVIATIONS: f64 = 2.0;
/// ...and never smaller than this share of the lower estimate.
const NOISE_FLOOR: f64 = 0.2;

/// One candidate as the comparison sees it.
#[derive(Debug, Clone, Copy)]
struct View {
    /// Latency estimate, ns (1 when latency is not compared).
    latency: f64,
    deviation: f64,
    /// (in-flight + 1) / slow-start ramp.
    load: f64,
    /// When last chosen (0 when ties go to the first, as least-request does).
    last_pick: u64,
}

impl View {
    fn of(stats: &EndpointStats, policy: &BalancePolicy, now: Instant, typical: f64) -> View {
        let ramp = if policy.slow_start.is_zero() {
            1.0
        } else {
            (now.saturating_duration_since(stats.since).as_secs_f64()
                / policy.slow_start.as_secs_f64())
            .clamp(MIN_RAMP, 1.0)
        };
        let load = (f64::from(stats.in_flight()) + 1.0) / ramp;
        match policy.algorithm {
            Algorithm::LeastRequest | Algorithm::RoundRobin => View {
                latency: 1.0,
                deviation: 0.0,
                load,
                last_pick: 0,
            },
            Algorithm::Ewma => View {
                latency: stats
                    .latency
                    .estimate(stats.nanos(now), policy.decay, typical)
                    .max(1.0),
                deviation: stats.latency.deviation(),
                load,
                last_pick: stats.last_pick(),
            },
        }
    }
}

/// Whether `a` should take the request rather than `b`: latency x load, with
/// latencies within their noise counted as equal; between equal costs, the one
/// chosen longer ago.
fn prefer(a: &View, b: &View) -> bool {
    let noise = (NOISE_DEVIATIONS * (a.deviation + b.deviation))
        .max(NOISE_FLOOR * a.latency.min(b.latency));
    let (la, lb) = if (a.latency - b.latency).abs() <= noise {
        (1.0, 1.0)
    } else {
        (a.latency, b.latency)
    };
    let (ca, cb) = (la * a.load, lb * b.load);
    if ca != cb {
        return ca < cb;
    }
    a.last_pick <= b.last_pick
}

/// Two distinct random candidates, the preferred one wins. When either is
/// unusable, falls back to choosing among the usable ones.
fn power_of_two(
    n: usize,
    usable: &impl Fn(usize) -> bool,
    prefer: &impl Fn(usize, usize) -> bool,
    random: &mut impl Random,
) -> Option<usize> {
    if n == 1 {
        return usable(0).then_some(0);
    }
    let a = random.below(n);
    let mut b = random.below(n - 1);
    if b >= a {
        b += 1;
    }
    match (usable(a), usable(b)) {
        (true, true) => Some(if prefer(a, b) { a } else { b }),
        (true, false) => Some(a),
        (false, true) => Some(b),
        (false, false) => {
            // Slow path, only while endpoints are ejected or already tried.
            let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
            match candidates.len() {
                0 => None,
                1 => Some(candidates[0]),
                m => {
                    let a = candidates[random.below(m)];
                    let b = candidates[random.below(m)];
                    Some(if prefer(a, b) { a } else { b })
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
    (0..n)
        .map(|k| start.wrapping_add(k) % n)
        .find(|&i| usable(i))
}

/// The first usable endpoint at or after the key's point on the ring.
fn by_hash(ring: &[(u64, u32)], key: u64, usable: &impl Fn(usize) -> bool) -> Option<usize> {
    let start = ring.partition_point(|(point, _)| *point < key);
    (0..ring.len())
        .map(|k| ring[(start + k) % ring.len()].1 as usize)
        .find(|&i| usable(i))
}

/// ingress-nginx's `chashsubset`: the key's subset is the first `size`
/// distinct endpoints on the ring from its point; one of them that is
/// usable, at random, takes the request (else the next usable one).
fn by_hash_subset(
    ring: &[(u64, u32)],
    key: u64,
    size: usize,
    usable: &impl Fn(usize) -> bool,
    random: &mut impl Random,
) -> Option<usize> {
    let start = ring.partition_point(|(point, _)| *point < key);
    let mut subset: Vec<usize> = Vec::with_capacity(size);
    for k in 0..ring.len() {
        let i = ring[(start + k) % ring.len()].1 as usize;
        if !subset.contains(&i) {
            subset.push(i);
            if subset.len() == size {
                break;
            }
        }
    }
    subset.retain(|&i| usable(i));
    if subset.is_empty() {
        return by_hash(ring, key, usable);
    }
    Some(subset[random.below(subset.len())])
}

/// Feeds the outcome of a request on `endpoint` back: its latency estimate,
/// its backend's typical latency and its breaker. `candidates` (the backend's
/// endpoints) are only looked at when the breaker would trip, to respect the
/// ejection limit. Returns the breaker's transition, if any, for the caller to
/// report.
#[allow(clippy::too_many_arguments)] // each is one input of the decision
pub fn record<'a, C: Candidate + 'a, S: AsRef<[C]>>(
    endpoint: &C,
    candidates: impl FnOnce() -> S,
    backend: &BackendStats,
    policy: &BalancePolicy,
    probe: bool,
    outcome: Outcome,
    latency: Duration,
    now: Instant,
    random: &mut impl Random,
) -> Option<Transition> {
    let stats = endpoint.stats();
    let nanos = stats.nanos(now);
    // A new endpoint's first sample is blended with what its peers answer in.
    let prior = || backend.typical_latency(now, DEFAULT_LATENCY);
    match outcome {
        Outcome::Response(_) => {
            stats.latency.observe(latency, nanos, policy.decay, prior);
            backend.observe_latency(now, latency);
        }
        // A timeout or broken connection counts as slow as it was.
        Outcome::NetworkError => stats.latency.observe(latency, nanos, policy.decay, prior),
        Outcome::ConnectFailure => {}
    }
    let finished = Finished {
        outcome,
        latency,
        now_ns: nanos,
        probe,
    };
    let may_eject = || {
        let candidates = candidates();
        let candidates = candidates.as_ref();
        let ejected = candidates
            .iter()
            .filter(|e| e.stats().breaker.state() != BreakerState::Closed)
            .count();
        (ejected + 1) * 100 <= usize::from(policy.max_ejection_percent) * candidates.len()
    };
    stats
        .breaker
        .record(finished, &policy.breaker, may_eject, random.unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::balance::simulation::{pod, Pod};

    // The clock and the randomness are the test's: these run the same on any
    // machine, at any speed.
    fn pods(since: &[Instant]) -> Vec<Pod> {
        since
            .iter()
            .enumerate()
            .map(|(i, &since)| pod(i, since, Duration::ZERO))
            .collect()
    }

    fn shares(
        pods: &[Pod],
        policy: &BalancePolicy,
        now: Instant,
        random: &mut fastrand::Rng,
    ) -> Vec<usize> {
        let backend = BackendStats::new(0, now);
        let ring = Ring::default();
        let mut counts = vec![0; pods.len()];
        for _ in 0..1_000 {
            let choice = pick(pods, &ring, &backend, policy, None, &[], now, random).unwrap();
            counts[choice.index] += 1;
        }
        counts
    }

    #[test]
    fn a_new_endpoint_ramps_up_over_slow_start() {
        let start = Instant::now();
        let policy = BalancePolicy {
            slow_start: Duration::from_secs(10),
            ..BalancePolicy::default()
        };
        let later = start + Duration::from_secs(3600);
        // One pod known for an hour, one that just appeared.
        let pods = pods(&[start, later]);
        let mut random = fastrand::Rng::with_seed(7);
        let at_once = shares(&pods, &policy, later, &mut random);
        assert_eq!(
            at_once[1], 0,
            "a brand-new pod loses every comparison: {at_once:?}"
        );
        let ramped = shares(&pods, &policy, later + Duration::from_secs(10), &mut random);
        assert!(
            (400..=600).contains(&ramped[1]),
            "after slow start, an even share: {ramped:?}"
        );
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let now = Instant::now();
        let pods = pods(&[now; 5]);
        let policy = BalancePolicy::default();
        let run = |seed| shares(&pods, &policy, now, &mut fastrand::Rng::with_seed(seed));
        assert_eq!(run(11), run(11));
    }

    #[test]
    fn round_robin_skips_excluded_endpoints() {
        let now = Instant::now();
        let pods = pods(&[now; 3]);
        let policy = BalancePolicy {
            algorithm: Algorithm::RoundRobin,
            ..BalancePolicy::default()
        };
        let backend = BackendStats::new(0, now);
        let mut random = fastrand::Rng::with_seed(1);
        let exclude = [pods[1].addr];
        let picked: Vec<usize> = (0..4)
            .map(|_| {
                pick(
                    &pods,
                    &Ring::default(),
                    &backend,
                    &policy,
                    None,
                    &exclude,
                    now,
                    &mut random,
                )
                .unwrap()
                .index
            })
            .collect();
        assert_eq!(picked, [0, 2, 2, 0]);
    }
}
