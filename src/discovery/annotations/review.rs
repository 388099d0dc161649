//! Which of an Ingress's annotations sluice does not do as ingress-nginx does,
//! judged by the registry (`compat::registry`): a warning for each one, and
//! the annotation that makes the Ingress fail closed, if any.

use std::collections::BTreeMap;

use super::{split_key, GROUPED_KEYS, KNOWN_KEYS, SLUICE_PREFIX, SNIPPET_KEYS};
use crate::compat::registry::{self, Status};
use crate::compat::snippet;
use crate::policy::retry;

/// One warning about one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The full annotation name, with the prefix the user wrote.
    pub key: String,
    /// `unsupported-annotation`, `unknown-annotation`, `fail-closed`, ...
    pub reason: &'static str,
    pub message: String,
}

/// Keys that only the `sluice.io/` prefix gives their meaning (ingress-nginx's
/// `limit-*` keep their per-client meaning, see `parse_limit`).
const SLUICE_ONLY: &[&str] = &[
    "limit-burst",
    "limit-key",
    "limit-scope",
    "request-headers",
    "response-headers",
];

/// Keys that do nothing without another, as in ingress-nginx: one set alone
/// is a notice, never silence.
const NEEDS: &[(&str, &str)] = &[
    ("x-forwarded-prefix", "rewrite-target"),
    ("permanent-redirect-code", "permanent-redirect"),
    ("temporal-redirect-code", "temporal-redirect"),
    ("proxy-redirect-to", "proxy-redirect-from"),
    ("upstream-hash-by-subset", "upstream-hash-by"),
    ("upstream-hash-by-subset-size", "upstream-hash-by-subset"),
    ("limit-rate-after", "limit-rate"),
    ("mirror-host", "mirror-target"),
    ("mirror-request-body", "mirror-target"),
    ("affinity-mode", "affinity"),
    ("affinity-canary-behavior", "affinity"),
    ("session-cookie-name", "affinity"),
    ("session-cookie-path", "affinity"),
    ("session-cookie-domain", "affinity"),
    ("session-cookie-max-age", "affinity"),
    ("session-cookie-expires", "affinity"),
    ("session-cookie-samesite", "affinity"),
    ("session-cookie-secure", "affinity"),
    ("session-cookie-conditional-samesite-none", "affinity"),
    ("session-cookie-change-on-failure", "affinity"),
    ("auth-secret", "auth-type"),
    ("auth-secret-type", "auth-type"),
    ("auth-realm", "auth-type"),
    ("auth-method", "auth-url"),
    ("auth-signin", "auth-url"),
    ("auth-signin-redirect-param", "auth-url"),
    ("auth-response-headers", "auth-url"),
    ("auth-request-redirect", "auth-url"),
    ("auth-always-set-cookie", "auth-url"),
    ("auth-proxy-set-headers", "auth-url"),
    ("auth-snippet", "auth-url"),
    ("auth-cache-key", "auth-url"),
    ("auth-cache-duration", "auth-cache-key"),
    ("cors-allow-origin", "enable-cors"),
    ("cors-allow-methods", "enable-cors"),
    ("cors-allow-headers", "enable-cors"),
    ("cors-expose-headers", "enable-cors"),
    ("cors-allow-credentials", "enable-cors"),
    ("cors-max-age", "enable-cors"),
    ("auth-tls-verify-client", "auth-tls-secret"),
    ("auth-tls-verify-depth", "auth-tls-secret"),
    ("auth-tls-error-page", "auth-tls-secret"),
    ("auth-tls-pass-certificate-to-upstream", "auth-tls-secret"),
    ("auth-tls-match-cn", "auth-tls-secret"),
];

/// Whether sluice reads this key (without prefix) under this prefix.
pub fn sluice_reads(prefix: &str, name: &str) -> bool {
    let read = KNOWN_KEYS.contains(&name)
        || GROUPED_KEYS.contains(&name)
        || SNIPPET_KEYS.contains(&name)
        || super::affinity::AFFINITY_KEYS.contains(&name)
        || super::headers::HEADER_KEYS.contains(&name);
    read && (prefix == SLUICE_PREFIX || !SLUICE_ONLY.contains(&name))
}

