//! The request pipeline, as one plain async function:
//! load table -> route(host, path) -> body limit -> pick endpoint -> rewrite headers
//! -> pooled upstream connection -> stream the response back (or tunnel an upgrade).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{self, Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::body::{Completion, FromUpstream, PendingLog, RequestBody, ResponseBody, UpstreamBody};
use super::client_addr::{real_client, ClientAddr};
use super::error::ProxyError;
use super::pool::Conn;
use crate::balance::pick::{self as balance, pick_endpoint, Pick};
use crate::balance::window::Outcome;
use crate::lifecycle::Lifecycle;
use crate::policy::canary::Cidr;
use crate::policy::retry::Failure;
use crate::routing::{Backend, Endpoint, Protocol, Route, RoutingTable};
use crate::telemetry;
use crate::telemetry::access_log::{self, AccessLog, Entry};
use crate::telemetry::connections::{self, Downstream};
use crate::telemetry::requests::RequestMetrics;
use http_body::Body as _;
use tokio::time::Instant;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Settings of the data plane that are not per route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub use_forwarded_headers: bool,
    /// Peers whose forwarded headers are believed (`proxy-real-ip-cidr`).
    pub real_ip_from: Vec<Cidr>,
    pub keep_alive_requests: u32,
    /// `Strict-Transport-Security` for HTTPS responses, when enabled.
    pub hsts: Option<HeaderValue>,
    /// What a request over a rate limit gets (429 unless configured).
    pub limit_status: StatusCode,
    /// `Upgrade` protocols tunnelled (lowercase), `websocket` by default.
    pub allowed_upgrades: Vec<String>,
    /// A tunnel quiet both ways this long is closed.
    pub tunnel_idle_timeout: std::time::Duration,
}

/// Shared by every connection of the plaintext listener.
#[derive(Debug)]
pub struct Proxy {
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Swapped whole when the config file is reloaded.
    pub settings: ArcSwap<ProxySettings>,
    pub lifecycle: Arc<Lifecycle>,
    pub access_log: AccessLog,
    /// Upgraded connections (WebSockets) run detached from their HTTP connection;
    /// drain waits for them here.
    pub tunnels: TaskTracker,
}

/// One downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Arrived on the TLS listener.
    pub tls: bool,
    pub requests: AtomicU32,
    /// Header values every request of this connection sends: formatted once.
    client_ip: HeaderValue,
    local_port: HeaderValue,
    /// Counted as open under this protocol until dropped: known after the TLS
    /// handshake, or, in plaintext, from the first request (h2c or HTTP/1).
    protocol: OnceLock<Downstream>,
    /// Requests started on this connection, for the idle watchdog (a count, not
    /// a time: reading the clock for every request costs more).
    started: AtomicU64,
    /// Reads that brought bytes from the client (see `activity`), counted by
    /// the connection's `activity::Counted` IO.
    reads: Arc<AtomicU64>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            local,
            tls,
            requests: AtomicU32::new(0),
            client_ip: HeaderValue::try_from(peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("")),
            local_port: HeaderValue::from(local.port()),
            protocol: OnceLock::new(),
            started: AtomicU64::new(0),
            reads: Arc::default(),
        }
    }

    /// The count of reads from the client, for its `activity::Counted` IO.
    pub fn reads(&self) -> Arc<AtomicU64> {
        self.reads.clone()
    }

    /// What the idle watchdog watches change. Over HTTP/1, bytes on their way
    /// count as well as requests started, so a head still arriving is left to
    /// `client-header-timeout` rather than cut as idle. Over HTTP/2 only new
    /// streams count: pings and their answers are not use.
    fn activity(&self) -> u64 {
        let started = self.started.load(Ordering::Relaxed);
        match self.protocol.get() {
            Some(Downstream::H2 | Downstream::H2c) => started,
            _ => started.wrapping_add(self.reads.load(Ordering::Relaxed)),
        }
    }

    /// Notes that a request started.
    fn touch(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns once the connection has been idle (`activity`) for `idle`.
    pub async fn idle_for(&self, idle: std::time::Duration) {
        super::activity::quiet_for(|| self.activity(), idle).await;
    }

    /// Counts the connection as open (once).
    pub fn count_as(&self, protocol: Downstream) {
        if self.protocol.get().is_none() && self.protocol.set(protocol).is_ok() {
            protocol.opened();
        }
    }
}

