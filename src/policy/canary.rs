//! Canary releases, with ingress-nginx's annotations and semantics so canary
//! Ingresses migrate unchanged, plus what canary teams asked for on top.
//!
//! A second Ingress with `canary: "true"` for the same host and path carries the
//! rules. Precedence, as ingress-nginx: the header, then the cookie, then the
//! weight. sluice adds conditions (client address ranges, a User-Agent pattern;
//! all given ones must hold) and a sticky weight that hashes a user key, so the
//! same users always see the canary rather than a share of requests.

use std::net::IpAddr;

use http::header::{HeaderName, USER_AGENT};
use http::HeaderMap;
use regex::Regex;

use crate::balance::policy::{cookie, HashBy};

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    /// `always` / `never`; other values fall through.
    AlwaysNever,
    Value(String),
    Pattern(Regex),
}

/// An address range, `10.1.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A comma-separated list of address ranges, as config files write them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl std::str::FromStr for CidrList {
    type Err = String;

    fn from_str(list: &str) -> Result<CidrList, String> {
        list.split(',')
            .filter(|r| !r.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()
            .map(CidrList)
    }
}

impl std::fmt::Display for CidrList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, cidr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cidr}")?;
        }
        Ok(())
    }
}

impl Cidr {
    pub fn parse(value: &str) -> Result<Cidr, String> {
        let value = value.trim();
        let (ip, prefix) = value.split_once('/').unwrap_or((value, ""));
        let network: IpAddr = ip
            .parse()
            .map_err(|_| format!("{value:?} is not an address range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse()
                .map_err(|_| format!("{value:?}: bad prefix length"))?
        };
        if prefix > max {
            return Err(format!("{value:?}: prefix longer than {max}"));
        }
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CanaryRule {
    pub header: Option<(HeaderName, HeaderMatch)>,
    pub cookie: Option<String>,
    /// Out of `weight_total`.
    pub weight: Option<u32>,
    pub weight_total: u32,
    pub sources: Vec<Cidr>,
    pub user_agent: Option<Regex>,
    /// `canary-sticky-by`: the user key hashed into a stable bucket.
    pub sticky: Option<HashBy>,
}

impl CanaryRule {
    /// Whether this request goes to the canary.
    pub fn decide(&self, headers: &HeaderMap, client: IpAddr) -> bool {
        // The conditions come first and hold for every rule: a header or cookie
        // saying `always` does not take a client outside the ranges (or with
        // another User-Agent) to the canary.
        let conditions = !self.sources.is_empty() || self.user_agent.is_some();
        if !self.sources.is_empty() && !self.sources.iter().any(|c| c.contains(client)) {
            return false;
        }
        if let Some(pattern) = &self.user_agent {
            let agent = headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !pattern.is_match(agent) {
                return false;
            }
        }
        if let Some((name, matching)) = &self.header {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                match matching {
                    HeaderMatch::AlwaysNever if value == "always" => return true,
                    HeaderMatch::AlwaysNever if value == "never" => return false,
                    HeaderMatch::Value(wanted) if value == wanted => return true,
                    HeaderMatch::Pattern(pattern) if pattern.is_match(value) => return true,
                    _ => {}
                }
            }
        }
        if let Some(name) = &self.cookie {
            match cookie(headers, name) {
                Some("always") => return true,
                Some("never") => return false,
                _ => {}
            }
        }
        match self.weight {
            Some(weight) => self.by_weight(weight, headers, client),
            // Conditions alone send every matching request.
            None => conditions,
        }
    }

    fn by_weight(&self, weight: u32, headers: &HeaderMap, client: IpAddr) -> bool {
        let total = self.weight_total.max(1);
        if weight >= total {
            return true;
        }
        let sticky = self
            .sticky
            .as_ref()
            .and_then(|key| key.key(headers, client));
        // The same key always lands in the same bucket: the same users see the canary.
        let bucket = match sticky {
            Some(hash) => hash % u64::from(total),
            None => fastrand::u64(..u64::from(total)),
        };
        bucket < u64::from(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        h
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn precedence_header_then_cookie_then_weight() {
        let rule = CanaryRule {
            header: Some((
                HeaderName::from_static("x-canary"),
                HeaderMatch::AlwaysNever,
            )),
            cookie: Some("canary".into()),
            weight: Some(0),
            weight_total: 100,
            ..CanaryRule::default()
        };
        assert!(rule.decide(
            &headers(&[("x-canary", "always"), ("cookie", "canary=never")]),
            IP
        ));
        assert!(!rule.decide(
            &headers(&[("x-canary", "never"), ("cookie", "canary=always")]),
            IP
        ));
        assert!(rule.decide(
            &headers(&[("x-canary", "maybe"), ("cookie", "canary=always")]),
            IP
        ));
        assert!(!rule.decide(&headers(&[("cookie", "canary=never")]), IP));
        assert!(!rule.decide(&headers(&[]), IP), "weight 0");
        let all = CanaryRule {
            weight: Some(100),
            ..rule.clone()
        };
        assert!(all.decide(&headers(&[]), IP));
        assert!(!all.decide(&headers(&[("x-canary", "never")]), IP));
    }

    #[test]
    fn header_value_and_pattern() {
        let by_value = CanaryRule {
            header: Some((
                HeaderName::from_static("x-region"),
                HeaderMatch::Value("eu".into()),
            )),
            weight_total: 100,
            ..CanaryRule::default()
        };
        assert!(by_value.decide(&headers(&[("x-region", "eu")]), IP));
        assert!(!by_value.decide(&headers(&[("x-region", "us")]), IP));
        let by_pattern = CanaryRule {
            header: Some((
                HeaderName::from_static("x-user"),
                HeaderMatch::Pattern(Regex::new("^beta-").unwrap()),
            )),
            weight_total: 100,
            ..CanaryRule::default()
        };
        assert!(by_pattern.decide(&headers(&[("x-user", "beta-7")]), IP));
        assert!(!by_pattern.decide(&headers(&[("x-user", "alpha")]), IP));
    }

    #[test]
    fn conditions_must_all_hold() {
        let rule = CanaryRule {
            sources: vec![
                Cidr::parse("10.1.0.0/16").unwrap(),
                Cidr::parse("192.168.3.0/24").unwrap(),
            ],
            user_agent: Some(Regex::new("iPhone|iPad").unwrap()),
            weight_total: 100,
            ..CanaryRule::default()
        };
        let iphone = headers(&[("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")]);
        assert!(rule.decide(&iphone, IP));
        assert!(
            !rule.decide(&iphone, "10.2.0.1".parse().unwrap()),
            "outside the ranges"
        );
        assert!(
            rule.decide(&iphone, "::ffff:192.168.3.9".parse().unwrap()),
            "IPv4-mapped"
        );
        assert!(
            !rule.decide(&headers(&[("user-agent", "curl/8")]), IP),
            "not a matching device"
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn sticky_weight_is_stable_and_close_to_the_weight() {
        let rule = CanaryRule {
            weight: Some(10),
            weight_total: 100,
            sticky: Some(HashBy::parse_key("header:x-user-id").unwrap()),
            ..CanaryRule::default()
        };
        let mut canary = 0;
        for i in 0..10_000 {
            let h = headers(&[("x-user-id", &format!("user-{i}"))]);
            let first = rule.decide(&h, IP);
            for _ in 0..3 {
                assert_eq!(rule.decide(&h, IP), first, "user-{i} flips");
            }
            canary += usize::from(first);
        }
        let share = canary as f64 / 10_000.0;
        assert!((share - 0.10).abs() < 0.01, "{share}");
        assert!(HashBy::parse_key("cookie:").is_err());
        assert_eq!(HashBy::parse_key("client-ip"), Ok(HashBy::ClientAddr));
    }

    #[test]
    fn fuzzed_cidrs_never_panic() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        crate::fuzz::texts(
            &[
                "10.0.0.0/8",
                "::ffff:10.0.0.0/104",
                "2001:db8::/32",
                "0.0.0.0/0",
                "1.2.3.4",
            ],
            crate::fuzz::iterations(20_000),
            |text| {
                if let Ok(cidr) = Cidr::parse(text) {
                    cidr.contains(v4);
                    cidr.contains(v6);
                }
            },
        );
    }

    #[test]
    fn conditions_hold_even_for_always() {
        let rule = CanaryRule {
            header: Some((
                HeaderName::from_static("x-canary"),
                HeaderMatch::AlwaysNever,
            )),
            cookie: Some("canary".into()),
            sources: vec![Cidr::parse("192.168.0.0/16").unwrap()],
            weight_total: 100,
            ..CanaryRule::default()
        };
        let outside = IP;
        let inside: IpAddr = "192.168.1.1".parse().unwrap();
        assert!(!rule.decide(&headers(&[("x-canary", "always")]), outside));
        assert!(!rule.decide(&headers(&[("cookie", "canary=always")]), outside));
        assert!(rule.decide(&headers(&[("x-canary", "always")]), inside));
        assert!(!rule.decide(&headers(&[("x-canary", "never")]), inside));
    }
}
