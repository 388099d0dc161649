//! Who the client is: the one real client address every decision uses (rate
//! limits, canary source ranges, `$remote_addr` hashing, the access log, the
//! `X-Forwarded-For` and `X-Real-IP` the pod sees).
//!
//! A client cannot choose it. By default it is the TCP peer, whatever headers
//! say (ingress-nginx without `use-forwarded-headers`). With
//! `use-forwarded-headers: true`, and only when the peer is in
//! `proxy-real-ip-cidr` (the edge tier), `X-Forwarded-For` is read from the
//! right: each hop added by a trusted proxy is skipped, and the first address
//! that is not trusted is the client (nginx's `real_ip_recursive on`).

use std::net::IpAddr;

use http::header::HeaderValue;
use http::HeaderMap;

use crate::policy::canary::Cidr;

/// Hops read from `X-Forwarded-For` at most: a client can make the header long,
/// not the walk.
const MAX_HOPS: usize = 32;

/// The request's client, as decided once.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    pub ip: IpAddr,
    /// `ip` as a header value (shared with the connection's when it is the peer).
    pub header: HeaderValue,
    /// The peer is a trusted proxy: its `X-Forwarded-Proto/Host/Port` stand.
    pub trusted_peer: bool,
}

/// The real client address behind `peer`.
pub fn real_client(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|value| value.to_str().unwrap_or_default().rsplit(','))
        .take(MAX_HOPS);
    for hop in hops {
        if !is_trusted(client) {
            break;
        }
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => client = ip,
            // Garbage where an address should be: stop at the last one known.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in xff {
            map.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let edge = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let cases: [(&[&str], IpAddr, &str); 7] = [
            (&["203.0.113.7"], peer, "203.0.113.7"),
            // The client's own claim sits left of the edge's addition.
            (&["1.1.1.1, 203.0.113.7"], peer, "203.0.113.7"),
            (&["1.1.1.1", "203.0.113.7, 10.0.0.9"], peer, "203.0.113.7"),
            (&["10.1.1.1, 10.2.2.2"], peer, "10.1.1.1"),
            (&["junk, 203.0.113.7"], peer, "203.0.113.7"),
            (&["203.0.113.7, junk"], peer, "10.0.0.5"),
            // An untrusted peer: headers say nothing.
            (&["1.1.1.1"], "192.0.2.1".parse().unwrap(), "192.0.2.1"),
        ];
        for (xff, peer, want) in cases {
            assert_eq!(
                real_client(peer, &headers(xff), &edge),
                want.parse::<IpAddr>().unwrap(),
                "{xff:?}"
            );
        }
        // Nobody trusted (the default): always the peer.
        assert_eq!(real_client(peer, &headers(&["1.1.1.1"]), &[]), peer);
    }

    #[test]
    fn fuzzed_forwarded_for_never_panics() {
        let all = vec![
            Cidr::parse("0.0.0.0/0").unwrap(),
            Cidr::parse("::/0").unwrap(),
        ];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        crate::fuzz::texts(
            &["203.0.113.7, 10.0.0.1", "2001:db8::1,::ffff:1.2.3.4"],
            crate::fuzz::iterations(10_000),
            |text| {
                if let Ok(value) = HeaderValue::from_str(text) {
                    let mut map = HeaderMap::new();
                    map.insert("x-forwarded-for", value);
                    real_client(peer, &map, &all);
                }
            },
        );
    }
}