impl Drop for ConnInfo {
    fn drop(&mut self) {
        if let Some(protocol) = self.protocol.get() {
            protocol.closed();
        }
    }
}

impl Proxy {
    #[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
    pub fn handle<'a>(
        &'a self,
        request: Request<Incoming>,
        conn: &'a ConnInfo,
    ) -> impl Future<Output = Response<ResponseBody>> + 'a {
        async move {
            conn.touch();
            let version = request.version();
            if !conn.tls {
                conn.count_as(if version == Version::HTTP_2 {
                    Downstream::H2c
                } else {
                    Downstream::Http1
                });
            }
            let mut request_id = request
                .headers()
                .get(&X_REQUEST_ID)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(new_request_id);
            // Unique per request: over HTTP/2, HPACK must not add it to its dynamic
            // table, where it would never be reused and would only churn the table
            // (indexing cost a quarter of an h2c request's CPU).
            request_id.set_sensitive(true);
            // For the error log line and metrics below; a Uri clone shares its bytes.
            let method = request.method().clone();
            let uri = request.uri().clone();
            let started = Instant::now();
            let client = self.client_addr(&request, conn);
            let mut entry = self
                .access_log
                .enabled()
                .then(|| self.log_entry(&request, &client, &request_id));
            // The route's (or canary's) metrics once routed; the unrouted ones if not.
            let mut metrics = None;
            let forwarded = self
                .forward(
                    request,
                    conn,
                    &client,
                    &request_id,
                    &mut entry,
                    &mut metrics,
                )
                .await;
            let mut response = match forwarded {
                Ok(response) => response,
                Err(error) => {
                    let status = error.status();
                    if status.is_server_error() {
                        tracing::warn!(%error, %method, path = uri.path(), request_id = ?request_id, "request failed");
                    } else {
                        tracing::debug!(%error, %method, path = uri.path(), request_id = ?request_id, "request rejected");
                    }
                    error.to_response()
                }
            };
            response
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), request_id);
            if conn.tls {
                if let Some(hsts) = &self.settings.load().hsts {
                    response
                        .headers_mut()
                        .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
                }
            }
            let metrics = metrics.unwrap_or_else(|| self.table.load().unrouted.clone());
            metrics.record(&method, response.status(), started.elapsed());
            let log = entry.map(|mut entry| {
                entry.status = response.status().as_u16();
                PendingLog {
                    entry,
                    started,
                    log: self.access_log.clone(),
                }
            });
            response.body_mut().on_done(Completion {
                metrics: Some(metrics),
                log,
                bytes: 0,
            });
            if version <= Version::HTTP_11 && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                // HTTP/1 connection management: close after `keep-alive-requests`, and
                // while draining, so clients move to other instances promptly.
                let served = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = self.settings.load().keep_alive_requests;
                if self.lifecycle.is_draining() || served >= limit {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            response
        }
    }

    /// The one real client address of this request (`client_addr`).
    fn client_addr(&self, request: &Request<Incoming>, conn: &ConnInfo) -> ClientAddr {
        let peer = conn.peer.ip();
        let settings = self.settings.load();
        let trusted_peer = settings.use_forwarded_headers
            && settings.real_ip_from.iter().any(|cidr| cidr.contains(peer));
        if !trusted_peer {
            return ClientAddr {
                ip: peer,
                header: conn.client_ip.clone(),
                trusted_peer,
            };
        }
        let ip = real_client(peer, request.headers(), &settings.real_ip_from);
        ClientAddr {
            ip,
            header: HeaderValue::try_from(ip.to_string()).unwrap_or(conn.client_ip.clone()),
            trusted_peer,
        }
    }

    /// The request's side of its access log line.
    fn log_entry(
        &self,
        request: &Request<Incoming>,
        client: &ClientAddr,
        request_id: &HeaderValue,
    ) -> Box<Entry> {
        Box::new(Entry {
            time: access_log::now_rfc3339(),
            request_id: request_id.to_str().unwrap_or_default().to_owned(),
            client: client.ip.to_string(),
            // As the client sent it, even when it is refused (escaped when written).
            host: match request.uri().authority() {
                Some(authority) => authority.as_str().to_owned(),
                None => request
                    .headers()
                    .get(header::HOST)
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                    .unwrap_or_default(),
            },
            method: request.method().to_string(),
            path: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            protocol: format!("{:?}", request.version()),
            bytes_in: content_length(request).unwrap_or(0),
            ..Entry::default()
        })
    }

    #[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
    fn forward<'a>(
        &'a self,
        mut request: Request<Incoming>,
        conn: &'a ConnInfo,
        client: &'a ClientAddr,
        request_id: &'a HeaderValue,
        log: &'a mut Option<Box<Entry>>,
        metrics: &'a mut Option<Arc<RequestMetrics>>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
        async move {
            let table = self.table.load_full();
            // Borrowed from a value that shares the request's bytes: no copy.
            let host_value = request_host(&request)?;
            let host = host_value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
            let path = crate::routing::normalize::routing_path(request.uri().path())
                .ok_or(ProxyError::BadRequest("path climbs above /"))?;
            let route = table.route(host, &path).ok_or(ProxyError::NoRoute)?.clone();
            *metrics = Some(route.metrics.clone());
            if !route.policy.access_log {
                *log = None;
            }
            if let Some(entry) = log.as_deref_mut() {
                entry.namespace.clone_from(&route.ingress.namespace);
                entry.ingress.clone_from(&route.ingress.name);
                entry.service.clone_from(&route.backend.name.service);
            }
            if route.policy.https_redirect && !conn.tls {
                return Ok(https_redirect(host, request.uri()));
            }
            if let (Some(limit), Some(length)) = (route.policy.body_limit, content_length(&request))
            {
                if length > limit {
                    return Err(ProxyError::BodyTooLarge);
                }
            }
            if let Some(limiter) = &route.limiter {
                if let Err(retry_after) = limiter.check(request.headers(), client.ip) {
                    return Ok(self.rate_limited(retry_after));
                }
            }
            // The canary takes the request when its rules say so and it has pods.
            let canary = route.canary.as_ref().filter(|c| {
                !c.backend.endpoint_set().endpoints.is_empty()
                    && c.rule.decide(request.headers(), client.ip)
            });
            let backend = match canary {
                Some(canary) => {
                    canary.requests.increment(1);
                    canary.backend.clone()
                }
                None => route.active_backend().clone(),
            };
            if let Some(entry) = log.as_deref_mut() {
                entry.canary = canary.is_some();
                entry.service.clone_from(&backend.name.service);
                if let Some(canary) = canary {
                    entry.ingress.clone_from(&canary.ingress.name);
                }
            }
            // Settings are read only for the rare request that asks to upgrade.
            let client_upgrade = (request.headers().contains_key(header::UPGRADE)
                && is_upgrade_request(&request, &self.settings.load().allowed_upgrades))
            .then(|| hyper::upgrade::on(&mut request));
            let hash = route
                .policy
                .balance
                .hash_by
                .as_ref()
                .and_then(|by| by.key(request.headers(), client.ip));
            if let Some(canary) = canary {
                *metrics = Some(canary.metrics.clone());
            }
            let request_metrics = canary.map_or(&route.metrics, |c| &c.metrics);
            let started = Instant::now();
            let upgrade = client_upgrade.is_some();
            let body_limit = route.policy.body_limit;
            let request =
                request.map(|body| RequestBody::new(body, body_limit, request_metrics.clone()));
            let upstream_request = Self::upstream_request(
                request,
                backend.protocol,
                conn,
                client,
                &host_value,
                request_id,
                upgrade,
            )?;
            let (mut response, pick, attempts) =
                send_with_retries(upstream_request, &route, &backend, hash, request_metrics)
                    .await?;
            if let Some(entry) = log.as_deref_mut() {
                entry.upstream = Some(pick.endpoint.addr().to_string());
                entry.upstream_status = Some(response.status().as_u16());
                entry.upstream_duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
                entry.retries = attempts.saturating_sub(1);
            }
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let upstream = match response.body_mut() {
                    FromUpstream::H1(body) => body.take_upgraded(),
                    FromUpstream::H2(_) => None,
                };
                if let (Some(client_upgrade), Some(upstream)) = (client_upgrade, upstream) {
                    let idle = self.settings.load().tunnel_idle_timeout;
                    self.tunnels
                        .spawn(super::tunnel::run(client_upgrade, upstream, idle));
                }
            } else {
                strip_hop_by_hop(response.headers_mut(), false);
            }
            let (parts, body) = response.into_parts();
            let body = UpstreamBody::new(body, route.policy.read_timeout, pick.in_flight);
            Ok(Response::from_parts(parts, ResponseBody::upstream(body)))
        }
    }

    /// Over the Ingress's rate limit: no upstream call, a short answer, and when
    /// to come back.
    fn rate_limited(&self, retry_after: std::time::Duration) -> Response<ResponseBody> {
        let status = self.settings.load().limit_status;
        let body = format!(
            "{} {}: rate limit of this Ingress exceeded\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(ResponseBody::from(bytes::Bytes::from(body)));
        *response.status_mut() = status;
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    /// The request as the chosen backend gets it, in that backend's protocol (a
    /// canary or fallback may speak another one than the route's main backend).
    fn upstream_request(
        request: Request<RequestBody>,
        protocol: Protocol,
        conn: &ConnInfo,
        client: &ClientAddr,
        host: &HeaderValue,
        request_id: &HeaderValue,
        upgrade: bool,
    ) -> Result<Request<RequestBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let headers = &mut parts.headers;
        // Room for what is added below, so the map grows once, not twice.
        headers.reserve(8);
        strip_hop_by_hop(headers, upgrade);
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        set_forwarded_headers(headers, conn, client, host);
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());

        let mut uri_parts = uri::Parts::default();
        uri_parts.path_and_query = parts.uri.path_and_query().cloned();
        match protocol {
            Protocol::Http1 => {
                parts.version = Version::HTTP_11;
                // The host the request was routed by, always: an absolute-form
                // URI or an HTTP/2 `:authority` may differ from the client's
                // `Host`, and the pod must not see another host than sluice chose.
                if parts.headers.get(header::HOST) != Some(host) {
                    parts.headers.insert(header::HOST, host.clone());
                }
            }
            Protocol::H2c => {
                parts.version = Version::HTTP_2;
                uri_parts.scheme = Some(Scheme::HTTP);
                uri_parts.authority = Some(
                    Authority::try_from(host.as_bytes())
                        .map_err(|_| ProxyError::BadRequest("invalid host"))?,
                );
                if uri_parts.path_and_query.is_none() {
                    uri_parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
                }
                parts.headers.remove(header::HOST);
            }
        }
        parts.uri = Uri::from_parts(uri_parts)
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        Ok(Request::from_parts(parts, body))
    }
}

