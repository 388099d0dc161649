//! Per-Ingress annotations: the one table of known keys and their parsing.
//!
//! Every key is read under `sluice.io/` and, with the same meaning and value syntax,
//! under `nginx.ingress.kubernetes.io/`, so Ingresses migrate unchanged. When both
//! prefixes set a key, `sluice.io/` wins. Every other annotation under either
//! prefix is judged by the registry of ingress-nginx keys (`review`): a warning
//! for what sluice does not do, and a 403 for the Ingress when that is access.

mod access;
mod affinity;
mod auth;
mod canary;
mod client_certs;
mod cors;
mod external_auth;
mod headers;
mod limits;
mod mirror;
mod redirect;
mod review;
mod rewrite;
mod snippets;
mod values;

pub use auth::BasicAuthSpec;
pub use client_certs::ClientCertSpec;
pub use external_auth::{global_auth, ExternalAuthSpec};
pub use headers::config_maps_of;
pub use mirror::{mirror_name, MirrorSpec};
pub use rewrite::Rewrite;

pub use review::{review, sluice_reads, Notice};
use values::*;

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use std::sync::Arc;

use crate::balance::expr::BreakerRule;
use crate::balance::policy::{Algorithm, BalancePolicy, HashBy};
use crate::compat::snippet::MAX_SNIPPET_LEN;
use crate::config::ProxyDefaults;
use crate::policy::affinity::Affinity;
use crate::policy::canary::{CanaryRule, Cidr, HeaderMatch};
use crate::policy::ratelimit::{LimitKey, LimitSpec};
use crate::policy::retry::{NextUpstream, RetryPolicy};
use crate::routing::edits::{Edits, HeaderEdit, Step, Template};
use crate::routing::{Protocol, RoutePolicy};
use crate::units::{parse_duration, parse_size};
use http::header::HeaderName;
use regex::Regex;

pub const SLUICE_PREFIX: &str = "sluice.io/";
/// Longest annotation value read; real values are far shorter, and every parser
/// below then works on bounded text.
pub const MAX_VALUE_LEN: usize = 4096;
/// Compiled size allowed for a tenant's regular expression (the `regex` crate
/// matches in linear time, so only size needs a bound).
const MAX_REGEX_SIZE: usize = 256 << 10;
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The known keys, without prefix.
pub const KNOWN_KEYS: &[&str] = &[
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-body-size",
    "backend-protocol",
    "default-backend",
    "load-balance",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "circuit-breaker",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "ssl-redirect",
    "force-ssl-redirect",
    "enable-access-log",
    "allow-namespaces",
    "secure-backends",
    "proxy-ssl-verify",
    "proxy-ssl-secret",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "service-upstream",
    "proxy-http-version",
    "ssl-passthrough",
    "proxy-ssl-protocols",
    "proxy-ssl-ciphers",
    "proxy-ssl-verify-depth",
    "upstream-vhost",
    "use-regex",
    "rewrite-target",
    "x-forwarded-prefix",
    "app-root",
    "custom-http-errors",
    "preserve-trailing-slash",
    "connection-proxy-header",
];

/// The prefix and bare name of an annotation under one of our prefixes.
pub fn split_key(key: &str) -> Option<(&'static str, &str)> {
    [SLUICE_PREFIX, NGINX_PREFIX]
        .into_iter()
        .find_map(|prefix| key.strip_prefix(prefix).map(|name| (prefix, name)))
}

/// nginx snippets, interpreted by `snippets`.
pub const SNIPPET_KEYS: &[&str] = &["configuration-snippet", "server-snippet"];

