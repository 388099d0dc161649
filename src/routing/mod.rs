//! Layer 4, the model: the immutable routing table and its lookup,
//! `(host, path) -> Route`; routes with their ordered filters (`filters`),
//! backends, endpoints (`endpoint`) and certificates (`certs`).
//!
//! Built by `discovery::translate`, published whole through an `ArcSwap`, and read
//! once per request. Host and path matching follow Ingress v1 (see `matching`).

pub mod certs;
pub mod edits;
pub mod endpoint;
pub mod filters;
pub mod gateway_status;
mod matching;
pub mod normalize;
pub mod regex_paths;
pub mod request_match;
pub mod weighted;

use crate::policy::affinity::Affinity;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::balance::breaker::Transition;
use crate::balance::pick::{self, Ring};
use crate::balance::policy::BalancePolicy;
use crate::balance::window::Outcome;
use crate::balance::{BackendStats, Random};
use crate::policy::auth_cache::AuthCache;
use crate::policy::canary::CanaryRule;
use crate::policy::client_cert::ClientCa;
use crate::policy::retry::{
    RetryBudget, RetryPolicy, DEFAULT_BUDGET_MIN_PER_SECOND, DEFAULT_BUDGET_RATIO,
};
use crate::telemetry::requests::RequestMetrics;
use certs::{ByHost, TlsCerts};

pub use crate::upstream::Protocol;

pub use endpoint::{Endpoint, EndpointKey, EndpointState, InFlight, Pick};
pub use filters::{FilterSpec, Filters, Passwords, RequestFilter};
pub use matching::{
    normalize_prefix, path_pattern, prefix_matches, HostRoutes, PathKind, RegexMode,
};

/// Per-route settings: global defaults overridden by the Ingress's annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    /// `None` means unlimited (`proxy-body-size: 0`).
    pub body_limit: Option<u64>,
    pub balance: Arc<BalancePolicy>,
    pub retry: RetryPolicy,
    /// `enable-access-log`.
    pub access_log: bool,
    /// `affinity: cookie`: the cookie that keeps a user on one pod.
    pub affinity: Option<Arc<Affinity>>,
    /// `custom-http-errors`: these answers are replaced by the default
    /// backend's.
    pub error_pages: Option<Arc<ErrorPages>>,
    /// `limit-rate` / `limit-rate-after`: (bytes a second, bytes first sent
    /// at full speed) for each response.
    pub limit_rate: Option<(u64, u64)>,
    /// `proxy-request-buffering: on`: bytes of a body kept in memory
    /// (`client-body-buffer-size`) while it is read whole.
    pub request_buffering: Option<u64>,
    /// `mirror-target`: a copy of each request goes there too.
    pub mirror: Option<Arc<Mirror>>,
    /// `auth-url`: each request is first asked of this service.
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// Gateway API's `timeouts.request`: from the request to the answer's
    /// head, every attempt included; then a 504.
    pub request_timeout: Option<Duration>,
}

/// `auth-url`: the authentication service every request is first asked of.
#[derive(Debug)]
pub struct ExternalAuth {
    /// The service's addresses, as a backend of its own (pools, breakers);
    /// unused when the service is one of sluice's routes (`spec.internal`).
    pub backend: Arc<Backend>,
    /// What the service is asked, and what its answers do.
    pub spec: ExternalAuthRequest,
    pub metrics: Arc<RequestMetrics>,
}

/// How the authentication service is asked, as ingress-nginx's `auth-*`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAuthRequest {
    /// The path and query asked for.
    pub path: edits::Template,
    /// Its `Host`.
    pub host: http::HeaderValue,
    /// `auth-method`; else the client's.
    pub method: Option<http::Method>,
    /// `auth-signin`: where a 401 is redirected.
    pub signin: Option<edits::Template>,
    /// `auth-signin-redirect-param` (`rd`).
    pub redirect_param: String,
    /// `auth-response-headers`: from the service's 2xx to the pod's request.
    pub response_headers: Vec<http::HeaderName>,
    /// `auth-request-redirect` (`X-Auth-Request-Redirect`, else the URI).
    pub request_redirect: Option<edits::Template>,
    /// `auth-always-set-cookie`: the service's cookie on every answer.
    pub always_set_cookie: bool,
    /// A URL with `$variables` in its host: the service is the route this
    /// table serves for it (ingress-nginx sends such a subrequest through
    /// nginx itself).
    pub internal: Option<edits::Template>,
    /// `auth-proxy-set-headers`: more headers of the request the service
    /// gets (values with `$variables`), from a ConfigMap.
    pub set_headers: Vec<(http::HeaderName, edits::Template)>,
    /// `auth-cache-key` (rendered per request) and the answers kept.
    pub cache: Option<(edits::Template, Arc<AuthCache>)>,
}

