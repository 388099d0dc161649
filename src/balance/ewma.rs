//! Latency estimates: an exponentially weighted moving average over time, with
//! the spread of the samples beside it, so that the balancer can tell a real
//! difference between two pods from noise (`pick`).
//!
//! Why not linkerd2-proxy's peak-EWMA, which this replaced: it jumps to any
//! slower sample at once and forgets it over the decay window. Among identical
//! pods with ordinary jitter that turns luck into a ranking: the pod whose last
//! answer was a little slow is avoided for seconds while another, lucky once,
//! takes far more than its share (measured: 25 against 338 requests where each
//! of ten should get 200). Here an estimate moves on evidence:
//!
//! * A sample's weight grows with the time since the last one (`1 - e^(-dt/decay)`),
//!   so a busy pod's estimate follows its many samples smoothly and one outlier
//!   among them moves it little, while an idle pod's next sample counts for more.
//! * No single sample moves the estimate more than half way (`MAX_WEIGHT`): the
//!   first answer of a new pod, or the first after a long pause, is blended with
//!   what was believed before (the backend's typical latency for a new pod).
//! * The mean absolute deviation of the samples is kept with the same weights:
//!   the noise the pick compares differences against.
//! * Without traffic the estimate decays back toward the backend's typical
//!   latency, so a pod that was slow once is tried again (nothing is starved for
//!   good).
//!
//! A pod that really turns slow still loses at once through its in-flight
//! count (the pick multiplies by it), then through its estimate as its slow
//! answers arrive.
//!
//! Lock-free: three atomics, updated by whoever finishes a request. Concurrent
//! updates may lose one observation; an estimate does not need more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No observation yet.
const UNSET: u64 = u64::MAX;

/// The most one sample may move an estimate (a fraction of the way to it).
pub const MAX_WEIGHT: f64 = 0.5;

#[derive(Debug)]
pub struct Ewma {
    /// Nanoseconds, as f64 bits.
    estimate: AtomicU64,
    /// Mean absolute deviation of the samples from the estimate, ns as f64 bits.
    deviation: AtomicU64,
    /// When it was last updated, in ns of the owner's clock.
    stamp: AtomicU64,
}

impl Default for Ewma {
    fn default() -> Self {
        Ewma {
            estimate: AtomicU64::new(UNSET),
            deviation: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
        }
    }
}

impl Ewma {
    /// Adds a sample. `prior`: what to believe before the first sample (the
    /// backend's typical latency), in ns.
    pub fn observe(
        &self,
        rtt: Duration,
        now_ns: u64,
        decay: Duration,
        prior: impl FnOnce() -> f64,
    ) {
        let rtt = rtt.as_nanos() as f64;
        let previous = self.estimate.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed));
        let (previous, weight) = if previous == UNSET {
            (prior(), MAX_WEIGHT)
        } else {
            let keep = weight(elapsed, decay);
            (f64::from_bits(previous), (1.0 - keep).min(MAX_WEIGHT))
        };
        let next = previous + (rtt - previous) * weight;
        let deviation = f64::from_bits(self.deviation.load(Ordering::Relaxed));
        let deviation = deviation + ((rtt - previous).abs() - deviation) * weight;
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.deviation.store(deviation.to_bits(), Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
    }

    /// A plain moving average over time, no cap: the typical latency of a
    /// backend, which starts at its first sample.
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

    /// The samples' mean absolute deviation, in ns (0 before any).
    pub fn deviation(&self) -> f64 {
        f64::from_bits(self.deviation.load(Ordering::Relaxed))
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
    fn one_sample_moves_an_estimate_at_most_half_way() {
        let e = Ewma::default();
        assert_eq!(e.estimate(0, DECAY, 7e6), 7e6, "typical until observed");
        // The first sample is blended with the prior.
        e.observe(Duration::from_millis(13), 0, DECAY, || 7e6);
        assert_eq!(e.estimate(0, DECAY, 0.0), 10e6);
        // Long after, a sample still moves it only half way.
        e.observe(Duration::from_millis(110), 3_600_000 * MS, DECAY, || 7e6);
        let est = e.estimate(3_600_000 * MS, DECAY, 0.0);
        assert_eq!(est, 60e6);
    }

    #[test]
    fn frequent_samples_move_it_little_each() {
        let e = Ewma::default();
        for i in 0..1_000 {
            e.observe(Duration::from_millis(4), i * MS, DECAY, || 4e6);
        }
        // One outlier among many: 1 ms after the last, it weighs 1e-4.
        e.observe(Duration::from_millis(400), 1_000 * MS, DECAY, || 4e6);
        let est = e.estimate(1_000 * MS, DECAY, 0.0);
        assert!((4e6..4.1e6).contains(&est), "{est}");
    }

    #[test]
    fn deviation_follows_the_spread() {
        let steady = Ewma::default();
        let noisy = Ewma::default();
        for i in 0..2_000u64 {
            let now = i * 10 * MS;
            steady.observe(Duration::from_millis(4), now, DECAY, || 4e6);
            let jitter = if i % 2 == 0 { 2 } else { 6 };
            noisy.observe(Duration::from_millis(jitter), now, DECAY, || 4e6);
        }
        assert!(steady.deviation() < 0.1e6, "{}", steady.deviation());
        let d = noisy.deviation();
        assert!((1.5e6..2.5e6).contains(&d), "{d}");
    }

    #[test]
    fn idle_estimates_return_to_typical() {
        let e = Ewma::default();
        e.observe(Duration::from_millis(500), 0, DECAY, || 5e6);
        let later = e.estimate(60_000 * MS, DECAY, 5e6);
        assert!((later - 5e6).abs() < 2e6, "{later}");
    }
}
