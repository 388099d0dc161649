//! `auth-tls-secret` and its keys: client certificates, per host, as
//! ingress-nginx's `ssl_verify_client`. The Secret (`ca.crt`, `ca.crl`) is
//! read by `translate`, which also decides which Ingress sets a host's.
//!
//! ingress-nginx ignores the whole group when one of its values is invalid,
//! which leaves the host open; sluice fails closed instead (403). An unknown
//! `auth-tls-verify-client` is `on`, as in ingress-nginx, with a warning.

use std::collections::BTreeMap;

use http::HeaderValue;

use super::values::tenant_regex;
use super::{fail_closed, lookup, parse_bool, Notice};
use crate::policy::client_cert::{ClientCaOptions, VerifyClient};

/// What the annotations ask; `translate` reads the Secret.
#[derive(Debug, Clone)]
pub struct ClientCertSpec {
    /// (namespace, else the Ingress's; name).
    pub secret: (Option<String>, String),
    pub options: ClientCaOptions,
}

/// `Err(key)`: the Ingress fails closed, for the reason in `notices`.
pub(super) fn parse_client_certs(
    annotations: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> Result<Option<ClientCertSpec>, String> {
    let Some((_, secret)) = lookup(annotations, "auth-tls-secret") else {
        return Ok(None);
    };
    let mut closed = |key: &str, reason: String| fail_closed(notices, key, &reason);
    let secret = secret.trim();
    let secret = match secret.split_once('/') {
        Some((namespace, name)) => (Some(namespace.to_owned()), name.to_owned()),
        None => (None, secret.to_owned()),
    };
    let mut warnings = Vec::new();
    let verify = match lookup(annotations, "auth-tls-verify-client") {
        None => VerifyClient::On,
        Some((key, value)) => VerifyClient::parse(value.trim()).unwrap_or_else(|| {
            warnings.push((
                key,
                format!(
                    "{value:?} is not on, off, optional or optional_no_ca; on, as in ingress-nginx"
                ),
            ));
            VerifyClient::On
        }),
    };
    let depth = match lookup(annotations, "auth-tls-verify-depth") {
        None => 1,
        Some((key, value)) => match value.trim().parse::<usize>() {
            // ingress-nginx: 0 or no number is the default, 1.
            Ok(depth) if depth <= 100 => depth.max(1),
            _ => {
                warnings.push((
                    key,
                    format!("{value:?} is not a depth; 1, as in ingress-nginx"),
                ));
                1
            }
        },
    };
    let pass_certificate = match lookup(annotations, "auth-tls-pass-certificate-to-upstream") {
        None => false,
        Some((key, value)) => match parse_bool(value) {
            Ok(pass) => pass,
            Err(e) => return Err(closed(key, e)),
        },
    };
    let match_cn = match lookup(annotations, "auth-tls-match-cn") {
        None => None,
        Some((key, value)) => {
            // ingress-nginx's validator: a regex that starts with `CN=`.
            if !value.starts_with("CN=") {
                return Err(closed(key, format!("{value:?} does not start with CN=")));
            }
            match tenant_regex(value) {
                Ok(regex) => Some(regex),
                Err(e) => return Err(closed(key, format!("not a regular expression: {e}"))),
            }
        }
    };
    let error_page = match lookup(annotations, "auth-tls-error-page") {
        None => None,
        Some((key, value)) => {
            let value = value.trim();
            let absolute = value.starts_with("http://") || value.starts_with("https://");
            let valid = absolute
                && !value
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                && value.len() > "https://".len();
            match HeaderValue::try_from(value).ok().filter(|_| valid) {
                Some(url) => Some(url),
                None if !absolute && !value.contains("://") && !value.is_empty() => {
                    warnings.push((key, format!("{value:?}: only an http(s) URL is supported (nginx's internal redirect to a location is not); the client gets the plain 400")));
                    None
                }
                None => return Err(closed(key, format!("{value:?} is not a URL"))),
            }
        }
    };
    for (key, message) in warnings {
        notices.push(Notice {
            key: key.to_owned(),
            reason: "annotation-differs",
            message: format!("{key}: {message}"),
        });
    }
    Ok(Some(ClientCertSpec {
        secret,
        options: ClientCaOptions {
            verify,
            depth,
            match_cn,
            error_page,
            pass_certificate,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::annotations::NGINX_PREFIX;

    fn parse(pairs: &[(&str, &str)]) -> (Result<Option<ClientCertSpec>, String>, Vec<Notice>) {
        let annotations = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), v.to_string()))
            .collect();
        let mut notices = Vec::new();
        (parse_client_certs(&annotations, &mut notices), notices)
    }

    #[test]
    fn defaults_are_ingress_nginxs() {
        let (spec, notices) = parse(&[("auth-tls-secret", "default/ca")]);
        let spec = spec.unwrap().unwrap();
        assert_eq!(spec.secret, (Some("default".into()), "ca".into()));
        assert_eq!(spec.options.verify, VerifyClient::On);
        assert_eq!(spec.options.depth, 1);
        assert!(!spec.options.pass_certificate);
        assert!(notices.is_empty());
        assert!(parse(&[("auth-tls-verify-client", "off")])
            .0
            .unwrap()
            .is_none());
    }

    #[test]
    fn odd_values_warn_and_bad_ones_fail_closed() {
        let (spec, notices) = parse(&[
            ("auth-tls-secret", "ca"),
            ("auth-tls-verify-client", "maybe"),
            ("auth-tls-verify-depth", "x"),
            ("auth-tls-error-page", "/cert-error"),
            ("auth-tls-match-cn", "CN=(alice|bob)"),
        ]);
        let spec = spec.unwrap().unwrap();
        assert_eq!(spec.options.verify, VerifyClient::On);
        assert_eq!(notices.len(), 3, "{notices:?}");
        assert!(spec.options.match_cn.unwrap().is_match("CN=bob,O=x"));
        for bad in [
            ("auth-tls-match-cn", "alice"),
            ("auth-tls-match-cn", "CN=(("),
            ("auth-tls-pass-certificate-to-upstream", "yes please"),
            ("auth-tls-error-page", "javascript://x\r\n"),
        ] {
            let (spec, notices) = parse(&[("auth-tls-secret", "ca"), bad]);
            assert!(spec.is_err(), "{bad:?}");
            assert_eq!(notices[0].reason, "fail-closed");
        }
    }
}
