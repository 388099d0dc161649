//! Retries, bounded twice: by the route's rule (`proxy-next-upstream`, tries,
//! timeout) and by a retry budget per backend, so that retries cannot multiply
//! load during an outage (the lesson of two retrying tiers feeding an avalanche).
//!
//! By default only requests that never reached an upstream are retried (connect
//! refused or timed out, a pooled connection found dead before the request was
//! written), once, on another endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

/// ingress-nginx's `proxy-next-upstream-tries`.
pub const DEFAULT_TRIES: u32 = 3;
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 3;
const BUDGET_SECONDS: usize = 10;

/// ingress-nginx's `proxy-next-upstream` values that sluice accepts and never
/// acts on: answers it never retries, and `non_idempotent`.
pub const NOT_ACTED_ON: &[&str] = &[
    "invalid_header",
    "http_500",
    "http_403",
    "http_404",
    "http_429",
    "non_idempotent",
];

/// `proxy-next-upstream`: which failures move a request to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream {
    /// Nothing at all (`off`): not even requests that never reached a pod.
    pub off: bool,
    /// `error`: a connection broke after the request was sent.
    pub error: bool,
    /// `timeout`: the upstream did not answer in time.
    pub timeout: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
}

impl NextUpstream {
    /// No condition: only what never reached an upstream is sent again.
    pub const NONE: NextUpstream = NextUpstream {
        off: false,
        error: false,
        timeout: false,
        http_502: false,
        http_503: false,
        http_504: false,
    };
}

impl Default for NextUpstream {
    /// ingress-nginx's `error timeout` (for idempotent requests; what never
    /// reached an upstream is always sent again).
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
            ..NextUpstream::NONE
        }
    }
}

impl std::str::FromStr for NextUpstream {
    type Err = String;

    fn from_str(value: &str) -> Result<NextUpstream, String> {
        NextUpstream::parse(value)
    }
}

impl std::fmt::Display for NextUpstream {
    /// The tokens that mean something to sluice, space-separated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tokens = [
            (self.off, "off"),
            (self.error, "error"),
            (self.timeout, "timeout"),
            (self.http_502, "http_502"),
            (self.http_503, "http_503"),
            (self.http_504, "http_504"),
        ];
        let set: Vec<&str> = tokens
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, t)| *t)
            .collect();
        f.write_str(&set.join(" "))
    }
}

impl NextUpstream {
    pub fn parse(value: &str) -> Result<NextUpstream, String> {
        let mut next = NextUpstream::NONE;
        for token in value.split([' ', ',']).filter(|t| !t.is_empty()) {
            match token {
                "off" => next.off = true,
                "error" => next.error = true,
                "timeout" => next.timeout = true,
                "http_502" => next.http_502 = true,
                "http_503" => next.http_503 = true,
                "http_504" => next.http_504 = true,
                // Accepted for migrated Ingresses (with a warning); sluice never
                // retries these.
                token if NOT_ACTED_ON.contains(&token) => {}
                other => {
                    return Err(format!(
                        "unknown proxy-next-upstream value {other:?}: expected error, timeout, http_502, http_503, http_504 or off"
                    ))
                }
            }
        }
        Ok(next)
    }

    /// Whether a request that already went out may be sent again.
    pub fn resends_sent(&self) -> bool {
        !self.off && (self.error || self.timeout || self.http_502 || self.http_503 || self.http_504)
    }

    /// Whether some answer's status sends the request elsewhere.
    pub fn on_any_status(&self) -> bool {
        !self.off && (self.http_502 || self.http_503 || self.http_504)
    }

    pub fn on_status(&self, status: StatusCode) -> bool {
        !self.off
            && match status.as_u16() {
                502 => self.http_502,
                503 => self.http_503,
                504 => self.http_504,
                _ => false,
            }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub next_upstream: NextUpstream,
    /// Attempts in all, the first included; 0 means as many as there are endpoints.
    pub tries: u32,
    /// No retry starts after this much time since the first attempt.
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            next_upstream: NextUpstream::default(),
            tries: DEFAULT_TRIES,
            timeout: None,
        }
    }
}

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing reached the upstream.
    NotSent,
    /// The connection failed after the request was (maybe) sent.
    Error,
    Timeout,
    Status(StatusCode),
}

impl RetryPolicy {
    /// Whether the rule allows another attempt (the budget is asked separately).
    /// `replayable`: the request can be sent again (it came back unsent, or it
    /// had no body).
    pub fn allows(
        &self,
        failure: Failure,
        method: &Method,
        replayable: bool,
        attempts: u32,
        endpoints: usize,
        elapsed: Duration,
    ) -> bool {
        if self.next_upstream.off || !replayable {
            return false;
        }
        let limit = if self.tries == 0 {
            endpoints as u32
        } else {
            self.tries
        };
        if attempts >= limit || self.timeout.is_some_and(|t| elapsed >= t) {
            return false;
        }
        // Once a request may have reached an application, only idempotent ones go again.
        let idempotent = method.is_idempotent();
        match failure {
            Failure::NotSent => true,
            Failure::Error => self.next_upstream.error && idempotent,
            Failure::Timeout => self.next_upstream.timeout && idempotent,
            Failure::Status(status) => self.next_upstream.on_status(status) && idempotent,
        }
    }
}

