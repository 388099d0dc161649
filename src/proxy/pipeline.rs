//! Layer 6, the request pipeline: named phases around a per-request context
//! (`context`), in the spirit of pingora's `ProxyHttp` phases and Envoy's
//! filter chain.
//!
//! ```text
//! accept          request id, the one real client address (and the ConfigMap's
//!                 blocks), the log's request side
//! route           (host, path) -> Route, from the table loaded once
//! request filters the route's filters in order: CORS preflight, redirect,
//!                 edits, address list, basic authentication, body size,
//!                 limits, canary choice (`filters`); then the slow password
//!                 checks and `auth-url` (`external_auth`), and the mirror's
//!                 copy (`mirror`)
//! choose backend  the canary's, the route's, or its fallback
//! upstream        the request as that backend gets it; pick an endpoint, send,
//!                 retry (`forward`)
//! response        hop-by-hop headers, a tunnel for an upgrade, request id, HSTS,
//!                 connection management
//! log             metrics and the access-log line, once, from the context
//! ```
//!
//! The functions a request's future is made of return `async move` blocks
//! instead of being `async fn`s: see `proxy`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::{self, Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::affinity::StickyRequest;
use super::body::{ResponseBody, Throttle, UpstreamBody};
use super::client_addr::{real_client, ClientAddr};
use super::conn::ConnInfo;
use super::context::{RequestContext, UpstreamAnswer};
use super::edits::Applied;
use super::filters;
use super::forward::send_with_retries;
use super::headers::{
    is_upgrade_request, new_request_id, request_host, set_forwarded_headers, strip_hop_by_hop,
    X_REQUEST_ID,
};
use super::tunnel::UpstreamSide;
use crate::lifecycle::Lifecycle;
use crate::policy::access::Blocklist;
use crate::policy::canary::Cidr;
use crate::routing::request_match::RequestFacts;
use crate::routing::{Protocol, RoutingTable};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::connections::Downstream;
use crate::upstream::body::{FromUpstream, RequestBody};
use crate::upstream::buffered::{Buffering, Spool};
use crate::upstream::error::ProxyError;

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
    /// What a request over `limit-connections` gets (`limit-conn-status-code`).
    pub limit_conn_status: StatusCode,
    /// `allow-backend-server-header`: else the pods' `Server` is removed.
    pub allow_backend_server_header: bool,
    /// `Upgrade` protocols tunnelled (lowercase), `websocket` by default.
    pub allowed_upgrades: Vec<String>,
    /// A tunnel quiet both ways this long is closed.
    pub tunnel_idle_timeout: std::time::Duration,
    /// `client-body-timeout`, while a request body is buffered.
    pub client_body_timeout: std::time::Duration,
    /// Where buffered request bodies beyond memory go.
    pub spool: Spool,
    /// `block-cidrs`, `block-user-agents`, `block-referers`.
    pub blocklist: Option<std::sync::Arc<Blocklist>>,
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