/// Keys read together by their own parsers: canary (`parse_canary`) and rate
/// limits (`parse_limit`, where the prefix decides the meaning).
pub const GROUPED_KEYS: &[&str] = &[
    "temporal-redirect",
    "temporal-redirect-code",
    "permanent-redirect",
    "permanent-redirect-code",
    "from-to-www-redirect",
    "server-alias",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
    "canary-by-source-cidr",
    "canary-by-user-agent",
    "canary-sticky-by",
    "limit-rps",
    "limit-rpm",
    "limit-burst",
    "limit-key",
    "limit-scope",
    "limit-burst-multiplier",
    "limit-rate",
    "limit-rate-after",
    "limit-whitelist",
    "proxy-request-buffering",
    "client-body-buffer-size",
    "mirror-target",
    "mirror-host",
    "mirror-request-body",
    "limit-connections",
    "custom-headers",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "satisfy",
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-always-set-cookie",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
    "auth-keepalive-share-vars",
    "auth-proxy-set-headers",
    "auth-snippet",
    "enable-global-auth",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
];

#[derive(Debug, Error, PartialEq, Eq)]
#[error("annotation {key}: {message}")]
pub struct AnnotationError {
    /// The full annotation name, with the prefix the user wrote.
    pub key: String,
    pub message: String,
}

/// What an Ingress's annotations override; `None` keeps the global default.
#[derive(Debug, Clone, Default)]
pub struct IngressAnnotations {
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub body_size: Option<u64>,
    pub backend_protocol: Option<Protocol>,
    /// `service` or `service:port` in the Ingress's namespace (port defaults to 80,
    /// as ingress-nginx), used while a rule's own Service has no ready endpoint.
    pub default_backend: Option<(String, String)>,
    pub algorithm: Option<Algorithm>,
    pub hash_by: Option<HashBy>,
    /// `upstream-hash-by-subset` (and `-size`).
    pub hash_subset: Option<usize>,
    pub breaker: Option<BreakerRule>,
    pub next_upstream: Option<NextUpstream>,
    pub tries: Option<u32>,
    pub retry_timeout: Option<Duration>,
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: Option<bool>,
    pub access_log: Option<bool>,
    /// Set when this is a canary Ingress (`canary: "true"`).
    pub canary: Option<CanaryRule>,
    pub limit: Option<LimitSpec>,
    /// `sluice.io/limit-scope: cluster`: divide by the number of instances.
    pub limit_cluster: bool,
    /// `sluice.io/allow-namespaces`: other namespaces that may route this
    /// Ingress's hosts under `host-ownership: namespace` (`*` for all).
    pub allow_namespaces: Vec<String>,
    /// Warnings about annotations sluice does not do as ingress-nginx does.
    pub notices: Vec<Notice>,
    /// The annotation that makes this Ingress answer 403 (`review`, `snippets`).
    pub fail_closed: Option<String>,
    /// The snippets, interpreted (`snippets`).
    pub edits: Option<Arc<Edits>>,
    /// `backend-protocol: HTTPS|GRPCS` (or `secure-backends`) and `proxy-ssl-*`.
    pub upstream_tls: Option<UpstreamTlsAnnotations>,
    /// `service-upstream: "true"`: to the Service's ClusterIP, not its pods.
    pub service_upstream: bool,
    /// `ssl-passthrough: "true"`: TLS connections for its hosts go to the pods.
    pub ssl_passthrough: bool,
    /// `use-regex`, `rewrite-target`, `x-forwarded-prefix`.
    pub rewrite: Rewrite,
    /// `app-root`: a request for `/` on the Ingress's hosts is answered with
    /// these edits (a 302 to the app's root).
    pub app_root: Option<Arc<Edits>>,
    /// `affinity: cookie` and the `session-cookie-*` keys.
    pub affinity: Option<Affinity>,
    /// `from-to-www-redirect`.
    pub from_to_www: bool,
    /// `server-alias`: more host names for its rules.
    pub aliases: Vec<String>,
    /// `custom-http-errors`: statuses the default backend answers instead.
    pub custom_errors: Option<Vec<u16>>,
    /// `preserve-trailing-slash`: the HTTPS redirect keeps the URI's last `/`.
    pub preserve_trailing_slash: bool,
    /// `limit-rate` / `limit-rate-after`, in bytes.
    pub limit_rate: Option<(u64, u64)>,
    /// `proxy-request-buffering` and `client-body-buffer-size`.
    pub request_buffering: limits::RequestBuffering,
    /// `mirror-target` and its keys.
    pub mirror: Option<MirrorSpec>,
    /// `limit-connections`, and the addresses it exempts.
    pub limit_connections: Option<(u32, Vec<Cidr>)>,
    /// `custom-headers`: (namespace, else the Ingress's; name) of a ConfigMap.
    pub custom_headers: Option<(Option<String>, String)>,
    /// `whitelist-source-range`, `denylist-source-range`.
    pub access: access::Access,
    /// `auth-type: basic` and its keys.
    pub basic_auth: Option<BasicAuthSpec>,
    /// `enable-cors` and the `cors-*` keys.
    pub cors: Option<Arc<crate::policy::cors::Cors>>,
    /// `satisfy: any`: the address list or the authentication admits.
    pub satisfy_any: bool,
    /// `auth-url` and its keys.
    pub external_auth: Option<ExternalAuthSpec>,
    /// `auth-tls-secret` and its keys.
    pub client_certs: Option<ClientCertSpec>,
    /// `enable-global-auth: "false"`: the config's `global-auth-url` does
    /// not guard this Ingress.
    pub no_global_auth: bool,
}