/// The same service asked the same way.
impl PartialEq for ExternalAuth {
    fn eq(&self, other: &Self) -> bool {
        self.backend.name == other.backend.name
            && self.backend.protocol == other.backend.protocol
            && self.spec == other.spec
    }
}

/// `mirror-target`: where copies of a route's requests go, fire and forget.
#[derive(Debug)]
pub struct Mirror {
    /// The target's addresses, as a backend of its own (its own pools,
    /// balancing and breakers).
    pub backend: Arc<Backend>,
    /// The path and query each copy asks for.
    pub path: edits::Template,
    /// The copies' `Host` (`None`: the request's, for Gateway API's
    /// `RequestMirror`).
    pub host: Option<http::HeaderValue>,
    /// `mirror-request-body`: the copy carries the body, which is then read
    /// whole before the request goes on (as nginx's mirror does), with this
    /// much in memory.
    pub body: Option<u64>,
    /// Its connections' metrics (labelled with the mirror's backend).
    pub metrics: Arc<RequestMetrics>,
}

/// The same target the same way (routes are rebuilt with every table).
impl PartialEq for Mirror {
    fn eq(&self, other: &Self) -> bool {
        self.backend.name == other.backend.name
            && self.backend.protocol == other.backend.protocol
            && self.path == other.path
            && self.host == other.host
            && self.body == other.body
    }
}

/// `custom-http-errors`: which statuses, and the route (of the Ingress's
/// `default-backend`, or the global one) that answers them instead.
#[derive(Debug)]
pub struct ErrorPages {
    pub codes: Vec<u16>,
    pub route: Arc<Route>,
}

/// The same statuses to the same backend (routes are rebuilt with every table).
impl PartialEq for ErrorPages {
    fn eq(&self, other: &Self) -> bool {
        self.codes == other.codes && self.route.backend.name == other.route.backend.name
    }
}

/// `namespace/name` of the object a route came from, for logs and metrics,
/// and its kind: `Ingress`, `HTTPRoute` or `GRPCRoute`, so that objects of
/// two kinds with one name never share what is kept per object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IngressRef {
    pub namespace: String,
    pub name: String,
    pub kind: &'static str,
}

impl fmt::Display for IngressRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port, as named in an Ingress backend: the key a `Backend` is built for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendRef {
    pub namespace: String,
    pub service: String,
    /// The port number or name as the Ingress wrote it.
    pub port: String,
    /// `service-upstream`: to the Service's ClusterIP and port, not its pods.
    pub via_service_ip: bool,
}

/// Parses `namespace/service:port` (port by number or name).
pub fn parse_backend_ref(s: &str) -> Option<BackendRef> {
    let (namespace, rest) = s.split_once('/')?;
    let (service, port) = rest.rsplit_once(':')?;
    if namespace.is_empty() || service.is_empty() || port.is_empty() {
        return None;
    }
    Some(BackendRef {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port: port.to_owned(),
        via_service_ip: false,
    })
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)?;
        if self.via_service_ip {
            f.write_str(" (service IP)")?;
        }
        Ok(())
    }
}

/// An Ingress rule path, resolved.
#[derive(Debug, Clone)]
pub struct Route {
    pub ingress: IngressRef,
    pub backend: Arc<Backend>,
    /// What a request goes through before it is sent: redirects, limits, the
    /// canary's choice (`filters`).
    pub filters: Filters,
    pub metrics: Arc<RequestMetrics>,
    /// The `default-backend` annotation: takes the traffic while `backend` has no
    /// ready endpoint.
    pub fallback: Option<Arc<Backend>>,
    pub policy: RoutePolicy,
}

impl Route {
    /// The backend requests go to: the fallback (`default-backend`) only while
    /// the route's own backend has no ready endpoint.
    pub fn active_backend(&self) -> &Arc<Backend> {
        match &self.fallback {
            Some(fallback) if self.backend.endpoint_set().endpoints.is_empty() => fallback,
            _ => &self.backend,
        }
    }
}

