//! A rolling window of outcomes per endpoint (10 one-second slots by default):
//! what the circuit-breaker rule reads.

use std::time::Duration;

use super::expr::WindowStats;

/// Latency histogram bounds, in ms, growing by ~1.5x: 0.5 ms .. ~65 s.
const LATENCY_BUCKETS: usize = 30;

fn latency_bucket(ms: f64) -> usize {
    if ms <= 0.5 {
        return 0;
    }
    ((ms / 0.5).ln() / 1.5f64.ln())
        .ceil()
        .clamp(0.0, (LATENCY_BUCKETS - 1) as f64) as usize
}

fn bucket_upper_ms(i: usize) -> f64 {
    0.5 * 1.5f64.powi(i as i32)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Response(u16),
    /// Connecting failed or timed out: nothing reached the application.
    ConnectFailure,
    /// The connection broke or timed out after the request was sent.
    NetworkError,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    second: u64,
    requests: u32,
    network_errors: u32,
    /// Status code and count; a handful of distinct codes per second at most.
    codes: Vec<(u16, u32)>,
    latency: [u32; LATENCY_BUCKETS],
}

#[derive(Debug, Clone)]
pub struct Window {
    slots: Vec<Slot>,
}

/// The sum of the slots still inside the window.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    requests: u32,
    network_errors: u32,
    codes: Vec<(u16, u32)>,
    latency: [u32; LATENCY_BUCKETS],
}

impl Window {
    pub fn new(span: Duration) -> Window {
        let slots = span.as_secs().clamp(1, 600) as usize;
        Window {
            slots: vec![Slot::default(); slots],
        }
    }

    /// `second` is a monotonic clock in whole seconds.
    pub fn record(&mut self, second: u64, outcome: Outcome, latency: Duration) {
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(second % len) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot.requests += 1;
        match outcome {
            Outcome::Response(code) => {
                match slot.codes.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => slot.codes.push((code, 1)),
                }
                slot.latency[latency_bucket(latency.as_secs_f64() * 1e3)] += 1;
            }
            Outcome::ConnectFailure | Outcome::NetworkError => slot.network_errors += 1,
        }
    }

    pub fn totals(&self, second: u64) -> Totals {
        let len = self.slots.len() as u64;
        let mut totals = Totals::default();
        for slot in &self.slots {
            if slot.requests == 0 || slot.second + len <= second {
                continue;
            }
            totals.requests += slot.requests;
            totals.network_errors += slot.network_errors;
            for &(code, n) in &slot.codes {
                match totals.codes.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, m)) => *m += n,
                    None => totals.codes.push((code, n)),
                }
            }
            for (t, s) in totals.latency.iter_mut().zip(slot.latency.iter()) {
                *t += s;
            }
        }
        totals
    }

    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = Slot::default();
        }
    }
}

impl WindowStats for Totals {
    fn requests(&self) -> f64 {
        f64::from(self.requests)
    }

    fn network_error_ratio(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        f64::from(self.network_errors) / f64::from(self.requests)
    }

    fn response_code_ratio(&self, from: u16, to: u16, div_from: u16, div_to: u16) -> f64 {
        let count = |a: u16, b: u16| -> u32 {
            self.codes
                .iter()
                .filter(|(c, _)| *c >= a && *c < b)
                .map(|(_, n)| n)
                .sum()
        };
        let divisor = count(div_from, div_to);
        if divisor == 0 {
            return 0.0;
        }
        f64::from(count(from, to)) / f64::from(divisor)
    }

    fn latency_at_quantile_ms(&self, quantile: f64) -> f64 {
        let total: u32 = self.latency.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = (quantile / 100.0).clamp(0.0, 1.0) * f64::from(total);
        let mut seen = 0u32;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if f64::from(seen) >= rank {
                return bucket_upper_ms(i);
            }
        }
        bucket_upper_ms(LATENCY_BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_expiry() {
        let mut w = Window::new(Duration::from_secs(10));
        for i in 0..10 {
            let outcome = if i < 3 {
                Outcome::Response(503)
            } else {
                Outcome::Response(200)
            };
            w.record(100, outcome, Duration::from_millis(20));
        }
        w.record(101, Outcome::ConnectFailure, Duration::ZERO);
        w.record(101, Outcome::NetworkError, Duration::ZERO);
        let t = w.totals(101);
        assert_eq!(t.requests(), 12.0);
        assert!((t.network_error_ratio() - 2.0 / 12.0).abs() < 1e-9);
        assert!((t.response_code_ratio(500, 600, 0, 600) - 0.3).abs() < 1e-9);
        let p50 = t.latency_at_quantile_ms(50.0);
        assert!((20.0..31.0).contains(&p50), "{p50}");
        // Slots older than the window no longer count.
        assert_eq!(w.totals(110).requests(), 2.0);
        assert_eq!(w.totals(111).requests(), 0.0);
    }
}
