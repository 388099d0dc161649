//! How a route balances: the algorithm, an optional hash key for affinity, and
//! the circuit-breaker rule. Set globally (config file) and per Ingress
//! (`load-balance`, `upstream-hash-by`, `circuit-breaker` annotations).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, COOKIE};
use http::HeaderMap;

use super::expr::BreakerRule;

pub const DEFAULT_BREAKER: &str = "NetworkErrorRatio() > 0.5 && RequestThreshold() >= 10";
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
pub const DEFAULT_SLOW_START: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Power of two choices over latency EWMA x (in-flight + 1).
    #[default]
    Ewma,
    RoundRobin,
    /// Power of two choices over in-flight requests.
    LeastRequest,
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(value: &str) -> Result<Algorithm, String> {
        Algorithm::parse(value)
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Ewma => "ewma",
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastRequest => "least_request",
        })
    }
}

impl Algorithm {
    pub fn parse(value: &str) -> Result<Algorithm, String> {
        match value.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "ewma" => Ok(Algorithm::Ewma),
            "round_robin" => Ok(Algorithm::RoundRobin),
            "least_request" | "least_conn" => Ok(Algorithm::LeastRequest),
            _ => Err(format!(
                "unknown load-balance {value:?}: expected ewma, round_robin or least_request"
            )),
        }
    }
}

/// ingress-nginx's `upstream-hash-by`: `$http_x_user`, `$cookie_session`, `$remote_addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashBy {
    Header(HeaderName),
    Cookie(String),
    ClientAddr,
}

impl HashBy {
    pub fn parse(value: &str) -> Result<HashBy, String> {
        let value = value.trim();
        if value == "$remote_addr" || value == "$binary_remote_addr" {
            return Ok(HashBy::ClientAddr);
        }
        if let Some(header) = value.strip_prefix("$http_") {
            let name = HeaderName::try_from(header.replace('_', "-"))
                .map_err(|_| format!("invalid header in {value:?}"))?;
            return Ok(HashBy::Header(name));
        }
        if let Some(cookie) = value.strip_prefix("$cookie_").filter(|c| !c.is_empty()) {
            return Ok(HashBy::Cookie(cookie.to_owned()));
        }
        Err(format!("unsupported upstream-hash-by {value:?}: expected $http_NAME, $cookie_NAME or $remote_addr"))
    }

    /// sluice's own syntax for the same keys (`canary-sticky-by`):
    /// `cookie:NAME`, `header:NAME` or `client-ip`.
    pub fn parse_key(value: &str) -> Result<HashBy, String> {
        let value = value.trim();
        if value == "client-ip" {
            return Ok(HashBy::ClientAddr);
        }
        if let Some(name) = value.strip_prefix("cookie:").filter(|n| !n.is_empty()) {
            return Ok(HashBy::Cookie(name.to_owned()));
        }
        if let Some(name) = value.strip_prefix("header:") {
            return HeaderName::try_from(name)
                .map(HashBy::Header)
                .map_err(|_| format!("invalid header name {name:?}"));
        }
        Err(format!(
            "{value:?}: expected cookie:NAME, header:NAME or client-ip"
        ))
    }

    /// The request's key, hashed; `None` when the request has none (then the
    /// route's algorithm decides).
    pub fn key(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        Some(match self {
            HashBy::ClientAddr => hash64(&client),
            HashBy::Header(name) => hash64(headers.get(name)?.as_bytes()),
            HashBy::Cookie(name) => hash64(cookie(headers, name)?),
        })
    }
}

/// The one 64-bit hash sluice uses for keys (affinity, stickiness, limits, the
/// ring): deterministic, so equal keys agree across requests and tables.
pub fn hash64(value: &(impl Hash + ?Sized)) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(Debug, Clone, PartialEq)]
pub struct BalancePolicy {
    pub algorithm: Algorithm,
    pub hash_by: Option<HashBy>,
    pub breaker: Arc<BreakerRule>,
    /// How fast latency estimates forget.
    pub decay: Duration,
    /// New endpoints ramp up to a full share over this time.
    pub slow_start: Duration,
    /// Never eject more than this share of a backend's endpoints.
    pub max_ejection_percent: u8,
}

impl Default for BalancePolicy {
    fn default() -> Self {
        BalancePolicy {
            algorithm: Algorithm::default(),
            hash_by: None,
            breaker: Arc::new(default_breaker()),
            decay: DEFAULT_DECAY,
            slow_start: DEFAULT_SLOW_START,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

pub fn default_breaker() -> BreakerRule {
    BreakerRule::parse(DEFAULT_BREAKER).unwrap_or(BreakerRule {
        source: DEFAULT_BREAKER.into(),
        expr: super::expr::Expr::Compare(
            super::expr::Metric::RequestThreshold,
            super::expr::Op::Lt,
            0.0,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.insert(COOKIE, "a=1; session=s42".parse().unwrap());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let by_header = HashBy::parse("$http_x_user").unwrap();
        assert_eq!(by_header, HashBy::Header(HeaderName::from_static("x-user")));
        assert!(by_header.key(&headers, ip).is_some());
        assert_eq!(
            by_header.key(&headers, ip),
            by_header.key(&headers, "10.9.9.9".parse().unwrap())
        );
        let by_cookie = HashBy::parse("$cookie_session").unwrap();
        assert!(by_cookie.key(&headers, ip).is_some());
        assert_eq!(
            HashBy::parse("$cookie_missing").unwrap().key(&headers, ip),
            None
        );
        assert_ne!(
            HashBy::ClientAddr.key(&headers, ip),
            HashBy::ClientAddr.key(&headers, "10.0.0.2".parse().unwrap())
        );
        assert!(HashBy::parse("$request_uri").is_err());
        assert_eq!(Algorithm::parse("Round-Robin"), Ok(Algorithm::RoundRobin));
        assert!(Algorithm::parse("random").is_err());
        assert_eq!(default_breaker().source, DEFAULT_BREAKER);
    }
}