/// The canary side of a route.
#[derive(Debug)]
pub struct Canary {
    pub ingress: IngressRef,
    pub backend: Arc<Backend>,
    pub rule: CanaryRule,
    /// Resolved once, so counting a canary request costs an atomic add.
    pub requests: Arc<metrics::Counter>,
    /// Labelled `canary="true"`, beside the route's own.
    pub metrics: Arc<RequestMetrics>,
}

/// A Service port and the ready pod addresses behind it.
///
/// The endpoint list is the one part of a table that changes in place: pod churn
/// replaces it (one atomic pointer swap) instead of rebuilding the whole table, so
/// its cost follows the size of the Service, not of the cluster.
#[derive(Debug)]
pub struct Backend {
    pub name: BackendRef,
    pub protocol: Protocol,
    endpoints: ArcSwap<EndpointSet>,
    /// What outlives the table: the balancer's cursor and typical latency, the
    /// retry budget.
    pub state: Arc<BackendState>,
}

/// The part of a backend that outlives table swaps (`discovery::retained`).
#[derive(Debug)]
pub struct BackendState {
    pub stats: BackendStats,
    pub retry_budget: RetryBudget,
}

impl BackendState {
    pub fn new(retry_budget: RetryBudget) -> BackendState {
        BackendState {
            // Start the cursor at a random place so that many sluice instances
            // do not all hit the first pod together.
            stats: BackendStats::new(fastrand::usize(..1 << 16), Instant::now()),
            retry_budget,
        }
    }
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState::new(RetryBudget::new(
            DEFAULT_BUDGET_RATIO,
            DEFAULT_BUDGET_MIN_PER_SECOND,
        ))
    }
}

/// The ready endpoints of a backend, and the hash ring over them (built on first
/// use by a route with `upstream-hash-by`).
#[derive(Debug, Default)]
pub struct EndpointSet {
    pub endpoints: Vec<Endpoint>,
    pub ring: Ring,
}

impl EndpointSet {
    pub fn new(endpoints: Vec<Endpoint>) -> EndpointSet {
        EndpointSet {
            endpoints,
            ring: Ring::default(),
        }
    }
}

impl Backend {
    pub fn new(
        name: BackendRef,
        protocol: Protocol,
        endpoints: Vec<Endpoint>,
        state: Arc<BackendState>,
    ) -> Backend {
        Backend {
            name,
            protocol,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(endpoints)),
            state,
        }
    }

    /// The current endpoints, for one request: a cheap guard, not a copy.
    pub fn endpoint_set(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.load().endpoints.clone()
    }

    /// Replaces the endpoint list; returns the previous one.
    pub fn swap_endpoints(&self, endpoints: Vec<Endpoint>) -> Arc<EndpointSet> {
        self.endpoints.swap(Arc::new(EndpointSet::new(endpoints)))
    }

    /// Chooses an endpoint for a request and claims it (`balance::pick`).
    pub fn pick(
        &self,
        policy: &BalancePolicy,
        hash: Option<u64>,
        exclude: &[SocketAddr],
        now: Instant,
        random: &mut impl Random,
    ) -> Option<Pick> {
        let set = self.endpoint_set();
        let choice = pick::pick(
            &set.endpoints,
            &set.ring,
            &self.state.stats,
            policy,
            hash,
            exclude,
            now,
            random,
        )?;
        if choice.panic {
            tracing::debug!(backend = %self.name, "every endpoint is ejected: panic mode");
        }
        let endpoint = set.endpoints[choice.index].clone();
        Some(Pick {
            in_flight: InFlight::new(endpoint.state.clone()),
            endpoint,
            probe: choice.probe,
            panic: choice.panic,
        })
    }

    /// Feeds how a request went back to the balancer; logs and counts what it
    /// changed in the endpoint's breaker.
    pub fn record(
        &self,
        policy: &BalancePolicy,
        pick: &Pick,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
        random: &mut impl Random,
    ) {
        // The endpoint list only when the breaker asks for it: a guard from
        // `endpoint_set` costs an `ArcSwap` load.
        let Some(transition) = pick::record(
            &pick.endpoint,
            || EndpointsOf(self.endpoint_set()),
            &self.state.stats,
            policy,
            pick.probe,
            outcome,
            latency,
            now,
            random,
        ) else {
            return;
        };
        let endpoint = pick.endpoint.addr();
        let to = match transition {
            Transition::Tripped { ejection } => {
                tracing::warn!(%endpoint, backend = %self.name, ejection_ms = ejection.as_millis() as u64, rule = %policy.breaker, "circuit breaker opened");
                // Rare, so the label set is resolved here rather than ahead.
                metrics::counter!(
                    crate::telemetry::BREAKER_TRIPS,
                    "namespace" => self.name.namespace.clone(),
                    "service" => self.name.service.clone()
                )
                .increment(1);
                "open"
            }
            Transition::Reopened { ejection } => {
                tracing::info!(%endpoint, backend = %self.name, ejection_ms = ejection.as_millis() as u64, "probe failed; circuit breaker open again");
                "open"
            }
            Transition::Closed => {
                tracing::info!(%endpoint, backend = %self.name, "probe succeeded; circuit breaker closed");
                "closed"
            }
            Transition::TripDenied => {
                tracing::debug!(%endpoint, backend = %self.name, "breaker rule holds, but the ejection limit is reached");
                "denied"
            }
        };
        metrics::counter!(crate::telemetry::BREAKER_TRANSITIONS, "to" => to).increment(1);
    }

    /// Seconds on this backend's clock (the retry budget's time).
    pub fn second(&self) -> u64 {
        self.state.stats.second(Instant::now())
    }
}

