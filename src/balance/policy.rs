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

/// ingress-nginx's `upstream-hash-by`: `$http_x_user`, `$cookie_session`,
/// `$remote_addr`, or any text of nginx variables (`$request_uri`,
/// `$host$uri`, `$arg_user`), as its Lua balancer reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashBy {
    Header(HeaderName),
    Cookie(String),
    ClientAddr,
    /// Text and request variables, concatenated: the request always has a key.
    Request(Vec<HashPart>),
}

/// One piece of an `upstream-hash-by` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashPart {
    Text(String),
    /// `$request_uri`: path and query as sent.
    RequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$host`.
    Host,
    /// `$args`.
    Args,
    /// `$arg_NAME`.
    Arg(String),
    Header(HeaderName),
    Cookie(String),
    ClientAddr,
}

/// Most pieces an `upstream-hash-by` text may have.
const MAX_HASH_PARTS: usize = 16;

impl HashPart {
    fn parse_var(name: &str) -> Result<HashPart, String> {
        Ok(match name {
            "request_uri" => HashPart::RequestUri,
            "uri" | "document_uri" => HashPart::Uri,
            "host" | "http_host" => HashPart::Host,
            "args" | "query_string" => HashPart::Args,
            "remote_addr" | "binary_remote_addr" => HashPart::ClientAddr,
            _ => {
                if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    HashPart::Arg(arg.to_owned())
                } else if let Some(cookie) = name.strip_prefix("cookie_").filter(|c| !c.is_empty())
                {
                    HashPart::Cookie(cookie.to_owned())
                } else if let Some(header) = name.strip_prefix("http_") {
                    HashPart::Header(
                        HeaderName::try_from(header.replace('_', "-"))
                            .map_err(|_| format!("invalid header in ${name}"))?,
                    )
                } else {
                    return Err(format!(
                        "${name} is not a variable upstream-hash-by can read"
                    ));
                }
            }
        })
    }

    fn append<B>(&self, request: &http::Request<B>, client: IpAddr, out: &mut String) {
        let uri = request.uri();
        match self {
            HashPart::Text(text) => out.push_str(text),
            HashPart::RequestUri => out.push_str(uri.path_and_query().map_or("/", |p| p.as_str())),
            HashPart::Uri => out.push_str(uri.path()),
            HashPart::Host => {
                let host = request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                out.push_str(host.or(uri.host()).unwrap_or(""));
            }
            HashPart::Args => out.push_str(uri.query().unwrap_or("")),
            HashPart::Arg(name) => {
                let value = uri
                    .query()
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        (k == name).then_some(v)
                    });
                out.push_str(value.unwrap_or(""));
            }
            HashPart::Header(name) => out.push_str(
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ),
            HashPart::Cookie(name) => out.push_str(cookie(request.headers(), name).unwrap_or("")),
            HashPart::ClientAddr => out.push_str(&client.to_string()),
        }
    }
}

impl HashBy {
    pub fn parse(value: &str) -> Result<HashBy, String> {
        let value = value.trim();
        if value == "$remote_addr" || value == "$binary_remote_addr" {
            return Ok(HashBy::ClientAddr);
        }
        let word = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if let Some(header) = value
            .strip_prefix("$http_")
            .filter(|h| !h.is_empty() && word(h))
        {
            let name = HeaderName::try_from(header.replace('_', "-"))
                .map_err(|_| format!("invalid header in {value:?}"))?;
            return Ok(HashBy::Header(name));
        }
        if let Some(cookie) = value.strip_prefix("$cookie_").filter(|c| !c.is_empty()) {
            if word(cookie) {
                return Ok(HashBy::Cookie(cookie.to_owned()));
            }
        }
        HashBy::parse_text(value)
    }

    /// Text with `$variables` (`${variable}` too).
    fn parse_text(value: &str) -> Result<HashBy, String> {
        let mut parts = Vec::new();
        let mut rest = value;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(HashPart::Text(rest[..at].to_owned()));
            }
            rest = &rest[at + 1..];
            let (name, after) = match rest.strip_prefix('{') {
                Some(braced) => braced.split_once('}').ok_or("'${' is not closed")?,
                None => {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    (&rest[..end], &rest[end..])
                }
            };
            parts.push(HashPart::parse_var(name)?);
            rest = after;
        }
        if !rest.is_empty() {
            parts.push(HashPart::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| !matches!(p, HashPart::Text(_))) {
            return Err(format!("upstream-hash-by {value:?} names no variable"));
        }
        if parts.len() > MAX_HASH_PARTS {
            return Err(format!(
                "upstream-hash-by {value:?} has more than {MAX_HASH_PARTS} pieces"
            ));
        }
        Ok(HashBy::Request(parts))
    }

    /// The request's key, for any form; `None` when a single header or
    /// cookie is missing (then the route's algorithm decides).
    pub fn key_of_request<B>(&self, request: &http::Request<B>, client: IpAddr) -> Option<u64> {
        match self {
            HashBy::Request(parts) => {
                let mut text = String::new();
                for part in parts {
                    part.append(request, client, &mut text);
                }
                Some(hash64(text.as_str()))
            }
            other => other.key(request.headers(), client),
        }
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
            // Read with the whole request (`key_of_request`).
            HashBy::Request(_) => return None,
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
    /// `upstream-hash-by-subset`: a key picks this many pods, and one of
    /// them at random takes the request.
    pub hash_subset: Option<usize>,
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
            hash_subset: None,
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
        assert!(
            HashBy::parse("$request_uri").is_ok(),
            "nginx variables are read"
        );
        assert_eq!(Algorithm::parse("Round-Robin"), Ok(Algorithm::RoundRobin));
        assert!(Algorithm::parse("random").is_err());
        assert_eq!(default_breaker().source, DEFAULT_BREAKER);
    }

    #[test]
    fn hash_by_reads_nginx_variables_and_their_combinations() {
        let request = |uri: &str| {
            http::Request::get(uri)
                .header("host", "shop.example")
                .body(())
                .unwrap()
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let by_uri = HashBy::parse("$request_uri").unwrap();
        let a = by_uri.key_of_request(&request("/a?x=1"), ip);
        assert_eq!(
            a,
            by_uri.key_of_request(&request("/a?x=1"), "10.0.0.2".parse().unwrap())
        );
        assert_ne!(a, by_uri.key_of_request(&request("/a?x=2"), ip));
        let combined = HashBy::parse("$host$uri").unwrap();
        assert_eq!(
            combined.key_of_request(&request("/p?q=1"), ip),
            Some(hash64("shop.example/p"))
        );
        let arg = HashBy::parse("${arg_user}-x").unwrap();
        assert_eq!(
            arg.key_of_request(&request("/?a=1&user=bob"), ip),
            Some(hash64("bob-x"))
        );
        // Single forms keep their meaning: a missing header has no key.
        assert_eq!(
            HashBy::parse("$http_x_user")
                .unwrap()
                .key_of_request(&request("/"), ip),
            None
        );
        assert!(HashBy::parse("plain text").is_err());
        assert!(HashBy::parse("$server_addr").is_err());
    }
}