/// What the pod is told about the client, as ingress-nginx: `X-Forwarded-For`
/// and `X-Real-IP` are the real client address (never the client's own claim);
/// `X-Forwarded-Proto/Host/Port` are ours unless a trusted edge set them.
fn set_forwarded_headers(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    client: &ClientAddr,
    host: &HeaderValue,
) {
    headers.insert(X_FORWARDED_FOR.clone(), client.header.clone());
    headers.insert(X_REAL_IP.clone(), client.header.clone());
    let mut set = |name: &HeaderName, value: HeaderValue| {
        if !(client.trusted_peer && headers.contains_key(name)) {
            headers.insert(name.clone(), value);
        }
    };
    let proto = if conn.tls { "https" } else { "http" };
    set(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    set(&X_FORWARDED_HOST, host.clone());
    set(&X_FORWARDED_PORT, conn.local_port.clone());
}

/// Picks endpoints and sends until an answer comes back or the route's retry
/// rule (and the backend's budget) says to stop. Every attempt's outcome feeds
/// the balancer: latency estimates and circuit breakers.
#[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
fn send_with_retries<'a>(
    request: Request<RequestBody>,
    route: &'a Route,
    backend: &'a Backend,
    hash: Option<u64>,
    metrics: &'a RequestMetrics,
) -> impl Future<Output = Result<(Response<FromUpstream>, Pick, u32), ProxyError>> + 'a {
    async move {
        let policy = &route.policy;
        let method = request.method().clone();
        // Without a body, a request can be sent again even after it went out once;
        // keep what that takes only when the route's rule may ask for it (requests
        // that never went out come back whole).
        let replay = policy
            .retry
            .next_upstream
            .resends_sent()
            .then(|| Replay::of(&request))
            .flatten();
        let mut request = Some(request);
        // Endpoints already tried: only filled once a retry happens.
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempts: u32 = 0;
        let started = Instant::now();
        backend.retry_budget.deposit(backend.second());
        loop {
            let pick = pick_endpoint(backend, &policy.balance, hash, &tried)
                .ok_or(ProxyError::NoEndpoint)?;
            attempts += 1;
            // A retry only starts when the request came back unsent or can be replayed,
            // so one of the two is always there.
            let Some(attempt) = request
                .take()
                .or_else(|| replay.as_ref().map(Replay::build))
            else {
                return Err(ProxyError::NoEndpoint);
            };
            tracing::debug!(endpoint = %pick.endpoint.addr(), attempt = attempts, "forwarding");
            let attempt_started = Instant::now();
            let result = send(attempt, route, &pick.endpoint, metrics).await;
            let latency = attempt_started.elapsed();
            metrics.record_upstream_response(latency);
            // What failed, why (for the retry rule), and the request if it never left.
            let (failure, reason, unsent) = match result {
                Ok(answer) => {
                    let status = answer.status();
                    let outcome = Outcome::Response(status.as_u16());
                    balance::record(backend, &policy.balance, &pick, outcome, latency);
                    if !policy.retry.next_upstream.on_status(status) {
                        return Ok((answer, pick, attempts));
                    }
                    (Ok(answer), Failure::Status(status), None)
                }
                Err((error, unsent)) => {
                    if let Some(outcome) = error.outcome(unsent.is_some()) {
                        balance::record(backend, &policy.balance, &pick, outcome, latency);
                    }
                    let Some(reason) = error.failure(unsent.is_some()) else {
                        return Err(error);
                    };
                    (Err(error), reason, unsent)
                }
            };
            let replayable = unsent.is_some() || replay.is_some();
            let endpoints = backend.endpoint_set().endpoints.len();
            let allowed = policy.retry.allows(
                reason,
                &method,
                replayable,
                attempts,
                endpoints,
                started.elapsed(),
            );
            if allowed && backend.retry_budget.withdraw(backend.second()) {
                metrics::counter!(telemetry::RETRIES).increment(1);
                tracing::debug!(?reason, endpoint = %pick.endpoint.addr(), "retrying on another endpoint");
                tried.push(pick.endpoint.addr());
                request = unsent;
                continue;
            }
            if allowed {
                metrics::counter!(telemetry::RETRIES_DENIED).increment(1);
                tracing::debug!(backend = %backend.name, "retry refused: the backend's retry budget is spent");
            }
            return match failure {
                Ok(answer) => Ok((answer, pick, attempts)),
                Err(error) => Err(error),
            };
        }
    }
}

