//! Peak-EWMA latency, as linkerd2-proxy and Finagle use it: a slower answer
//! raises the estimate at once, faster ones lower it with a decay window. Without
//! traffic the estimate decays back toward the backend's typical latency, so an
//! endpoint that was slow once is tried again (nothing is starved for good).
//!
//! Lock-free: two atomics, updated by whoever finishes a request. Concurrent
//! updates may lose one observation; an estimate does not need more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No observation yet.
const UNSET: u64 = u64::MAX;

#[derive(Debug)]
pub struct PeakEwma {
    /// Nanoseconds, as f64 bits.
    estimate: AtomicU64,
    /// When it was last updated, in ns of the owner's clock.
    stamp: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            estimate: AtomicU64::new(UNSET),
            stamp: AtomicU64::new(0),
        }
    }
}

impl PeakEwma {
    pub fn observe(&self, rtt: Duration, now_ns: u64, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let previous = self.estimate.load(Ordering::Relaxed);
        let next = if previous == UNSET {
            rtt
        } else {
            let previous = f64::from_bits(previous);
            if rtt > previous {
                rtt
            } else {
                let w = weight(
                    now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed)),
                    decay,
                );
                previous * w + rtt * (1.0 - w)
            }
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
    }

    /// A plain (not peak) moving average: the typical latency of a backend.
    pub fn observe_mean(&self, rtt: Duration, now_ns: u64, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let previous = self.estimate.load(Ordering::Relaxed);
        let next = if previous == UNSET {
            rtt
        } else {
            let w = weight(
                now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed)),
                decay,
            );
            f64::from_bits(previous) * w + rtt * (1.0 - w)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
    }

    /// The estimate in ns, decayed toward `typical` for the time since the last
    /// observation; `typical` when there is none.
    pub fn estimate(&self, now_ns: u64, decay: Duration, typical: f64) -> f64 {
        let bits = self.estimate.load(Ordering::Relaxed);
        if bits == UNSET {
            return typical;
        }
        let w = weight(
            now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed)),
            decay,
        );
        typical + (f64::from_bits(bits) - typical) * w
    }

    pub fn is_set(&self) -> bool {
        self.estimate.load(Ordering::Relaxed) != UNSET
    }
}

/// How much of the old value survives `elapsed`: e^(-elapsed/decay).
fn weight(elapsed_ns: u64, decay: Duration) -> f64 {
    let tau = decay.as_nanos().max(1) as f64;
    (-(elapsed_ns as f64) / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);
    const MS: u64 = 1_000_000;

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let e = PeakEwma::default();
        assert_eq!(e.estimate(0, DECAY, 7e6), 7e6, "typical until observed");
        e.observe(Duration::from_millis(10), 0, DECAY);
        e.observe(Duration::from_millis(100), MS, DECAY);
        assert_eq!(
            e.estimate(MS, DECAY, 0.0),
            100e6,
            "a slow answer counts at once"
        );
        // A fast answer 1 s later lowers it only partly (w = e^-0.1 ~ 0.905).
        e.observe(Duration::from_millis(10), 1001 * MS, DECAY);
        let est = e.estimate(1001 * MS, DECAY, 0.0);
        assert!((85e6..95e6).contains(&est), "{est}");
    }

    #[test]
    fn idle_estimates_return_to_typical() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(500), 0, DECAY);
        let later = e.estimate(60_000 * MS, DECAY, 5e6);
        assert!((later - 5e6).abs() < 2e6, "{later}");
    }
}
