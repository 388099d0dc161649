//! The per-endpoint circuit breaker: Closed -> Open (no traffic for an ejection
//! time that doubles on repeated trips, 1 s up to 60 s, with jitter) -> HalfOpen
//! (one probe request) -> Closed on success, Open again on failure.
//!
//! It trips when the route's rule (a Traefik expression over the rolling window)
//! holds, or at once after 5 consecutive connect failures. Admission is an atomic
//! load on the hot path; the window is behind a per-endpoint mutex touched once
//! per finished request, and allocated on the first one: most endpoints of a big
//! cluster see little or no traffic through a given instance, and a window is
//! about 1.8 KB.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::expr::BreakerRule;
use super::window::{Outcome, Window};

pub const CONSECUTIVE_CONNECT_FAILURES: u32 = 5;
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
pub const MAX_EJECTION: Duration = Duration::from_secs(60);
pub const WINDOW: Duration = Duration::from_secs(10);

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Rejecting until the ejection time is over.
    Open,
    /// One probe request is in flight.
    HalfOpen,
}

/// A finished request, as the breaker sees it.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub outcome: Outcome,
    pub latency: Duration,
    pub now_ns: u64,
    /// It was the HalfOpen probe.
    pub probe: bool,
}

/// What `record` changed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Tripped {
        ejection: Duration,
    },
    /// The rule held, but ejecting would exceed the backend's limit.
    TripDenied,
    Closed,
    Reopened {
        ejection: Duration,
    },
}