/// Enough of a bodiless request to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Option<Replay> {
        request.body().is_end_stream().then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn build(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One attempt: the response, or the error and, when the request never went
/// out, the request itself so it can go elsewhere.
type Attempt = Result<Response<FromUpstream>, (ProxyError, Option<Request<RequestBody>>)>;

/// Sends to the endpoint. A reused keep-alive connection that the upstream closed
/// just before our request went out is the classic pooling race: the request was
/// never sent, so it goes once more on a fresh connection to the same endpoint.
#[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
fn send<'a>(
    request: Request<RequestBody>,
    route: &'a Route,
    endpoint: &'a Endpoint,
    metrics: &'a RequestMetrics,
) -> impl Future<Output = Attempt> + 'a {
    async move {
        let policy = &route.policy;
        let state = &endpoint.state;
        let read_timeout = policy.read_timeout;
        let (conn, connected) = match state
            .pool
            .checkout(policy.connect_timeout, policy.send_timeout)
            .await
        {
            Ok(checkout) => checkout,
            Err(error) => return Err((error, Some(request))),
        };
        if let Some(took) = connected {
            metrics.record_upstream_connect(took);
        }
        let timed_out = || (ProxyError::ReadTimeout, None);
        match conn {
            Conn::H1 { conn, reused } => {
                connections::upstream_connection_used(reused);
                let Ok(first) = tokio::time::timeout(read_timeout, conn.send(request, state)).await
                else {
                    return Err(timed_out());
                };
                let first = first.map(|response| response.map(FromUpstream::H1));
                match first {
                    Err((error, Some(unsent))) if reused => {
                        tracing::debug!(%error, endpoint = %state.addr, "pooled connection closed; retrying on a new one");
                        // Boxed: a cold path that would otherwise enlarge every request's future.
                        let fresh = match Box::pin(
                            state
                                .pool
                                .connect_fresh(policy.connect_timeout, policy.send_timeout),
                        )
                        .await
                        {
                            Ok((fresh, took)) => {
                                metrics.record_upstream_connect(took);
                                connections::upstream_connection_used(false);
                                fresh
                            }
                            Err(error) => return Err((error, Some(unsent))),
                        };
                        match tokio::time::timeout(read_timeout, fresh.send(unsent, state)).await {
                            Ok(result) => result.map(|response| response.map(FromUpstream::H1)),
                            Err(_) => Err(timed_out()),
                        }
                    }
                    other => other,
                }
            }
            Conn::H2(mut sender) => {
                if let Err(error) = sender.ready().await {
                    return Err((ProxyError::Upstream(error), Some(request)));
                }
                match tokio::time::timeout(read_timeout, sender.send_request(request)).await {
                    Ok(Ok(response)) => Ok(response.map(FromUpstream::H2)),
                    Ok(Err(error)) => Err((ProxyError::from_upstream(error), None)),
                    Err(_) => Err(timed_out()),
                }
            }
        }
    }
}

