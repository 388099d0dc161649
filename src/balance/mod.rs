//! Layer 1, pure decisions: which endpoint takes a request, and what its
//! answer teaches. Latency estimates (`ewma`), the circuit breaker (`breaker`,
//! its rule language `expr`, its outcome `window`), the choice itself (`pick`)
//! and the policy that configures them (`policy`).
//!
//! Nothing here knows tables, pools or sockets: `pick` works over any slice of
//! `Candidate`s, and the clock and randomness come in as arguments (`Random`),
//! so tests decide them. The state these decisions keep per endpoint
//! (`EndpointStats`) and per backend (`BackendStats`) is held by the model
//! (`routing`), in the one home that outlives table swaps.

pub mod breaker;
pub mod ewma;
pub mod expr;
pub mod pick;
pub mod policy;
#[cfg(test)]
mod simulation;
pub mod window;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Latency, load and health of one endpoint: what balancing reads.
#[derive(Debug)]
pub struct EndpointStats {
    /// Since when this address has been known: the slow-start ramp, and the
    /// origin of the nanosecond clock the atomics below use.
    pub since: Instant,
    pub latency: ewma::Ewma,
    in_flight: AtomicU32,
    /// When the balancer last chose it, on its backend's clock (`pick` breaks
    /// ties in favour of the one chosen longer ago).
    last_pick: AtomicU64,
    pub breaker: breaker::Breaker,
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats::new(Instant::now())
    }
}

impl EndpointStats {
    pub fn new(since: Instant) -> EndpointStats {
        EndpointStats {
            since,
            latency: ewma::Ewma::default(),
            in_flight: AtomicU32::new(0),
            last_pick: AtomicU64::new(0),
            breaker: breaker::Breaker::default(),
        }
    }

    pub fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.since).as_nanos() as u64
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn last_pick(&self) -> u64 {
        self.last_pick.load(Ordering::Relaxed)
    }

    fn mark_picked(&self, backend_ns: u64) {
        self.last_pick.store(backend_ns, Ordering::Relaxed);
    }

    /// A request starts on this endpoint (paired with `end_request`).
    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What balancing keeps per backend: the round-robin cursor and the typical
/// latency of its answers (where a new or idle endpoint's estimate starts and
/// returns to).
#[derive(Debug)]
pub struct BackendStats {
    pub cursor: AtomicUsize,
    typical: ewma::Ewma,
    clock: Instant,
}

/// The typical latency follows the backend's answers over about this long.
const TYPICAL_DECAY: Duration = Duration::from_secs(30);

impl BackendStats {
    /// `start`: where the round-robin cursor begins. Random in production, so
    /// that many sluice instances do not all hit the first pod together.
    pub fn new(start: usize, clock: Instant) -> BackendStats {
        BackendStats {
            cursor: AtomicUsize::new(start),
            typical: ewma::Ewma::default(),
            clock,
        }
    }

    /// The typical latency in ns at `now` (`default` before any answer).
    pub fn typical_latency(&self, now: Instant, default: Duration) -> f64 {
        let typical =
            self.typical
                .estimate(self.nanos(now), TYPICAL_DECAY, default.as_nanos() as f64);
        if typical.is_finite() {
            typical
        } else {
            default.as_nanos() as f64
        }
    }

    pub fn observe_latency(&self, now: Instant, latency: Duration) {
        self.typical
            .observe_mean(latency, self.nanos(now), TYPICAL_DECAY);
    }

    /// Whole seconds on this backend's clock (the retry budget's time).
    pub fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.clock).as_secs()
    }

    /// Nanoseconds on this backend's clock.
    pub fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.clock).as_nanos() as u64
    }
}

/// Randomness for balancing decisions, passed in so tests can fix it.
pub trait Random {
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize;
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64;
}

/// The thread's generator: what the data plane uses (no lock, no state to pass).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl Random for ThreadRandom {
    fn below(&mut self, n: usize) -> usize {
        fastrand::usize(..n)
    }

    fn unit(&mut self) -> f64 {
        fastrand::f64()
    }
}

impl Random for fastrand::Rng {
    fn below(&mut self, n: usize) -> usize {
        self.usize(..n)
    }

    fn unit(&mut self) -> f64 {
        self.f64()
    }
}
