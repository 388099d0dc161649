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

/// The slots, and their sum kept up to date as outcomes come in and slots
/// expire: the breaker reads the sum after every request, and adding up every
/// slot each time cost more than the rest of recording it.
#[derive(Debug, Clone)]
pub struct Window {
    slots: Vec<Slot>,
    totals: Totals,
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
            totals: Totals::default(),
        }
    }

    /// `second` is a monotonic clock in whole seconds.
    pub fn record(&mut self, second: u64, outcome: Outcome, latency: Duration) {
        self.expire(second);
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(second % len) as usize];
        // A slot still holding an older second was expired just now, so it is empty.
        slot.second = second;
        slot.requests += 1;
        self.totals.requests += 1;
        match outcome {
            Outcome::Response(code) => {
                add_code(&mut slot.codes, code, 1);
                add_code(&mut self.totals.codes, code, 1);
                let bucket = latency_bucket(latency.as_secs_f64() * 1e3);
                slot.latency[bucket] += 1;
                self.totals.latency[bucket] += 1;
            }
            Outcome::ConnectFailure | Outcome::NetworkError => {
                slot.network_errors += 1;
                self.totals.network_errors += 1;
            }
        }
    }

    /// The sum of the slots still inside the window at `second`.
    pub fn totals(&mut self, second: u64) -> &Totals {
        self.expire(second);
        &self.totals
    }

    /// Requests inside the window at `second`, without changing anything.
    pub fn requests(&self, second: u64) -> u32 {
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|slot| slot.second + len > second)
            .map(|slot| slot.requests)
            .sum()
    }

    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = Slot::default();
        }
        self.totals = Totals::default();
    }

    /// Takes the slots that fell out of the window out of the sum.
    fn expire(&mut self, second: u64) {
        let len = self.slots.len() as u64;
        for slot in &mut self.slots {
            if slot.requests == 0 || slot.second + len > second {
                continue;
            }
            let totals = &mut self.totals;
            totals.requests -= slot.requests;
            totals.network_errors -= slot.network_errors;
            for &(code, n) in &slot.codes {
                if let Some(i) = totals.codes.iter().position(|(c, _)| *c == code) {
                    totals.codes[i].1 -= n;
                    if totals.codes[i].1 == 0 {
                        totals.codes.swap_remove(i);
                    }
                }
            }
            for (t, s) in totals.latency.iter_mut().zip(slot.latency.iter()) {
                *t -= s;
            }
            slot.requests = 0;
            slot.network_errors = 0;
            slot.codes.clear();
            slot.latency = [0; LATENCY_BUCKETS];
        }
    }
}

fn add_code(codes: &mut Vec<(u16, u32)>, code: u16, n: u32) {
    match codes.iter_mut().find(|(c, _)| *c == code) {
        Some((_, m)) => *m += n,
        None => codes.push((code, n)),
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
        assert_eq!(w.requests(110), 2);
        assert_eq!(w.totals(111).requests(), 0.0);
        assert_eq!(w.totals(111).response_code_ratio(500, 600, 0, 600), 0.0);
    }

    /// The running sum always equals the slots added up from scratch.
    #[test]
    fn running_totals_match_the_slots() {
        let mut w = Window::new(Duration::from_secs(3));
        let mut rng = fastrand::Rng::with_seed(7);
        let mut second = 1000;
        for _ in 0..2000 {
            second += u64::from(rng.u8(..10) == 0) * rng.u64(1..5);
            let outcome = match rng.u8(..4) {
                0 => Outcome::NetworkError,
                1 => Outcome::Response(503),
                _ => Outcome::Response(200 + u16::from(rng.u8(..3))),
            };
            w.record(second, outcome, Duration::from_millis(rng.u64(..200)));
            let live: Vec<Slot> = w
                .slots
                .iter()
                .filter(|s| s.second + 3 > second)
                .cloned()
                .collect();
            let from_scratch = sum(&live);
            let totals = w.totals(second);
            assert_eq!(totals.requests, from_scratch.requests);
            assert_eq!(totals.network_errors, from_scratch.network_errors);
            assert_eq!(totals.latency, from_scratch.latency);
            let mut codes = totals.codes.clone();
            codes.sort_unstable();
            assert_eq!(codes, from_scratch.codes);
        }
    }

    fn sum(slots: &[Slot]) -> Totals {
        let mut totals = Totals::default();
        for slot in slots {
            totals.requests += slot.requests;
            totals.network_errors += slot.network_errors;
            for &(code, n) in &slot.codes {
                add_code(&mut totals.codes, code, n);
            }
            for (t, s) in totals.latency.iter_mut().zip(slot.latency.iter()) {
                *t += s;
            }
        }
        totals.codes.sort_unstable();
        totals
    }
}
