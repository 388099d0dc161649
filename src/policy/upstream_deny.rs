//! Which pod addresses sluice refuses to send traffic to.
//!
//! A tenant who can write an EndpointSlice (or a Service with a hand-made one)
//! could otherwise point sluice at the node itself: its loopback services, the
//! cloud metadata endpoint (169.254.169.254), anything on the host network. The
//! apiserver refuses such addresses in EndpointSlices today; sluice does not rely
//! on that, nor on every apiserver doing it. In cluster mode loopback,
//! link-local, unspecified and multicast addresses are refused; the operator's
//! `upstream-deny-cidrs` adds to that (for example the nodes' own network). A
//! manifests directory is written by the operator, and may use loopback.

use std::net::IpAddr;

use super::canary::Cidr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamDeny {
    /// Refuse loopback, link-local, unspecified and multicast addresses.
    pub special: bool,
    /// Refuse these ranges too.
    pub cidrs: Vec<Cidr>,
    /// Never refuse these (`upstream-allow-cidrs`: the operator's exceptions,
    /// such as node-local pods in a development cluster).
    pub allowed: Vec<Cidr>,
}

impl UpstreamDeny {
    /// Why `ip` is refused, or `None` when traffic may go there.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        // `::ffff:127.0.0.1` is loopback as much as `127.0.0.1` is.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allowed.iter().any(|cidr| cidr.contains(ip)) {
            return None;
        }
        if self.special {
            let special = match ip {
                IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
                IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
                IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => Some("unspecified"),
                IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
                IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
                IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
                IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
                IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
                _ => None,
            };
            if special.is_some() {
                return special;
            }
        }
        self.cidrs
            .iter()
            .any(|cidr| cidr.contains(ip))
            .then_some("in upstream-deny-cidrs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_and_listed_ranges_are_refused() {
        let deny = UpstreamDeny {
            special: true,
            cidrs: vec![Cidr::parse("192.168.0.0/16").unwrap()],
            allowed: vec![Cidr::parse("127.0.0.2/32").unwrap()],
        };
        for (ip, why) in [
            ("127.0.0.1", Some("loopback")),
            ("127.1.2.3", Some("loopback")),
            ("127.0.0.2", None),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("ff02::1", Some("multicast")),
            ("192.168.1.1", Some("in upstream-deny-cidrs")),
            ("10.0.0.1", None),
            ("2001:db8::1", None),
        ] {
            assert_eq!(deny.refuses(ip.parse().unwrap()), why, "{ip}");
        }
        // A manifests directory: loopback is the operator's to use.
        assert_eq!(
            UpstreamDeny::default().refuses("127.0.0.1".parse().unwrap()),
            None
        );
    }
}