/// A backend's current endpoints, as a slice for `balance::pick::record`.
struct EndpointsOf(arc_swap::Guard<Arc<EndpointSet>>);

impl AsRef<[Endpoint]> for EndpointsOf {
    fn as_ref(&self) -> &[Endpoint] {
        &self.0.endpoints
    }
}

/// Counts shown by the admin API and logged on every swap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub hosts: usize,
    pub routes: usize,
    pub backends: usize,
}

/// Everything a request needs to find its upstream. Immutable once built.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Exact hosts, lowercased.
    hosts: HashMap<Box<str>, HostRoutes>,
    /// `*.foo.com` is stored under `foo.com`.
    wildcards: HashMap<Box<str>, HostRoutes>,
    /// Gateway API's `*.foo.com`, which covers any number of labels, under
    /// `foo.com`; tried after the Ingress wildcards, longest suffix first.
    deep_wildcards: HashMap<Box<str>, HostRoutes>,
    /// Rules without a host.
    any_host: Option<HostRoutes>,
    /// The configured global default backend: requests that match nothing else.
    default_route: Option<Arc<Route>>,
    /// Every backend by `(namespace, service)`, for in-place endpoint updates.
    backends: HashMap<(String, String), Vec<Arc<Backend>>>,
    /// Certificates by host, for the TLS listener.
    pub tls: TlsCerts,
    /// Hosts whose handshakes ask for a client certificate (`auth-tls-*`),
    /// by the name the client sends in SNI.
    pub client_cas: ByHost<Arc<ClientCa>>,
    /// SSL passthrough hosts (lowercased): their connections go, TLS and
    /// all, to a pod of this backend.
    pub passthrough: HashMap<String, Passthrough>,
    /// Counts requests no route takes (no Host, no match), under empty labels.
    pub unrouted: Arc<RequestMetrics>,
    pub stats: TableStats,
    /// Gateway API: the status sluice would write (`gateway_status`).
    pub gateway_api: Vec<gateway_status::ObjectStatus>,
}

/// An SSL passthrough host's backend, and how its pods are picked and reached.
#[derive(Debug, Clone)]
pub struct Passthrough {
    pub backend: Arc<Backend>,
    pub balance: Arc<BalancePolicy>,
    pub connect_timeout: Duration,
}

/// Where to insert rules while building a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    Exact(String),
    /// The part after `*.`; covers one more label (Ingress).
    Wildcard(String),
    /// The part after `*.`; covers one or more labels (Gateway API).
    DeepWildcard(String),
    Any,
}