/// A 308 to the same host and path over HTTPS (the method and body are kept).
fn https_redirect(host: &str, uri: &Uri) -> Response<ResponseBody> {
    // To the standard port: the plain port number means nothing on HTTPS.
    let host = crate::routing::strip_port(host);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{target}");
    let mut response = Response::new(ResponseBody::from(bytes::Bytes::from(format!(
        "308 Permanent Redirect: {location}\n"
    ))));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form), else
/// `Host`. A clone of the client's `Host` value shares its bytes.
fn request_host(request: &Request<Incoming>) -> Result<HeaderValue, ProxyError> {
    if let Some(authority) = request.uri().authority() {
        return HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority"));
    }
    let host = request
        .headers()
        .get(header::HOST)
        .ok_or(ProxyError::BadRequest("missing Host header"))?;
    if host.is_empty() {
        return Err(ProxyError::BadRequest("empty Host header"));
    }
    // A name, an IPv4 or a bracketed IPv6 address, and a port: nothing else, so
    // the value the pod, the headers and the log get is a host, not a payload.
    let valid = host.as_bytes().iter().all(|&b| HOST_BYTES[usize::from(b)]);
    if !valid {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    Ok(host.clone())
}

/// The bytes a `Host` may hold: letters, digits and `-._:[]` (one lookup each).
static HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b':' | b'[' | b']');
        b += 1;
    }
    table
};

