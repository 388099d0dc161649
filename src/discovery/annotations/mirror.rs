//! `mirror-target`, `mirror-request-body`, `mirror-host`: a copy of each
//! request goes to another server, as ingress-nginx's `mirror` location
//! (`proxy_pass TARGET` with `Host` set, the client's headers and body).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{invalid_at, lookup, AnnotationError};
use crate::routing::edits::Template;

/// Where the copies go, as the annotations say it.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorSpec {
    pub tls: bool,
    /// The server's name (lowercase) or address.
    pub host: String,
    pub port: u16,
    /// The path and query the copy asks for; `None`: ingress-nginx's quirk of
    /// a target without a path, which asks for its internal location,
    /// `/_mirror-UID`.
    pub path: Option<Template>,
    /// The copy's `Host` (`mirror-host`, else the target's host).
    pub host_header: String,
    /// `mirror-request-body` (`on` by default): the copy carries the body.
    pub body: bool,
}

pub(super) fn parse_mirror(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<MirrorSpec>, AnnotationError> {
    let Some((key, target)) = lookup(annotations, "mirror-target") else {
        return Ok(None);
    };
    let (tls, host, port, path) = split_target(target.trim()).map_err(|e| invalid_at(key, e))?;
    let path = (!path.is_empty())
        .then(|| Template::parse(path))
        .transpose()
        .map_err(|e| invalid_at(key, e))?;
    let host_header = match lookup(annotations, "mirror-host") {
        Some((key, value)) => {
            let value = value.trim();
            if !is_host_name(value) {
                return Err(invalid_at(key, format!("{value:?} is not a host name")));
            }
            value.to_owned()
        }
        None => host.clone(),
    };
    // As ingress-nginx: anything but `off` is `on`.
    let body = lookup(annotations, "mirror-request-body").is_none_or(|(_, v)| v.trim() != "off");
    Ok(Some(MirrorSpec {
        tls,
        host,
        port,
        path,
        host_header,
        body,
    }))
}

/// The host `mirror-target` names, for the background resolver: `None`
/// when there is none or it is an address.
pub fn mirror_name(annotations: &BTreeMap<String, String>) -> Option<String> {
    let (_, target) = lookup(annotations, "mirror-target")?;
    let (_, host, _, _) = split_target(target.trim()).ok()?;
    host.parse::<IpAddr>().is_err().then_some(host)
}

/// `http[s]://HOST[:PORT]REST` into its parts; the host must be a name or
/// an address, not a variable.
pub(super) fn split_target(target: &str) -> Result<(bool, String, u16, &str), String> {
    let (tls, rest) = if let Some(rest) = target.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = target.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("{target:?}: only http and https URLs"));
    };
    let end = rest.find(['/', '$', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 address.
        Some(v6) => {
            let (address, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{target:?}: '[' is not closed"))?;
            (address, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{target:?}: {port:?} is not a port"))?,
    };
    let host = host.to_ascii_lowercase();
    if host.parse::<IpAddr>().is_err() && !is_host_name(&host) {
        return Err(format!("{target:?}: the host must be a name or an address"));
    }
    Ok((tls, host, port, path))
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<MirrorSpec>, AnnotationError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect();
        parse_mirror(&map)
    }

    #[test]
    fn targets_as_ingress_nginx_documents_them() {
        let m = parse(&[("mirror-target", "https://Test.env.com$request_uri")])
            .unwrap()
            .unwrap();
        assert!(m.tls && m.body);
        assert_eq!((m.host.as_str(), m.port), ("test.env.com", 443));
        assert_eq!(m.host_header, "test.env.com");
        assert!(m.path.is_some());
        let m = parse(&[
            ("mirror-target", "http://10.0.0.7:8080/copy$request_uri"),
            ("mirror-host", "test.env.com"),
            ("mirror-request-body", "off"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((m.host.as_str(), m.port, m.body), ("10.0.0.7", 8080, false));
        assert_eq!(m.host_header, "test.env.com");
        let m = parse(&[("mirror-target", "http://[::1]:81")])
            .unwrap()
            .unwrap();
        assert_eq!((m.host.as_str(), m.port), ("::1", 81));
        assert!(m.path.is_none(), "ingress-nginx's quirk: its internal path");
        assert_eq!(parse(&[]).unwrap(), None);
    }

    #[test]
    fn hostile_targets_are_refused() {
        for bad in [
            "ftp://x",
            "http://$host/",
            "http://a:99999/",
            "http://a b/",
            "http://[::1/",
            "http:///x",
        ] {
            assert!(parse(&[("mirror-target", bad)]).is_err(), "{bad}");
        }
        assert!(parse(&[("mirror-target", "http://a"), ("mirror-host", "a\r\nx: y")]).is_err());
    }
}
