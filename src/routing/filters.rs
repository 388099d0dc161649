//! Route policy compiled into ordered filters: what a request goes through
//! between being routed and being sent. `translate` compiles them per route;
//! the pipeline (`proxy::pipeline`) runs them in order, and the first that
//! answers (a redirect, a 413, a rate-limit refusal, a 403) ends the request there.
//!
//! Ingress annotations and Gateway API's HTTPRoute filters compile to the same
//! filters, one to one where the two agree:
//!
//! | filter        | ingress-nginx annotation                          | Gateway API (HTTPRoute)                  |
//! |---------------|---------------------------------------------------|------------------------------------------|
//! | `Deny`        | an access annotation sluice cannot honour (fails closed) | none                          |
//! | `OnlyOver`    | none                                              | the listeners a route is attached to (HTTP, HTTPS) |
//! | `Edits`       | snippets: `more_set_headers`, `proxy_set_header`, `return`, `rewrite`, `if` | `RequestHeaderModifier`, `ResponseHeaderModifier`, `URLRewrite`, `RequestRedirect` |
//! | `ClientCert`  | `auth-tls-secret`, `auth-tls-*` (per host)        | none (Gateway's `frontendValidation` is experimental) |
//! | `Cors`        | `enable-cors`, `cors-*`                           | none (an implementation extension)       |
//! | `HttpsRedirect` | `ssl-redirect`, `force-ssl-redirect`            | `RequestRedirect` (`scheme: https`, 308) |
//! | `Access`      | `whitelist-source-range`, `denylist-source-range` | none (an implementation extension)       |
//! | `Passwords`   | `auth-type: basic` or `digest`, `auth-secret`, `auth-realm` | none (an implementation extension) |
//! | `BodyLimit`   | `proxy-body-size`                                 | none (an implementation extension)       |
//! | `RateLimit`   | `limit-rps`, `limit-rpm`, `limit-burst-multiplier` | none (an implementation extension)      |
//! | `ConnLimit`   | `limit-connections`                               | none (an implementation extension)       |
//! | `Canary`      | `canary`, `canary-weight`, `canary-by-*`          | none                                     |
//! | `Weighted`    | none                                              | weighted `backendRefs`                   |
//!
//! The filters the coming features add take their place here, with the same
//! mapping: general redirects (`permanent-redirect`, `temporal-redirect`,
//! `app-root`, `from-to-www-redirect` / `RequestRedirect`), rewrites
//! (`rewrite-target`, `upstream-vhost` / `URLRewrite`), header changes
//! (`custom-headers`, `x-forwarded-prefix` / `RequestHeaderModifier`,
//! `ResponseHeaderModifier`), mirroring (`mirror-target` / `RequestMirror`), and
//! access control (allow-lists, auth, CORS), which Gateway API leaves to
//! implementations. Each is a variant here and a small module beside the
//! pipeline's filter runner, so no feature lengthens another's code.

use std::sync::Arc;

use super::edits::Edits;
use super::weighted::WeightedBackends;
use super::Canary;
use crate::policy::access::AccessList;
use crate::policy::basic_auth::BasicAuth;
use crate::policy::client_cert::ClientCa;
use crate::policy::connlimit::ConnLimiter;
use crate::policy::cors::Cors;
use crate::policy::digest_auth::DigestAuth;
use crate::policy::ratelimit::Limiter;

/// One step of a route's request filters.
#[derive(Debug, Clone)]
pub enum RequestFilter {
    /// Fail closed: 403 with this body, which names the annotation sluice
    /// cannot honour (an access control it does not implement).
    Deny(Arc<str>),
    /// `auth-tls-*`: the host's client-certificate settings, which the
    /// connection's handshake must have used; `Err`: they cannot be read,
    /// and the host answers 403, as ingress-nginx's.
    ClientCert(Result<Arc<ClientCa>, ()>),
    /// `enable-cors`: a preflight is answered here; other requests whose
    /// origin is allowed get the CORS headers on their answer.
    Cors(Arc<Cors>),
    /// Gateway API: a route attached only to HTTPS listeners (`true`) or
    /// only to HTTP ones (`false`) is not there for a request that came
    /// over the other: it is answered as unrouted.
    OnlyOver { tls: bool },
    /// A plain-HTTP request gets a 308 to the same URL over HTTPS.
    /// `preserve_trailing_slash: false` (ingress-nginx's default): one
    /// trailing `/` of the request URI is dropped, as its Lua redirect does.
    HttpsRedirect { preserve_trailing_slash: bool },
    /// Header changes, fixed answers and rewrites (`edits`), from snippets.
    Edits(Arc<Edits>),
    /// A client address the route's list refuses gets a 403.
    Access(Arc<AccessList>),
    /// `auth-type: basic` or `digest`: a 401 without valid credentials;
    /// `Err`: the configuration is broken and the route answers 503.
    Passwords(Result<Passwords, ()>),
    /// `satisfy: any`: a client the list admits needs no credentials and
    /// is not asked of `auth-url`'s service; any other is asked for them
    /// (and of the service).
    AccessOrAuth(Arc<AccessList>, Option<Passwords>),
    /// A request that declares a body longer than this gets a 413 before it
    /// goes anywhere (the body itself is also cut at the limit as it streams).
    BodyLimit(u64),
    /// Over the Ingress's rate limit: the configured status and `Retry-After`.
    RateLimit(Arc<Limiter>),
    /// Over the requests one client address may have in progress at once:
    /// the configured status (`limit-conn-status-code`).
    ConnLimit(Arc<ConnLimiter>),
    /// The canary Ingress takes the request when its rules say so and it has
    /// ready pods: a choice of backend, not an answer.
    Canary(Arc<Canary>),
    /// Gateway API's weighted `backendRefs`: one backend by weight.
    Weighted(Arc<WeightedBackends>),
}