/// Retries at most `ratio` of the requests of the last 10 s, plus a small floor
/// per second so that a quiet backend can still retry. Lock-free: one slot of
/// counters per second.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    seconds: [AtomicU64; BUDGET_SECONDS],
    requests: [AtomicU64; BUDGET_SECONDS],
    retries: [AtomicU64; BUDGET_SECONDS],
}

impl RetryBudget {
    /// The ratio and the floor it was made with.
    pub fn params(&self) -> (f64, u32) {
        (self.ratio, self.min_per_second)
    }

    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_second,
            seconds: Default::default(),
            requests: Default::default(),
            retries: Default::default(),
        }
    }

    fn slot(&self, second: u64) -> usize {
        let i = (second % BUDGET_SECONDS as u64) as usize;
        let current = self.seconds[i].load(Ordering::Acquire);
        if current != second
            && self.seconds[i]
                .compare_exchange(current, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // A new second in this slot: forget what it counted ten seconds ago.
            self.requests[i].store(0, Ordering::Release);
            self.retries[i].store(0, Ordering::Release);
        }
        i
    }

    pub fn deposit(&self, second: u64) {
        let i = self.slot(second);
        self.requests[i].fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn withdraw(&self, second: u64) -> bool {
        let i = self.slot(second);
        let live = |counters: &[AtomicU64; BUDGET_SECONDS]| -> u64 {
            (0..BUDGET_SECONDS)
                .filter(|&j| {
                    second.saturating_sub(self.seconds[j].load(Ordering::Acquire))
                        < BUDGET_SECONDS as u64
                })
                .map(|j| counters[j].load(Ordering::Acquire))
                .sum()
        };
        let allowed = (live(&self.requests) as f64 * self.ratio) as u64
            + u64::from(self.min_per_second) * BUDGET_SECONDS as u64;
        if live(&self.retries) >= allowed {
            return false;
        }
        self.retries[i].fetch_add(1, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ingress-nginx's `error timeout`, 3 tries: an idempotent request goes
    /// again after an error or a timeout; any request that never reached an
    /// upstream does; nothing goes a fourth time.
    #[test]
    fn default_retries_as_ingress_nginx() {
        let p = RetryPolicy::default();
        let t = Duration::ZERO;
        assert!(p.allows(Failure::NotSent, &Method::POST, true, 1, 3, t));
        assert!(p.allows(Failure::Error, &Method::GET, true, 2, 3, t));
        assert!(p.allows(Failure::Timeout, &Method::GET, true, 1, 3, t));
        assert!(
            !p.allows(Failure::NotSent, &Method::GET, true, 3, 3, t),
            "three tries in all"
        );
        assert!(
            !p.allows(Failure::Error, &Method::POST, true, 1, 3, t),
            "not idempotent"
        );
        let none = RetryPolicy {
            next_upstream: NextUpstream::parse("").unwrap(),
            ..RetryPolicy::default()
        };
        assert!(!none.allows(Failure::Error, &Method::GET, true, 1, 3, t));
        assert!(none.allows(Failure::NotSent, &Method::GET, true, 1, 3, t));
        assert!(!p.allows(
            Failure::Status(StatusCode::BAD_GATEWAY),
            &Method::GET,
            true,
            1,
            3,
            t
        ));
        assert!(
            !p.allows(Failure::NotSent, &Method::GET, false, 1, 3, t),
            "not replayable"
        );
    }

    #[test]
    fn configured_conditions() {
        let p = RetryPolicy {
            next_upstream: NextUpstream::parse("error timeout http_503").unwrap(),
            tries: 3,
            timeout: Some(Duration::from_secs(1)),
        };
        let t = Duration::ZERO;
        assert!(p.allows(
            Failure::Status(StatusCode::SERVICE_UNAVAILABLE),
            &Method::GET,
            true,
            2,
            3,
            t
        ));
        assert!(
            !p.allows(
                Failure::Status(StatusCode::SERVICE_UNAVAILABLE),
                &Method::POST,
                true,
                1,
                3,
                t
            ),
            "not idempotent"
        );
        assert!(!p.allows(
            Failure::Status(StatusCode::BAD_GATEWAY),
            &Method::GET,
            true,
            1,
            3,
            t
        ));
        assert!(p.allows(Failure::Timeout, &Method::PUT, true, 1, 3, t));
        assert!(
            !p.allows(
                Failure::Timeout,
                &Method::GET,
                true,
                1,
                3,
                Duration::from_secs(2)
            ),
            "past the timeout"
        );
        assert!(
            !p.allows(Failure::Error, &Method::GET, true, 3, 3, t),
            "tries"
        );
        let off = RetryPolicy {
            next_upstream: NextUpstream::parse("off").unwrap(),
            ..RetryPolicy::default()
        };
        assert!(!off.allows(Failure::NotSent, &Method::GET, true, 1, 3, t));
        assert!(NextUpstream::parse("error bogus").is_err());
    }

    #[test]
    fn budget_caps_retries_at_a_share_of_requests() {
        let budget = RetryBudget::new(0.2, 0);
        for _ in 0..100 {
            budget.deposit(50);
        }
        let granted = (0..100).filter(|_| budget.withdraw(50)).count();
        assert_eq!(granted, 20);
        // Ten seconds later the old requests no longer count.
        assert!(!budget.withdraw(61));
        let floor = RetryBudget::new(0.2, 1);
        assert_eq!(
            (0..100).filter(|_| floor.withdraw(7)).count(),
            10,
            "the floor: 1/s over 10 s"
        );
    }
}