/// TLS to the pods, as the annotations ask it (the Secret is read later,
/// with the rest of the snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTlsAnnotations {
    /// `GRPCS`: HTTP/2.
    pub h2: bool,
    /// `proxy-ssl-verify: on` (off by default, as ingress-nginx).
    pub verify: bool,
    /// `proxy-ssl-secret`: `namespace/name`, `ca.crt` and `tls.crt`/`tls.key`.
    pub secret: Option<(String, String)>,
    /// `proxy-ssl-name`.
    pub name: Option<String>,
    /// `proxy-ssl-server-name: on` (off by default).
    pub sni: bool,
    /// `proxy-ssl-protocols` without `TLSv1.2` / `TLSv1.3`.
    pub no_tls12: bool,
    pub no_tls13: bool,
}

impl IngressAnnotations {
    pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, AnnotationError> {
        let mut parsed = IngressAnnotations::default();
        let Some(annotations) = annotations else {
            return Ok(parsed);
        };
        for (key, value) in annotations {
            let Some((_, name)) = split_key(key) else {
                continue;
            };
            let limit = if name.ends_with("-snippet") {
                MAX_SNIPPET_LEN
            } else {
                MAX_VALUE_LEN
            };
            if value.len() > limit {
                return Err(invalid_at(key, format!("value longer than {limit} bytes")));
            }
        }
        (parsed.notices, parsed.fail_closed) = review(annotations);
        let snippets = snippets::compile(annotations);
        parsed.notices.extend(snippets.notices);
        parsed.fail_closed = parsed.fail_closed.or(snippets.fail_closed);
        parsed.edits = snippets.edits;
        parsed.canary = canary::parse_canary(annotations)?;
        parsed.affinity = affinity::parse_affinity(annotations)?;
        let (limit, cluster) = limits::parse_limit(annotations)?;
        parsed.limit = limit;
        parsed.limit_cluster = cluster;
        let mut tls = TlsReading::default();
        let mut vhost = None;
        let (mut subset, mut subset_size) = (false, None);
        for &key in KNOWN_KEYS {
            let Some((full_key, value)) = lookup(annotations, key) else {
                continue;
            };
            let invalid = |message: String| AnnotationError {
                key: full_key.to_owned(),
                message,
            };
            let duration = || parse_duration(value).map_err(|e| invalid(e.to_string()));
            match key {
                "proxy-connect-timeout" => {
                    parsed.connect_timeout = Some(nonzero(duration()?, &invalid)?)
                }
                "proxy-read-timeout" => parsed.read_timeout = Some(nonzero(duration()?, &invalid)?),
                "proxy-send-timeout" => parsed.send_timeout = Some(nonzero(duration()?, &invalid)?),
                "proxy-body-size" => {
                    parsed.body_size = Some(parse_size(value).map_err(|e| invalid(e.to_string()))?)
                }
                "backend-protocol" => match parse_protocol(value).map_err(invalid)? {
                    Wire::Plain(protocol) => parsed.backend_protocol = Some(protocol),
                    Wire::Tls { h2 } => tls.h2 = Some(h2),
                },
                "secure-backends" => tls.secure_backends |= parse_bool(value).map_err(invalid)?,
                "service-upstream" => parsed.service_upstream = parse_bool(value).map_err(invalid)?,
                "proxy-ssl-protocols" => {
                    // What rustls can speak applies; older versions warn.
                    let words: Vec<&str> = value.split_whitespace().collect();
                    tls.spec.no_tls12 = !words.contains(&"TLSv1.2");
                    tls.spec.no_tls13 = !words.contains(&"TLSv1.3");
                    if tls.spec.no_tls12 && tls.spec.no_tls13 {
                        return Err(invalid(format!("{value:?}: sluice speaks TLSv1.2 and TLSv1.3 only")));
                    }
                    let older: Vec<&str> = words
                        .iter()
                        .filter(|w| !["TLSv1.2", "TLSv1.3"].contains(w))
                        .copied()
                        .collect();
                    if !older.is_empty() {
                        parsed.notices.push(Notice {
                            key: full_key.to_owned(),
                            reason: "annotation-differs",
                            message: format!("{full_key}: {} not spoken by sluice (rustls); the rest applies", older.join(", ")),
                        });
                    }
                }
                // The defaults say nothing; anything else is beyond rustls.
                "proxy-ssl-ciphers" | "proxy-ssl-verify-depth"
                    if matches!(value.trim(), "DEFAULT" | "1") => {}
                "proxy-ssl-ciphers" | "proxy-ssl-verify-depth" => parsed.notices.push(Notice {
                    key: full_key.to_owned(),
                    reason: "annotation-differs",
                    message: format!("{full_key}: rustls offers a fixed set of modern cipher suites and verifies whole chains; {value:?} is ignored"),
                }),
                "ssl-passthrough" => parsed.ssl_passthrough = parse_bool(value).map_err(invalid)?,
                "upstream-vhost" => vhost = Some(parse_vhost(value).map_err(invalid)?),
                "use-regex" => parsed.rewrite.use_regex = parse_bool(value).map_err(invalid)?,
                "rewrite-target" => {
                    let template = Template::parse(value).map_err(invalid)?;
                    parsed.rewrite.target = Some((value.to_owned(), template));
                }
                "custom-http-errors" => {
                    parsed.custom_errors = Some(crate::config::parse_status_list(value).map_err(invalid)?)
                }
                "preserve-trailing-slash" => {
                    parsed.preserve_trailing_slash = parse_bool(value).map_err(invalid)?
                }
                "app-root" => parsed.app_root = Some(parse_app_root(value).map_err(invalid)?),
                "x-forwarded-prefix" => {
                    parsed.rewrite.x_forwarded_prefix = Some(Template::parse(value).map_err(invalid)?)
                }
                // sluice keeps its pod connections alive (pooled); `Connection`
                // is hop-by-hop and never forwarded.
                "connection-proxy-header" if value.trim().eq_ignore_ascii_case("keep-alive") => {}
                "connection-proxy-header" => parsed.notices.push(Notice {
                    key: full_key.to_owned(),
                    reason: "annotation-differs",
                    message: format!("{full_key}: {value:?} is ignored: sluice keeps its connections to pods alive (pooled HTTP/1.1) and sets Connection itself"),
                }),
                // sluice speaks HTTP/1.1 to pods; 1.0 would only lose keep-alive.
                "proxy-http-version" => match value.trim() {
                    "1.1" => {}
                    "1.0" => parsed.notices.push(Notice {
                        key: full_key.to_owned(),
                        reason: "annotation-differs",
                        message: format!("{full_key}: 1.0 is accepted, but sluice speaks HTTP/1.1 to pods (with keep-alive)"),
                    }),
                    other => return Err(invalid(format!("{other:?}: expected 1.0 or 1.1"))),
                },
                "proxy-ssl-verify" => tls.spec.verify = parse_on_off(value).map_err(invalid)?,
                "proxy-ssl-server-name" => tls.spec.sni = parse_on_off(value).map_err(invalid)?,
                "proxy-ssl-name" => {
                    let name = value.trim();
                    if rustls::pki_types::ServerName::try_from(name).is_err() {
                        return Err(invalid(format!("{name:?} is not a server name")));
                    }
                    tls.spec.name = Some(name.to_owned());
                }
                "proxy-ssl-secret" => {
                    let secret = crate::config::parse_secret_ref(value.trim())
                        .ok_or_else(|| invalid(format!("{value:?}: expected namespace/name")))?;
                    tls.spec.secret = Some(secret);
                }
                "default-backend" => {
                    parsed.default_backend = Some(parse_service_port(value).map_err(invalid)?)
                }
                "load-balance" => {
                    parsed.algorithm = Some(Algorithm::parse(value).map_err(invalid)?)
                }
                "upstream-hash-by" => parsed.hash_by = Some(HashBy::parse(value).map_err(invalid)?),
                "upstream-hash-by-subset" => subset = parse_bool(value).map_err(invalid)?,
                "upstream-hash-by-subset-size" => {
                    let size = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|s| (1..=64).contains(s))
                        .ok_or_else(|| invalid(format!("{value:?}: expected 1 to 64")))?;
                    subset_size = Some(size);
                }
                "circuit-breaker" => {
                    parsed.breaker =
                        Some(BreakerRule::parse(value).map_err(|e| invalid(e.to_string()))?)
                }
                "proxy-next-upstream" => {
                    parsed.next_upstream = Some(NextUpstream::parse(value).map_err(invalid)?)
                }
                "proxy-next-upstream-tries" => {
                    let tries = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid(format!("{value:?} is not a number")))?;
                    parsed.tries = Some(tries);
                }
                "proxy-next-upstream-timeout" => parsed.retry_timeout = Some(duration()?),
                "ssl-redirect" => parsed.ssl_redirect = Some(parse_bool(value).map_err(invalid)?),
                "enable-access-log" => {
                    parsed.access_log = Some(parse_bool(value).map_err(invalid)?)
                }
                "force-ssl-redirect" => {
                    parsed.force_ssl_redirect = Some(parse_bool(value).map_err(invalid)?)
                }
                "allow-namespaces" => {
                    parsed.allow_namespaces = parse_namespaces(value).map_err(invalid)?
                }
                _ => {}
            }
        }
        // `backend-protocol` wins over the legacy `secure-backends`, as in
        // ingress-nginx; the `proxy-ssl-*` keys mean something only with TLS.
        let h2 = match (
            tls.h2,
            parsed.backend_protocol.is_some(),
            tls.secure_backends,
        ) {
            (Some(h2), _, _) => Some(h2),
            (None, false, true) => Some(false),
            _ => None,
        };
        if h2.is_none() {
            // Never silently: TLS settings for pods that are spoken to in plain text.
            for key in annotations.keys() {
                if split_key(key).is_some_and(|(_, name)| name.starts_with("proxy-ssl-")) {
                    parsed.notices.push(Notice {
                        key: key.clone(),
                        reason: "annotation-differs",
                        message: format!("{key} has no effect without backend-protocol HTTPS or GRPCS (as in ingress-nginx); ignored"),
                    });
                }
            }
        }
        parsed.upstream_tls = h2.map(|h2| UpstreamTlsAnnotations { h2, ..tls.spec });
        // ingress-nginx's default subset size is 3.
        parsed.hash_subset = subset.then(|| subset_size.unwrap_or(3));
        // sluice's header rules, then `return CODE URL;`, after the
        // configuration snippet's directives.
        let mut steps = headers::parse_header_rules(annotations)?;
        steps.extend(redirect::parse_proxy_redirect(annotations)?);
        steps.extend(redirect::parse_proxy_cookie(annotations)?);
        steps.extend(redirect::parse_redirect(annotations)?);
        // ingress-nginx writes `proxy_set_header Host` before the
        // configuration snippet, whose own `proxy_set_header Host` wins.
        let before: Vec<Step> = vhost
            .map(|vhost| Step::RequestHeader(HeaderEdit::Set(http::header::HOST, vhost)))
            .into_iter()
            .collect();
        parsed.edits = Edits::around(&parsed.edits, before, steps);
        parsed.from_to_www = redirect::parse_from_to_www(annotations)?;
        parsed.limit_rate = limits::parse_limit_rate(annotations)?;
        parsed.request_buffering = limits::parse_request_buffering(annotations)?;
        parsed.mirror = mirror::parse_mirror(annotations)?;
        parsed.limit_connections = limits::parse_limit_connections(annotations)?;
        parsed.custom_headers = headers::parse_custom_headers(annotations)?;
        parsed.access = access::parse_access(annotations, &mut parsed.notices);
        parsed.cors = cors::parse_cors(annotations, &mut parsed.notices);
        parsed.satisfy_any = access::parse_satisfy(annotations, &mut parsed.notices);
        match external_auth::parse_external_auth(annotations, &mut parsed.notices) {
            Ok(spec) => parsed.external_auth = spec,
            Err(key) => parsed.fail_closed = parsed.fail_closed.take().or(Some(key)),
        }
        match auth::parse_basic_auth(annotations, &mut parsed.notices) {
            Ok(spec) => parsed.basic_auth = spec,
            Err(key) => parsed.fail_closed = parsed.fail_closed.take().or(Some(key)),
        }
        if let Some((key, value)) = lookup(annotations, "enable-global-auth") {
            match parse_bool(value) {
                Ok(enabled) => parsed.no_global_auth = !enabled,
                Err(message) => parsed.notices.push(Notice {
                    key: key.to_owned(),
                    reason: "annotation-differs",
                    message: format!("{key}: {message}; global authentication stays on"),
                }),
            }
        }
        match client_certs::parse_client_certs(annotations, &mut parsed.notices) {
            Ok(spec) => parsed.client_certs = spec,
            Err(key) => parsed.fail_closed = parsed.fail_closed.take().or(Some(key)),
        }
        parsed.aliases = redirect::parse_aliases(annotations)?;
        Ok(parsed)
    }

    pub fn policy(&self, defaults: &ProxyDefaults) -> RoutePolicy {
        let body_size = self.body_size.unwrap_or(defaults.proxy_body_size);
        RoutePolicy {
            connect_timeout: self
                .connect_timeout
                .unwrap_or(defaults.proxy_connect_timeout),
            read_timeout: self.read_timeout.unwrap_or(defaults.proxy_read_timeout),
            send_timeout: self.send_timeout.unwrap_or(defaults.proxy_send_timeout),
            body_limit: (body_size > 0).then_some(body_size),
            balance: self.balance(&defaults.balance),
            // Set per host by `translate`, which knows the Ingress's TLS hosts.
            access_log: self.access_log.unwrap_or(true),
            affinity: self.affinity.clone().map(Arc::new),
            // Set per route by `translate`, which builds the default backend's route.
            error_pages: None,
            limit_rate: match self.limit_rate {
                Some((0, _)) => None,
                Some(own) => Some(own),
                None => defaults.limit_rate,
            },
            request_buffering: self.request_buffering.policy(defaults),
            // Set by `translate`, which builds the target's backend.
            mirror: None,
            external_auth: None,
            request_timeout: None,
            retry: RetryPolicy {
                next_upstream: self.next_upstream.unwrap_or(defaults.retry.next_upstream),
                tries: self.tries.unwrap_or(defaults.retry.tries),
                timeout: match self.retry_timeout {
                    Some(t) if t.is_zero() => None,
                    Some(t) => Some(t),
                    None => defaults.retry.timeout,
                },
            },
        }
    }

    /// The global balance policy, shared, unless this Ingress changes it.
    fn balance(&self, defaults: &Arc<BalancePolicy>) -> Arc<BalancePolicy> {
        if self.algorithm.is_none()
            && self.hash_by.is_none()
            && self.breaker.is_none()
            && self.hash_subset.is_none()
        {
            return defaults.clone();
        }
        Arc::new(BalancePolicy {
            algorithm: self.algorithm.unwrap_or(defaults.algorithm),
            hash_by: self.hash_by.clone().or_else(|| defaults.hash_by.clone()),
            hash_subset: self.hash_subset,
            breaker: self
                .breaker
                .clone()
                .map(Arc::new)
                .unwrap_or_else(|| defaults.breaker.clone()),
            ..(**defaults).clone()
        })
    }
}