/// `auth-type`: users and their passwords, checked as HTTP basic or
/// digest authentication.
#[derive(Debug, Clone)]
pub enum Passwords {
    Basic(Arc<BasicAuth>),
    Digest(Arc<DigestAuth>),
}

/// What a route's filters are made of; `Filters::new` puts them in order.
#[derive(Debug, Default)]
pub struct FilterSpec {
    pub deny: Option<Arc<str>>,
    pub client_cert: Option<Result<Arc<ClientCa>, ()>>,
    pub cors: Option<Arc<Cors>>,
    pub https_redirect: bool,
    /// `preserve-trailing-slash`.
    pub preserve_trailing_slash: bool,
    pub edits: Option<Arc<Edits>>,
    pub access: Option<Arc<AccessList>>,
    pub passwords: Option<Result<Passwords, ()>>,
    /// `satisfy: any`: the address list or the authentication admits.
    pub satisfy_any: bool,
    /// The route asks `auth-url`'s service (`RoutePolicy::external_auth`).
    pub external_auth: bool,
    pub body_limit: Option<u64>,
    pub limiter: Option<Arc<Limiter>>,
    pub conn_limiter: Option<Arc<ConnLimiter>>,
    pub weighted: Option<Arc<WeightedBackends>>,
    /// `OnlyOver`.
    pub only_over_tls: Option<bool>,
}

/// A route's request filters, in the order they run.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<RequestFilter>);

impl Filters {
    /// Builds the filters in their fixed order: a fail-closed denial first
    /// (nothing else may answer in its place), then the HTTPS redirect, the
    /// edits (a snippet's `return`, rewrites and headers, which nginx runs
    /// in its rewrite phase), the body's size, the rate limit, and the
    /// canary's choice. A request redirected or refused costs no rate-limit
    /// token, and a canary sees only requests that will be sent.
    pub fn new(spec: FilterSpec) -> Filters {
        let mut filters = Vec::new();
        if let Some(body) = spec.deny {
            filters.push(RequestFilter::Deny(body));
        }
        if let Some(tls) = spec.only_over_tls {
            filters.push(RequestFilter::OnlyOver { tls });
        }
        // nginx judges the client's certificate before any phase runs.
        if let Some(client_cert) = spec.client_cert {
            filters.push(RequestFilter::ClientCert(client_cert));
        }
        // As nginx's rewrite phase, where ingress-nginx's CORS template
        // comes first: a preflight is answered before any redirect.
        if let Some(cors) = spec.cors {
            filters.push(RequestFilter::Cors(cors));
        }
        if spec.https_redirect {
            filters.push(RequestFilter::HttpsRedirect {
                preserve_trailing_slash: spec.preserve_trailing_slash,
            });
        }
        if let Some(edits) = spec.edits {
            filters.push(RequestFilter::Edits(edits));
        }
        match (spec.access, spec.passwords) {
            (Some(list), Some(Ok(auth))) if spec.satisfy_any => {
                filters.push(RequestFilter::AccessOrAuth(list, Some(auth)));
            }
            (Some(list), None) if spec.satisfy_any && spec.external_auth => {
                filters.push(RequestFilter::AccessOrAuth(list, None));
            }
            (list, auth) => {
                if let Some(list) = list {
                    filters.push(RequestFilter::Access(list));
                }
                if let Some(auth) = auth {
                    filters.push(RequestFilter::Passwords(auth));
                }
            }
        }
        if let Some(limit) = spec.body_limit {
            filters.push(RequestFilter::BodyLimit(limit));
        }
        if let Some(limiter) = spec.conn_limiter {
            filters.push(RequestFilter::ConnLimit(limiter));
        }
        if let Some(limiter) = spec.limiter {
            filters.push(RequestFilter::RateLimit(limiter));
        }
        if let Some(weighted) = spec.weighted {
            filters.push(RequestFilter::Weighted(weighted));
        }
        Filters(filters)
    }

    /// The same filters with a canary added (or replaced), still in order.
    pub fn with_canary(&self, canary: Arc<Canary>) -> Filters {
        let mut filters: Vec<RequestFilter> = self
            .0
            .iter()
            .filter(|f| !matches!(f, RequestFilter::Canary(_)))
            .cloned()
            .collect();
        filters.push(RequestFilter::Canary(canary));
        Filters(filters)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, RequestFilter> {
        self.0.iter()
    }

    pub fn https_redirect(&self) -> bool {
        self.0
            .iter()
            .any(|f| matches!(f, RequestFilter::HttpsRedirect { .. }))
    }

    pub fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.0.iter().find_map(|f| match f {
            RequestFilter::RateLimit(limiter) => Some(limiter),
            _ => None,
        })
    }

    pub fn canary(&self) -> Option<&Arc<Canary>> {
        self.0.iter().find_map(|f| match f {
            RequestFilter::Canary(canary) => Some(canary),
            _ => None,
        })
    }
}