fn content_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An upgrade to a protocol the operator allows (`allowed-upgrades`, default
/// `websocket`). Any other `Upgrade` is removed with the hop-by-hop headers: a
/// pod never sees a protocol switch sluice would not tunnel (h2c smuggling).
fn is_upgrade_request(request: &Request<Incoming>, allowed: &[String]) -> bool {
    let headers = request.headers();
    request.version() == Version::HTTP_11
        && request.method() != Method::CONNECT
        && header_has_token(headers, &header::CONNECTION, "upgrade")
        && headers.get_all(header::UPGRADE).iter().count() == 1
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| allowed.iter().any(|a| v.trim().eq_ignore_ascii_case(a)))
}

fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes headers that describe one connection, not the message (RFC 9110 7.6.1),
/// including any the `Connection` header names. `te: trailers` is end-to-end for
/// gRPC and kept; `Upgrade` is kept when the request is being upgraded.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one look at the names is cheaper than
    // the removals below, each of which hashes its name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    let te_trailers = header_has_token(headers, &header::TE, "trailers");
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The headers `strip_hop_by_hop` acts on (those the `Connection` header names
/// only matter when it is there).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
    .contains(&name)
}

/// 32 random hex digits, as ingress-nginx's `$req_id`, written without the
/// formatting machinery.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut random = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut().rev() {
        *digit = HEX[(random & 0xf) as usize];
        random >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-kept"], "1");
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
        // A hop-by-hop header without `Connection` still goes.
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
    }

    #[test]
    fn upgrade_header_survives_an_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert!(!headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let id = new_request_id();
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