/// The notices for these annotations, and the annotation (with a reason)
/// that makes the Ingress fail closed.
pub fn review(annotations: &BTreeMap<String, String>) -> (Vec<Notice>, Option<String>) {
    let mut notices = Vec::new();
    let mut fail_closed = None;
    for (key, value) in annotations {
        let Some((prefix, name)) = split_key(key) else {
            continue;
        };
        let notice = |reason, message: String| Notice {
            key: key.clone(),
            reason,
            message,
        };
        if sluice_reads(prefix, name) {
            let needed = NEEDS.iter().find(|(key, _)| *key == name).map(|(_, n)| *n);
            let present = |n: &str| {
                [SLUICE_PREFIX, super::NGINX_PREFIX]
                    .iter()
                    .any(|p| annotations.contains_key(&format!("{p}{n}")))
            };
            if let Some(needed) = needed.filter(|n| !present(n)) {
                let message =
                    format!("{key} has no effect without {needed} (as in ingress-nginx); ignored");
                notices.push(notice("annotation-differs", message));
            }
            if name == "proxy-next-upstream" {
                let ignored: Vec<&str> = value
                    .split([' ', ','])
                    .filter(|t| retry::NOT_ACTED_ON.contains(t))
                    .collect();
                if !ignored.is_empty() {
                    let message = format!(
                        "{key}: {} accepted but never retried by sluice; the other values apply",
                        ignored.join(", ")
                    );
                    notices.push(notice("annotation-differs", message));
                }
            }
            continue;
        }
        match registry::annotation(name).map(|k| k.status) {
            Some(Status::Supported | Status::Differs(_) | Status::NoEffect(_)) => {}
            Some(Status::Unsupported(note)) => {
                let access = name
                    .ends_with("-snippet")
                    .then(|| snippet::mentions_access(value))
                    .flatten();
                if let Some(directive) = access {
                    let message = format!(
                        "{key} is not supported and holds the access directive {directive:?}; this Ingress answers 403 until it is removed"
                    );
                    fail_closed.get_or_insert(format!("{key} ({directive})"));
                    notices.push(notice("fail-closed", message));
                } else {
                    let message = format!(
                        "{key} is not supported ({note}); ignored, the rest of the Ingress is served"
                    );
                    notices.push(notice("unsupported-annotation", message));
                }
            }
            Some(Status::FailsClosed(note)) => {
                let message = format!(
                    "{key} grants or restricts access and is not supported ({note}); this Ingress answers 403 until it is removed"
                );
                fail_closed.get_or_insert_with(|| key.clone());
                notices.push(notice("fail-closed", message));
            }
            None => {
                let message = format!(
                    "{key} is neither an ingress-nginx annotation nor a sluice one; ignored"
                );
                notices.push(notice("unknown-annotation", message));
            }
        }
    }
    (notices, fail_closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::annotations::NGINX_PREFIX;

    fn review_of(pairs: &[(&str, &str)]) -> (Vec<Notice>, Option<String>) {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        review(&map)
    }

    #[test]
    fn plain_ingresses_and_supported_keys_say_nothing() {
        assert_eq!(review_of(&[]), (vec![], None));
        let (notices, closed) = review_of(&[
            ("nginx.ingress.kubernetes.io/proxy-body-size", "8m"),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "on"),
            ("sluice.io/circuit-breaker", "NetworkErrorRatio() > 0.5"),
            ("kubernetes.io/ingress.class", "nginx"),
        ]);
        assert_eq!((notices, closed), (vec![], None));
    }

    #[test]
    fn unsupported_unknown_and_access_keys() {
        let (notices, closed) = review_of(&[
            ("nginx.ingress.kubernetes.io/enable-opentelemetry", "true"),
            (
                "nginx.ingress.kubernetes.io/whitelist-source-rnage",
                "10.0.0.0/8",
            ),
            (
                "nginx.ingress.kubernetes.io/modsecurity-snippet",
                "SecRuleEngine On",
            ),
            ("nginx.ingress.kubernetes.io/limit-burst", "5"),
            (
                "nginx.ingress.kubernetes.io/proxy-next-upstream",
                "error http_500",
            ),
        ]);
        let reasons: Vec<(&str, &str)> = notices
            .iter()
            .map(|n| (n.key.trim_start_matches(NGINX_PREFIX), n.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("enable-opentelemetry", "unsupported-annotation"),
                ("limit-burst", "unknown-annotation"),
                ("modsecurity-snippet", "fail-closed"),
                ("proxy-next-upstream", "annotation-differs"),
                ("whitelist-source-rnage", "unknown-annotation"),
            ]
        );
        assert_eq!(
            closed.as_deref(),
            Some("nginx.ingress.kubernetes.io/modsecurity-snippet")
        );
        let (_, closed) = review_of(&[(
            "nginx.ingress.kubernetes.io/stream-snippet",
            "deny 10.0.0.1;",
        )]);
        assert!(closed.unwrap().contains("deny"));
    }

    /// The registry and the parsers agree: a key the registry calls supported
    /// is read, and a key read under the ingress-nginx prefix is in the
    /// registry as supported.
    #[test]
    fn registry_matches_the_parsers() {
        for key in registry::ANNOTATIONS {
            let supported = matches!(key.status, Status::Supported | Status::Differs(_));
            assert_eq!(
                supported,
                sluice_reads(NGINX_PREFIX, key.name),
                "{}",
                key.name
            );
        }
    }

    #[test]
    fn a_key_that_needs_another_warns_alone() {
        let (notices, closed) = review_of(&[
            ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/app"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
            ("nginx.ingress.kubernetes.io/limit-rate", "100"),
            ("sluice.io/limit-rate-after", "10"),
            (
                "nginx.ingress.kubernetes.io/auth-signin",
                "https://login.example/",
            ),
            ("nginx.ingress.kubernetes.io/auth-realm", "Staff"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "*"),
        ]);
        let keys: Vec<&str> = notices
            .iter()
            .map(|n| n.key.trim_start_matches(NGINX_PREFIX))
            .collect();
        assert_eq!(
            keys,
            [
                "auth-realm",
                "auth-signin",
                "cors-allow-origin",
                "session-cookie-name",
                "x-forwarded-prefix"
            ],
            "{notices:?}"
        );
        assert!(notices.iter().all(|n| n.reason == "annotation-differs"));
        assert_eq!(closed, None);
    }
}
