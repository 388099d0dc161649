//! The per-request context the pipeline's phases share (`pipeline`): who asked
//! (`accept`), which route and backend took the request, how the upstream
//! answered. The access-log entry and the request metrics are written once,
//! from the context, when the response is ready (`finish`); no phase writes
//! them on its own.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Completion, PendingLog, ResponseBody};
use super::client_addr::ClientAddr;
use super::edits::Applied;
use super::headers::content_length;
use crate::policy::basic_auth::SlowCheck;
use crate::policy::connlimit::ConnSlot;
use crate::routing::{Backend, Canary, Route};
use crate::telemetry::access_log::{self, AccessLog, Entry};
use crate::telemetry::requests::RequestMetrics;

/// What the upstream phase learnt about the exchange, for the log.
#[derive(Debug)]
pub struct UpstreamAnswer {
    pub endpoint: std::net::SocketAddr,
    pub status: u16,
    pub took: Duration,
    pub attempts: u32,
}

pub struct RequestContext {
    pub request_id: HeaderValue,
    /// For the error log line and the metrics; a `Uri` clone shares its bytes.
    pub method: Method,
    pub uri: Uri,
    pub started: Instant,
    /// The one real client address (`client_addr`).
    pub client: ClientAddr,
    /// The request's side of its log line, taken at accept while the request
    /// is at hand; `None` when the access log is off.
    entry: Option<Box<Entry>>,
    pub route: Option<Arc<Route>>,
    /// The canary that took the request, if one did.
    pub canary: Option<Arc<Canary>>,
    /// The weighted backend chosen for the request (Gateway API), if any.
    pub weighted: Option<(Arc<Backend>, Arc<RequestMetrics>)>,
    /// The backend the request went to (the route's, its fallback, or the
    /// canary's).
    pub backend: Option<Arc<Backend>>,
    pub upstream: Option<UpstreamAnswer>,
    /// Header changes the route's edits made for this request (`edits`): to
    /// the upstream request, and to the answer (with `always`).
    pub request_edits: Vec<Applied>,
    pub response_edits: Vec<(Applied, bool)>,
    /// `proxy_method`: the method the pod sees instead of the client's.
    pub upstream_method: Option<Method>,
    /// The client's headers, kept when the route has `custom-http-errors`:
    /// the default backend gets them with the error.
    pub error_headers: Option<Box<http::HeaderMap>>,
    /// `limit-connections`: held until the answer has been sent.
    pub conn_slot: Option<Box<ConnSlot>>,
    /// The ConfigMap's `block-*` lists refuse this request.
    pub blocked: bool,
    /// `auth-type: basic` with a slow hash: verified before the request
    /// goes on.
    pub slow_auth: Option<Box<SlowCheck>>,
    /// `satisfy: any` and the address list admitted the client: `auth-url`'s
    /// service is not asked.
    pub auth_waived: bool,
}

impl RequestContext {
    pub fn new(
        request: &Request<Incoming>,
        client: ClientAddr,
        request_id: HeaderValue,
        access_log: &AccessLog,
    ) -> RequestContext {
        let entry = access_log
            .enabled()
            .then(|| request_entry(request, &client, &request_id));
        RequestContext {
            request_id,
            method: request.method().clone(),
            uri: request.uri().clone(),
            started: Instant::now(),
            client,
            entry,
            route: None,
            canary: None,
            weighted: None,
            backend: None,
            upstream: None,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            upstream_method: None,
            error_headers: None,
            conn_slot: None,
            blocked: false,
            slow_auth: None,
            auth_waived: false,
        }
    }

    /// The metrics this request counts in: the canary's, else the route's;
    /// `None` while unrouted.
    pub fn metrics(&self) -> Option<&Arc<RequestMetrics>> {
        match (&self.canary, &self.weighted, &self.route) {
            (Some(canary), ..) => Some(&canary.metrics),
            (None, Some((_, metrics)), _) => Some(metrics),
            (None, None, Some(route)) => Some(&route.metrics),
            (None, None, None) => None,
        }
    }

    /// Records the request in its metrics and completes its log line once the
    /// response body has been sent. `unrouted`: the metrics of requests no
    /// route took.
    pub fn finish(
        &mut self,
        response: &mut http::Response<ResponseBody>,
        unrouted: impl FnOnce() -> Arc<RequestMetrics>,
        access_log: &AccessLog,
    ) {
        let status = response.status();
        let metrics = self.metrics().cloned().unwrap_or_else(unrouted);
        metrics.record(&self.method, status, self.started.elapsed());
        let logged = self.route.as_ref().is_none_or(|r| r.policy.access_log);
        let log = self.entry.take().filter(|_| logged).map(|mut entry| {
            self.fill(&mut entry);
            entry.status = status.as_u16();
            PendingLog {
                entry,
                started: self.started,
                log: access_log.clone(),
            }
        });
        response.body_mut().on_done(Completion {
            metrics: Some(metrics),
            log,
            bytes: 0,
            slot: self.conn_slot.take(),
        });
    }

    /// The routing and upstream side of the log line.
    fn fill(&self, entry: &mut Entry) {
        if let Some(route) = &self.route {
            entry.namespace.clone_from(&route.ingress.namespace);
            entry.ingress.clone_from(&route.ingress.name);
            entry.service.clone_from(&route.backend.name.service);
        }
        if let Some(backend) = &self.backend {
            entry.service.clone_from(&backend.name.service);
        }
        if let Some(canary) = &self.canary {
            entry.canary = true;
            entry.ingress.clone_from(&canary.ingress.name);
        }
        if let Some(upstream) = &self.upstream {
            entry.upstream = Some(upstream.endpoint.to_string());
            entry.upstream_status = Some(upstream.status);
            entry.upstream_duration_ms = Some(upstream.took.as_secs_f64() * 1e3);
            entry.retries = upstream.attempts.saturating_sub(1);
        }
    }
}

/// The request's side of its access log line.
fn request_entry(
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
                .get(http::header::HOST)
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
        bytes_in: content_length(request.headers()).unwrap_or(0),
        ..Entry::default()
    })
}