impl HostKey {
    /// Parses an Ingress rule host; `None` for a host Ingress v1 would reject.
    pub fn parse(host: Option<&str>) -> Option<HostKey> {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Some(HostKey::Any);
        };
        let host = host.to_ascii_lowercase();
        if let Some(suffix) = host.strip_prefix("*.") {
            return valid_dns_name(suffix).then(|| HostKey::Wildcard(suffix.to_string()));
        }
        valid_dns_name(&host).then_some(HostKey::Exact(host))
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKey::Exact(h) => f.write_str(h),
            HostKey::Wildcard(h) | HostKey::DeepWildcard(h) => write!(f, "*.{h}"),
            HostKey::Any => f.write_str("*"),
        }
    }
}

fn valid_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl RoutingTable {
    pub fn new(
        hosts: impl IntoIterator<Item = (HostKey, HostRoutes)>,
        backends: Vec<Arc<Backend>>,
        default_route: Option<Arc<Route>>,
        stats: TableStats,
    ) -> RoutingTable {
        let mut table = RoutingTable {
            default_route,
            stats,
            ..RoutingTable::default()
        };
        for backend in backends {
            let key = (backend.name.namespace.clone(), backend.name.service.clone());
            table.backends.entry(key).or_default().push(backend);
        }
        for (key, routes) in hosts {
            match key {
                HostKey::Exact(h) => {
                    table.hosts.insert(h.into(), routes);
                }
                HostKey::Wildcard(h) => {
                    table.wildcards.insert(h.into(), routes);
                }
                HostKey::DeepWildcard(h) => {
                    table.deep_wildcards.insert(h.into(), routes);
                }
                HostKey::Any => table.any_host = Some(routes),
            }
        }
        table.stats.hosts = table.hosts.len()
            + table.wildcards.len()
            + table.deep_wildcards.len()
            + table.any_host.is_some() as usize;
        table
    }

    /// Every host's routes, for the admin API: `(host, routes)`.
    pub fn hosts(&self) -> impl Iterator<Item = (String, &HostRoutes)> {
        let exact = self.hosts.iter().map(|(h, r)| (h.to_string(), r));
        let wildcard = self.wildcards.iter().map(|(h, r)| (format!("*.{h}"), r));
        let deep = self
            .deep_wildcards
            .iter()
            .map(|(h, r)| (format!("*.{h}"), r));
        let any = self.any_host.iter().map(|r| ("*".to_owned(), r));
        exact.chain(wildcard).chain(deep).chain(any)
    }

    pub fn default_route(&self) -> Option<&Arc<Route>> {
        self.default_route.as_ref()
    }

    /// The backends built for one Service (one per port and protocol in use).
    pub fn backends_of(&self, namespace: &str, service: &str) -> &[Arc<Backend>] {
        // A tuple key cannot be borrowed from two `&str`s; the map is small per
        // call site and this runs only on endpoint updates, never per request.
        self.backends
            .get(&(namespace.to_owned(), service.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Every backend of the table, each once.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.values().flatten()
    }

    /// Ready endpoints across all backends, as of now.
    pub fn endpoint_count(&self) -> usize {
        self.backends
            .values()
            .flatten()
            .map(|b| b.endpoints.load().endpoints.len())
            .sum()
    }

    /// Finds the route for a `GET` without headers or query (see
    /// `route_for`). `host` may carry a port and any case.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.route_for(host, path, &request_match::RequestFacts::bare())
    }

    /// Finds the route for a request. `host` may carry a port and any case.
    pub fn route_for(
        &self,
        host: &str,
        path: &str,
        request: &request_match::RequestFacts<'_>,
    ) -> Option<&Arc<Route>> {
        let host = strip_port(host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let host_routes = self
            .hosts
            .get(host)
            .or_else(|| {
                // A wildcard covers exactly one extra leading label.
                let (first, rest) = host.split_once('.')?;
                if first.is_empty() {
                    return None;
                }
                self.wildcards.get(rest)
            })
            .or_else(|| self.deep_wildcard(host))
            .or(self.any_host.as_ref());
        host_routes
            .and_then(|h| h.route_for(path, request))
            .or(self.default_route.as_ref())
    }
}

impl RoutingTable {
    /// The Gateway API wildcard with the longest suffix that covers `host`.
    fn deep_wildcard(&self, host: &str) -> Option<&HostRoutes> {
        if self.deep_wildcards.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some((first, suffix)) = rest.split_once('.') {
            if first.is_empty() {
                return None;
            }
            if let Some(routes) = self.deep_wildcards.get(suffix) {
                return Some(routes);
            }
            rest = suffix;
        }
        None
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`. A trailing dot is dropped.
pub fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests;