/// The TLS annotations while they are read.
#[derive(Default)]
struct TlsReading {
    /// Set by `backend-protocol: HTTPS` (false) or `GRPCS` (true).
    h2: Option<bool>,
    secure_backends: bool,
    spec: UpstreamTlsAnnotations,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<IngressAnnotations, AnnotationError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        IngressAnnotations::parse(Some(&map))
    }

    #[test]
    fn connection_proxy_header_keep_alive_is_what_sluice_does() {
        let key = "nginx.ingress.kubernetes.io/connection-proxy-header";
        assert!(parse(&[(key, "keep-alive")]).unwrap().notices.is_empty());
        let close = parse(&[(key, "close")]).unwrap();
        assert_eq!(close.notices.len(), 1);
        assert!(close.notices[0].message.contains("\"close\" is ignored"));
    }

    #[test]
    fn both_prefixes_and_sluice_wins() {
        let a = parse(&[
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "30"),
            ("nginx.ingress.kubernetes.io/proxy-body-size", "8m"),
            ("sluice.io/proxy-read-timeout", "2s"),
            ("sluice.io/backend-protocol", "grpc"),
        ])
        .unwrap();
        assert_eq!(a.read_timeout, Some(Duration::from_secs(2)));
        assert_eq!(a.body_size, Some(8 << 20));
        assert_eq!(a.backend_protocol, Some(Protocol::H2c));
        let b = parse(&[("nginx.ingress.kubernetes.io/default-backend", "errors")]).unwrap();
        assert_eq!(b.default_backend, Some(("errors".into(), "80".into())));
        let policy = a.policy(&ProxyDefaults::default());
        assert_eq!(
            policy.connect_timeout,
            crate::config::DEFAULT_CONNECT_TIMEOUT
        );
        assert_eq!(policy.body_limit, Some(8 << 20));
    }

    #[test]
    fn balancing_annotations() {
        let a = parse(&[
            ("sluice.io/load-balance", "round_robin"),
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$cookie_session",
            ),
            ("sluice.io/circuit-breaker", "LatencyAtQuantileMS(99) > 250"),
            (
                "nginx.ingress.kubernetes.io/proxy-next-upstream",
                "error http_503",
            ),
            ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "3"),
        ])
        .unwrap();
        let policy = a.policy(&ProxyDefaults::default());
        assert_eq!(policy.balance.algorithm, Algorithm::RoundRobin);
        assert_eq!(
            policy.balance.hash_by,
            Some(HashBy::Cookie("session".into()))
        );
        assert_eq!(
            policy.balance.breaker.source,
            "LatencyAtQuantileMS(99) > 250"
        );
        assert!(policy.retry.next_upstream.http_503 && policy.retry.next_upstream.error);
        assert_eq!(policy.retry.tries, 3);
        // Ingresses without balancing annotations share the global policy.
        let defaults = ProxyDefaults::default();
        let plain = parse(&[]).unwrap().policy(&defaults);
        assert!(Arc::ptr_eq(&plain.balance, &defaults.balance));

        let err = parse(&[("sluice.io/circuit-breaker", "NetworkErrorRatio() >")]).unwrap_err();
        assert!(err.message.contains("column 22"), "{err}");
    }

    /// TLS settings without TLS warn; with it, they say nothing.
    #[test]
    fn tls_settings_without_tls_warn() {
        let plain = parse(&[("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on")]).unwrap();
        assert_eq!(plain.notices.len(), 1, "{:?}", plain.notices);
        assert!(plain.notices[0].message.contains("no effect"));
        let tls = parse(&[
            ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
            ("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS"),
        ])
        .unwrap();
        assert!(tls.notices.is_empty(), "{:?}", tls.notices);
        assert!(tls.upstream_tls.unwrap().verify);
    }

    #[test]
    fn zero_body_size_is_unlimited() {
        let a = parse(&[("nginx.ingress.kubernetes.io/proxy-body-size", "0")]).unwrap();
        assert_eq!(a.policy(&ProxyDefaults::default()).body_limit, None);
    }

    #[test]
    fn invalid_values_name_the_annotation() {
        let cases = [
            ("sluice.io/proxy-connect-timeout", "soon"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "0"),
            ("sluice.io/proxy-body-size", "lots"),
            ("sluice.io/backend-protocol", "SPDY"),
            ("nginx.ingress.kubernetes.io/backend-protocol", "AUTO_HTTP"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "sometimes"),
            (
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "no-namespace",
            ),
            (
                "nginx.ingress.kubernetes.io/default-backend",
                "Not_A_Service",
            ),
        ];
        for (key, value) in cases {
            let err = parse(&[(key, value)]).unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    /// Every key's parser, fed mutated values under both prefixes, returns a
    /// value or an error naming the key: never a panic.
    #[test]
    fn fuzzed_annotations_never_panic() {
        let keys: Vec<&str> = KNOWN_KEYS
            .iter()
            .chain(GROUPED_KEYS)
            .chain(SNIPPET_KEYS)
            .copied()
            .collect();
        let mut round = 0usize;
        crate::fuzz::texts(
            &[
                "30",
                "1m30s",
                "8m",
                "GRPC",
                "web:8080",
                "$cookie_session",
                "NetworkErrorRatio() > 0.5 && RequestThreshold() >= 10",
                "error timeout http_503",
                "true",
                "10.0.0.0/8, ::1/128",
                "^beta-(a|b)+$",
                "header:x-user",
                "cookie:user",
                "2.5",
                "more_set_headers \"X-A: $host\"; if ($http_x ~* ^(a|b)$) { return 301 https://$host$request_uri; }",
                "rewrite ^/old/(.*)$ /new/$1?x=${arg_y} break; set $v \"$1-$cookie_c\"; allow 10.0.0.0/8; deny all;",
            ],
            crate::fuzz::iterations(20_000),
            |value| {
                round += 1;
                let key = keys[round % keys.len()];
                let prefix = if round % 2 == 0 {
                    SLUICE_PREFIX
                } else {
                    NGINX_PREFIX
                };
                let full = format!("{prefix}{key}");
                let mut map = BTreeMap::from([(full.clone(), value.to_owned())]);
                map.insert(format!("{prefix}canary"), "true".into());
                map.insert(format!("{prefix}limit-rps"), "5".into());
                match IngressAnnotations::parse(Some(&map)) {
                    Ok(parsed) => {
                        parsed.policy(&ProxyDefaults::default());
                    }
                    Err(e) => assert!(e.key.starts_with(prefix), "{e}"),
                }
            },
        );
    }

    #[test]
    fn oversized_values_are_refused() {
        let long = "1".repeat(MAX_VALUE_LEN + 1);
        let err = parse(&[("nginx.ingress.kubernetes.io/proxy-read-timeout", &long)]).unwrap_err();
        assert!(err.message.contains("longer than"), "{err}");
        let deep_regex = format!("tru{}e", "*".repeat(200));
        let err = parse(&[
            ("sluice.io/canary", "true"),
            ("sluice.io/canary-by-header", "x-canary"),
            ("sluice.io/canary-by-header-pattern", &deep_regex),
        ])
        .unwrap_err();
        assert_eq!(err.key, "sluice.io/canary-by-header-pattern");
        let huge_regex = "(a{1000}){1000}";
        let err = parse(&[
            ("sluice.io/canary", "true"),
            ("sluice.io/canary-by-user-agent", huge_regex),
        ])
        .unwrap_err();
        assert_eq!(err.key, "sluice.io/canary-by-user-agent");
    }
}