#[derive(Debug)]
pub struct Breaker {
    state: AtomicU8,
    open_until_ns: AtomicU64,
    /// Trips since the breaker was last closed for a full maximum ejection time.
    trips: AtomicU32,
    closed_at_ns: AtomicU64,
    connect_failures: AtomicU32,
    /// `None` until the first finished request.
    window: Mutex<Option<Box<Window>>>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            open_until_ns: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            closed_at_ns: AtomicU64::new(0),
            connect_failures: AtomicU32::new(0),
            window: Mutex::new(None),
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// Whether a request could go here now (Closed, or Open with the ejection over
    /// and the probe not yet taken). Does not change anything.
    pub fn available(&self, now_ns: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => now_ns >= self.open_until_ns.load(Ordering::Acquire),
            _ => false,
        }
    }

    /// Claims a request slot: `Some(false)` normally, `Some(true)` when this
    /// request is the HalfOpen probe, `None` when the breaker refuses it.
    pub fn admit(&self, now_ns: u64) -> Option<bool> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(false),
            OPEN if now_ns >= self.open_until_ns.load(Ordering::Acquire) => self
                .state
                .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| true),
            _ => None,
        }
    }

    /// Records a finished request. `may_eject` is asked before tripping (the
    /// backend's ejection limit); `jitter` is in [0, 1).
    pub fn record(
        &self,
        finished: Finished,
        rule: &BreakerRule,
        may_eject: impl FnOnce() -> bool,
        jitter: f64,
    ) -> Option<Transition> {
        let Finished {
            outcome,
            latency,
            now_ns,
            probe,
        } = finished;
        let success = matches!(outcome, Outcome::Response(code) if code < 500);
        let connect_failures = if outcome == Outcome::ConnectFailure {
            self.connect_failures.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.connect_failures.store(0, Ordering::Release);
            0
        };
        if probe {
            if success && outcome != Outcome::ConnectFailure {
                self.clear_window();
                self.closed_at_ns.store(now_ns, Ordering::Release);
                self.state.store(CLOSED, Ordering::Release);
                return Some(Transition::Closed);
            }
            let ejection = self.open(now_ns, jitter);
            return Some(Transition::Reopened { ejection });
        }
        let tripped = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let window = window.get_or_insert_with(|| Box::new(Window::new(WINDOW)));
            let second = now_ns / 1_000_000_000;
            window.record(second, outcome, latency);
            connect_failures >= CONSECUTIVE_CONNECT_FAILURES
                || rule.should_trip(window.totals(second))
        };
        if !tripped || self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        if !may_eject() {
            return Some(Transition::TripDenied);
        }
        if self
            .state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None; // another request tripped it just now
        }
        // Closed long enough since the last trip: start the backoff over.
        if now_ns.saturating_sub(self.closed_at_ns.load(Ordering::Acquire))
            > MAX_EJECTION.as_nanos() as u64
        {
            self.trips.store(0, Ordering::Release);
        }
        let ejection = self.open(now_ns, jitter);
        self.clear_window();
        Some(Transition::Tripped { ejection })
    }

    /// Requests this endpoint finished within the rolling window.
    pub fn recent_requests(&self, now_ns: u64) -> f64 {
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window
            .as_ref()
            .map_or(0.0, |w| f64::from(w.requests(now_ns / 1_000_000_000)))
    }

    fn clear_window(&self) {
        if let Some(window) = self
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            window.clear();
        }
    }

    fn open(&self, now_ns: u64, jitter: f64) -> Duration {
        let trips = self.trips.fetch_add(1, Ordering::AcqRel).min(16);
        let base = BASE_EJECTION.saturating_mul(1 << trips).min(MAX_EJECTION);
        // +-20% so that endpoints tripped together do not return together.
        let ejection = base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0));
        self.open_until_ns
            .store(now_ns + ejection.as_nanos() as u64, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        ejection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rule() -> BreakerRule {
        BreakerRule::parse("ResponseCodeRatio(500, 600, 0, 600) > 0.5 && RequestThreshold() >= 4")
            .unwrap()
    }

    fn finished(outcome: Outcome, now_ns: u64, probe: bool) -> Finished {
        Finished {
            outcome,
            latency: Duration::from_millis(5),
            now_ns,
            probe,
        }
    }

    fn record(b: &Breaker, outcome: Outcome, now: u64, probe: bool) -> Option<Transition> {
        b.record(finished(outcome, now, probe), &rule(), || true, 0.5)
    }

    #[test]
    fn trips_ejects_probes_and_backs_off() {
        let b = Breaker::default();
        for _ in 0..3 {
            assert_eq!(
                record(&b, Outcome::Response(500), S, false),
                None,
                "below the threshold"
            );
        }
        let t = record(&b, Outcome::Response(500), S, false);
        assert_eq!(
            t,
            Some(Transition::Tripped {
                ejection: BASE_EJECTION
            })
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.available(S + S / 2));
        assert_eq!(b.admit(S + S / 2), None);

        // After the ejection: one probe only.
        assert_eq!(b.admit(2 * S), Some(true));
        assert_eq!(b.admit(2 * S), None, "a single probe");
        // The probe fails: open again, for twice as long.
        assert_eq!(
            record(&b, Outcome::Response(503), 2 * S, true),
            Some(Transition::Reopened {
                ejection: 2 * BASE_EJECTION
            })
        );
        assert_eq!(b.admit(3 * S), None);
        assert_eq!(b.admit(4 * S), Some(true));
        assert_eq!(
            record(&b, Outcome::Response(200), 4 * S, true),
            Some(Transition::Closed)
        );
        assert_eq!(b.admit(4 * S), Some(false));
    }

    #[test]
    fn consecutive_connect_failures_trip_at_once() {
        let b = Breaker::default();
        let never = BreakerRule::parse("RequestThreshold() > 1000000").unwrap();
        let mut last = None;
        for _ in 0..CONSECUTIVE_CONNECT_FAILURES {
            last = b.record(
                finished(Outcome::ConnectFailure, S, false),
                &never,
                || true,
                0.0,
            );
        }
        assert!(matches!(last, Some(Transition::Tripped { .. })));
    }

    #[test]
    fn the_ejection_limit_can_deny_a_trip() {
        let b = Breaker::default();
        let always = BreakerRule::parse("RequestThreshold() >= 1").unwrap();
        let t = b.record(
            finished(Outcome::Response(500), S, false),
            &always,
            || false,
            0.0,
        );
        assert_eq!(t, Some(Transition::TripDenied));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn ejection_is_capped() {
        let b = Breaker::default();
        let mut ejection = Duration::ZERO;
        for _ in 0..10 {
            ejection = b.open(0, 0.5);
        }
        assert_eq!(ejection, MAX_EJECTION);
    }
}