impl Proxy {
    #[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
    pub fn handle<'a>(
        &'a self,
        request: Request<Incoming>,
        conn: &'a ConnInfo,
    ) -> impl Future<Output = Response<ResponseBody>> + 'a {
        async move {
            let version = request.version();
            let mut ctx = self.accept(&request, conn);
            let mut response = match self.proxy(request, conn, &mut ctx).await {
                Ok(response) => response,
                Err(error) => {
                    let status = error.status();
                    let (method, path, request_id) = (&ctx.method, ctx.uri.path(), &ctx.request_id);
                    if status.is_server_error() {
                        tracing::warn!(%error, %method, path, ?request_id, "request failed");
                    } else {
                        tracing::debug!(%error, %method, path, ?request_id, "request rejected");
                    }
                    error.to_response()
                }
            };
            if let Some(headers) = ctx.error_headers.take() {
                let pages = ctx
                    .route
                    .as_ref()
                    .and_then(|r| r.policy.error_pages.clone());
                let status = response.status().as_u16();
                if let Some(pages) = pages.filter(|p| p.codes.contains(&status)) {
                    // Boxed: the cold path.
                    let answer = super::error_pages::answer(&pages, status, *headers, &ctx);
                    response = Box::pin(answer).await;
                }
            }
            self.respond(&mut response, version, conn, &mut ctx);
            response
        }
    }

    /// Phase accept: counts the request on its connection, and fixes what the
    /// request is (its id) and who sent it (the one real client address).
    fn accept(&self, request: &Request<Incoming>, conn: &ConnInfo) -> RequestContext {
        conn.touch();
        if !conn.tls {
            conn.count_as(if request.version() == Version::HTTP_2 {
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
        let settings = self.settings.load();
        let client = Self::client_addr(request, conn, &settings);
        // The ConfigMap's blocks, for every request (nginx's http level).
        let blocked = (settings.blocklist.as_ref())
            .is_some_and(|list| list.blocks(client.ip, request.headers()));
        let mut ctx = RequestContext::new(request, client, request_id, &self.access_log);
        ctx.blocked = blocked;
        ctx
    }

    /// The one real client address of this request (`client_addr`).
    fn client_addr(
        request: &Request<Incoming>,
        conn: &ConnInfo,
        settings: &ProxySettings,
    ) -> ClientAddr {
        let peer = conn.peer.ip();
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

    /// Phases route, request filters, choose backend and upstream: the answer
    /// to send back, from the pod or from sluice.
    #[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
    fn proxy<'a>(
        &'a self,
        mut request: Request<Incoming>,
        conn: &'a ConnInfo,
        ctx: &'a mut RequestContext,
    ) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
        async move {
            if ctx.blocked {
                return Ok(filters::forbidden());
            }
            // Route.
            let table = self.table.load_full();
            // Borrowed from a value that shares the request's bytes: no copy.
            let host_value = request_host(&request)?;
            let host = host_value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
            let path = crate::routing::normalize::routing_path(request.uri().path())
                .ok_or(ProxyError::BadRequest("path climbs above /"))?;
            let facts = RequestFacts {
                method: request.method(),
                headers: request.headers(),
                query: request.uri().query(),
            };
            let route = table
                .route_for(host, &path, &facts)
                .ok_or(ProxyError::NoRoute)?
                .clone();
            ctx.route = Some(route.clone());
            if route.policy.error_pages.is_some() {
                ctx.error_headers = Some(Box::new(request.headers().clone()));
            }

            // While some host checks client certificates, no client may
            // send the headers that tell pods who a certificate named.
            if !table.client_cas.is_empty() {
                super::client_cert::remove_forged(request.headers_mut());
            }

            // Request filters.
            if let Some(response) =
                filters::run(&route, &mut request, host, conn, ctx, &self.settings)?
            {
                return Ok(response);
            }
            if let Some(check) = ctx.slow_auth.take() {
                let challenge = check.challenge().clone();
                // Boxed: the cold path.
                if !Box::pin(check.verify()).await {
                    return Ok(filters::unauthorized(&challenge));
                }
            }

            let external_auth = route.policy.external_auth.as_ref();
            if let Some(auth) = external_auth.filter(|_| !ctx.auth_waived) {
                // Boxed: the cold path.
                let refused = Box::pin(super::external_auth::check(
                    auth, &route, &table, &request, host, conn, ctx,
                ))
                .await;
                if let Some(response) = refused {
                    return Ok(response);
                }
            }

            // `mirror-target`: the copy's path, with the client's variables.
            let mirror_path = route
                .policy
                .mirror
                .as_ref()
                .map(|mirror| super::edits::render(&mirror.path, &request, host, conn, ctx));

            // Choose the backend.
            let backend = match (&ctx.canary, &ctx.weighted) {
                (Some(canary), _) => canary.backend.clone(),
                (None, Some((weighted, _))) => weighted.clone(),
                (None, None) => route.active_backend().clone(),
            };
            ctx.backend = Some(backend.clone());

            // Upstream.
            // Settings are read only for the rare request that asks to upgrade.
            let client_upgrade = (request.headers().contains_key(header::UPGRADE)
                && is_upgrade_request(&request, &self.settings.load().allowed_upgrades))
            .then(|| hyper::upgrade::on(&mut request));
            let sticky = route
                .policy
                .affinity
                .as_ref()
                .map(|affinity| StickyRequest::of(affinity, &request, &backend));
            let hash = match &sticky {
                Some(sticky) => Some(sticky.key()),
                None => route
                    .policy
                    .balance
                    .hash_by
                    .as_ref()
                    .and_then(|by| by.key_of_request(&request, ctx.client.ip)),
            };
            let metrics = ctx
                .metrics()
                .cloned()
                .unwrap_or_else(|| route.metrics.clone());
            let started = Instant::now();
            let upgrade = client_upgrade.is_some();
            let body_limit = route.policy.body_limit;
            let mut request =
                request.map(|body| RequestBody::new(body, body_limit, metrics.clone()));
            // `proxy-request-buffering`: HTTP/2 backends (gRPC) stream, as
            // nginx's `grpc_pass` does; so do upgrades, which have no body.
            // A mirror that copies the body reads it whole, as nginx's does.
            let buffering = (route.policy.request_buffering)
                .filter(|_| !backend.protocol.is_h2())
                .or_else(|| route.policy.mirror.as_ref().and_then(|m| m.body));
            if let Some(memory) = buffering {
                if !upgrade && !request.body().is_end_stream() {
                    // Boxed: the cold path (most requests have no body).
                    Box::pin(self.buffer(request.body_mut(), memory)).await?;
                }
            }
            if let (Some(mirror), Some(path)) = (&route.policy.mirror, mirror_path) {
                super::mirror::send_copy(mirror, &route, &request, path);
            }
            let upstream_request = Self::upstream_request(
                request,
                &backend.protocol,
                conn,
                ctx,
                &host_value,
                upgrade,
            )?;
            let sent = send_with_retries(upstream_request, &route, &backend, hash, &metrics);
            let (mut response, pick, attempts) = match route.policy.request_timeout {
                // Boxed: the cold path (only Gateway API routes set it).
                Some(limit) => Box::pin(tokio::time::timeout_at(started + limit, sent))
                    .await
                    .map_err(|_| ProxyError::ReadTimeout)??,
                None => sent.await?,
            };
            if let (Some(sticky), Some(affinity)) = (sticky, &route.policy.affinity) {
                sticky.answer(
                    affinity,
                    &mut response,
                    pick.endpoint.addr(),
                    attempts,
                    conn.tls,
                );
            }
            ctx.upstream = Some(UpstreamAnswer {
                endpoint: pick.endpoint.addr(),
                status: response.status().as_u16(),
                took: started.elapsed(),
                attempts,
            });

            // The pod's answer, on its way back.
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let upstream = match response.body_mut() {
                    FromUpstream::H1(body) => body
                        .take_upgraded()
                        .map(|(stream, early)| UpstreamSide::Plain(stream, early)),
                    FromUpstream::Hyper(_) => {
                        Some(UpstreamSide::Hyper(hyper::upgrade::on(&mut response)))
                    }
                };
                if let (Some(client_upgrade), Some(upstream)) = (client_upgrade, upstream) {
                    let idle = self.settings.load().tunnel_idle_timeout;
                    self.tunnels
                        .spawn(super::tunnel::run(client_upgrade, upstream, idle));
                }
            } else {
                strip_hop_by_hop(response.headers_mut(), false);
            }
            // As ingress-nginx (nginx's `proxy_hide_header Server` default);
            // settings are read only when there is one (a look at the few
            // names is cheaper than hashing one).
            if response.headers().keys().any(|name| name == header::SERVER)
                && !self.settings.load().allow_backend_server_header
            {
                response.headers_mut().remove(header::SERVER);
            }
            let (parts, body) = response.into_parts();
            let mut body = UpstreamBody::new(body, route.policy.read_timeout, pick.in_flight);
            if let Some((rate, after)) = route.policy.limit_rate {
                body = body.throttled(Throttle::new(rate, after));
            }
            Ok(Response::from_parts(parts, ResponseBody::upstream(body)))
        }
    }

    /// Reads a request body whole before it goes upstream.
    async fn buffer(&self, body: &mut RequestBody, memory: u64) -> Result<(), ProxyError> {
        // Owned: the read may take long, and a guard must not be held across it.
        let settings = self.settings.load_full();
        let buffering = Buffering {
            memory,
            timeout: settings.client_body_timeout,
        };
        let outcome = body.buffer(&settings.spool, buffering).await?;
        metrics::counter!(crate::telemetry::REQUEST_BODIES_BUFFERED, "outcome" => outcome.label())
            .increment(1);
        Ok(())
    }

    /// Phases response and log: what every answer gets on its way out, then
    /// the metrics and the log line, written once from the context.
    /// In place: the response and the context are large, and moving them in
    /// and out cost more than the work here.
    fn respond(
        &self,
        response: &mut Response<ResponseBody>,
        version: Version,
        conn: &ConnInfo,
        ctx: &mut RequestContext,
    ) {
        if !ctx.response_edits.is_empty() {
            let status = response.status();
            super::edits::apply_to_response(&ctx.response_edits, status, response.headers_mut());
        }
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        if conn.tls {
            if let Some(hsts) = &self.settings.load().hsts {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
        }
        ctx.finish(
            response,
            || self.table.load().unrouted.clone(),
            &self.access_log,
        );
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
    }

    /// The request as the chosen backend gets it, in that backend's protocol (a
    /// canary or fallback may speak another one than the route's main backend).
    fn upstream_request(
        request: Request<RequestBody>,
        protocol: &Protocol,
        conn: &ConnInfo,
        ctx: &RequestContext,
        host: &HeaderValue,
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
        set_forwarded_headers(headers, conn, &ctx.client, host);
        headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());

        let mut uri_parts = uri::Parts::default();
        uri_parts.path_and_query = parts.uri.path_and_query().cloned();
        let h2 = protocol.is_h2();
        if !h2 {
            parts.version = Version::HTTP_11;
            // The host the request was routed by, always: an absolute-form
            // URI or an HTTP/2 `:authority` may differ from the client's
            // `Host`, and the pod must not see another host than sluice chose.
            if parts.headers.get(header::HOST) != Some(host) {
                parts.headers.insert(header::HOST, host.clone());
            }
        } else {
            parts.version = Version::HTTP_2;
            uri_parts.scheme = Some(if matches!(protocol, Protocol::Tls(_)) {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            uri_parts.authority = Some(
                Authority::try_from(host.as_bytes())
                    .map_err(|_| ProxyError::BadRequest("invalid host"))?,
            );
            if uri_parts.path_and_query.is_none() {
                uri_parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
            }
            parts.headers.remove(header::HOST);
        }
        // A snippet's `proxy_set_header` (or `upstream-vhost`) wins over
        // sluice's own, as in nginx; over HTTP/2 a `Host` it sets is the
        // `:authority`, when it is one.
        if let Some(method) = &ctx.upstream_method {
            parts.method = method.clone();
        }
        for edit in &ctx.request_edits {
            if h2 && edit.names(&header::HOST) {
                if let Applied::Set(_, value) = edit {
                    if let Ok(authority) = Authority::try_from(value.as_bytes()) {
                        uri_parts.authority = Some(authority);
                    }
                }
                continue;
            }
            edit.apply(&mut parts.headers);
        }
        parts.uri = Uri::from_parts(uri_parts)
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        Ok(Request::from_parts(parts, body))
    }
}
