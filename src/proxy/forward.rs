//! The upstream phase of the pipeline: pick an endpoint, send, and retry on
//! another one when the route's rule and the backend's budget allow. Every
//! attempt's outcome feeds the balancer (latency estimates, breakers).

use std::future::Future;
use std::net::SocketAddr;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use tokio::time::Instant;

use crate::balance::window::Outcome;
use crate::balance::ThreadRandom;
use crate::policy::retry::Failure;
use crate::routing::{Backend, Endpoint, Pick, Protocol, Route};
use crate::telemetry;
use crate::telemetry::connections;
use crate::telemetry::requests::RequestMetrics;
use crate::upstream::body::{FromUpstream, RequestBody};
use crate::upstream::error::ProxyError;
use crate::upstream::pool::Conn;

/// Picks endpoints and sends until an answer comes back or the route's retry
/// rule (and the backend's budget) says to stop. Every attempt's outcome feeds
/// the balancer: latency estimates and circuit breakers.
#[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
pub(super) fn send_with_retries<'a>(
    request: Request<RequestBody>,
    route: &'a Route,
    backend: &'a Backend,
    hash: Option<u64>,
    metrics: &'a RequestMetrics,
) -> impl Future<Output = Result<(Response<FromUpstream>, Pick, u32), ProxyError>> + 'a {
    async move {
        let policy = &route.policy;
        let method = request.method().clone();
        // Without a body, or with one read whole (`proxy-request-buffering`),
        // a request can be sent again even after it went out once. An HTTP/1
        // attempt hands a bodiless request back whatever happens (`Leftover`),
        // for free; a copy is kept only where that cannot be: a buffered body,
        // an HTTP/2 backend, or a rule that retries on a status (the answer
        // came, the request is gone).
        let next_upstream = &policy.retry.next_upstream;
        let replay = (next_upstream.resends_sent()
            && (backend.protocol != Protocol::Http1
                || next_upstream.on_any_status()
                || request.body().is_buffered()))
        .then(|| Replay::of(&request))
        .flatten();
        let mut request = Some(request);
        // Endpoints already tried: only filled once a retry happens.
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempts: u32 = 0;
        let started = Instant::now();
        backend.state.retry_budget.deposit(backend.second());
        loop {
            let pick = backend
                .pick(
                    &policy.balance,
                    hash,
                    &tried,
                    Instant::now(),
                    &mut ThreadRandom,
                )
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
            let finished = Instant::now();
            let latency = finished.saturating_duration_since(attempt_started);
            metrics.record_upstream_response(latency);
            record_attempt(backend, route, &pick, &result, latency, finished);
            // What failed, why (for the retry rule), and the request if it came back.
            let (failure, reason, leftover) = match result {
                Ok(answer) => {
                    let status = answer.status();
                    if !policy.retry.next_upstream.on_status(status) {
                        return Ok((answer, pick, attempts));
                    }
                    (Ok(answer), Failure::Status(status), None)
                }
                Err((error, leftover)) => {
                    let Some(reason) = error.failure(leftover.unsent()) else {
                        return Err(error);
                    };
                    (Err(error), reason, leftover.request())
                }
            };
            let replayable = leftover.is_some() || replay.is_some();
            let endpoints = backend.endpoint_set().endpoints.len();
            let allowed = policy.retry.allows(
                reason,
                &method,
                replayable,
                attempts,
                endpoints,
                started.elapsed(),
            );
            if allowed && backend.state.retry_budget.withdraw(backend.second()) {
                metrics::counter!(telemetry::RETRIES).increment(1);
                tracing::debug!(?reason, endpoint = %pick.endpoint.addr(), "retrying on another endpoint");
                tried.push(pick.endpoint.addr());
                request = leftover;
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

/// One attempt on one endpoint of `backend`, never retried, its outcome
/// fed to the balancer (a mirror's copy).
pub(super) async fn send_once(
    request: Request<RequestBody>,
    route: &Route,
    backend: &Backend,
    metrics: &RequestMetrics,
) -> Result<(Response<FromUpstream>, Pick), ProxyError> {
    let policy = &route.policy;
    let pick = backend
        .pick(
            &policy.balance,
            None,
            &[],
            Instant::now(),
            &mut ThreadRandom,
        )
        .ok_or(ProxyError::NoEndpoint)?;
    let started = Instant::now();
    let result = send(request, route, &pick.endpoint, metrics).await;
    let finished = Instant::now();
    let latency = finished.saturating_duration_since(started);
    record_attempt(backend, route, &pick, &result, latency, finished);
    result
        .map(|answer| (answer, pick))
        .map_err(|(error, _)| error)
}

/// What an attempt tells the balancer about its endpoint, if anything.
fn record_attempt(
    backend: &Backend,
    route: &Route,
    pick: &Pick,
    result: &Attempt,
    latency: std::time::Duration,
    finished: Instant,
) {
    let outcome = match result {
        Ok(answer) => Some(Outcome::Response(answer.status().as_u16())),
        Err((error, leftover)) => error.outcome(leftover.unsent()),
    };
    if let Some(outcome) = outcome {
        let balance = &route.policy.balance;
        backend.record(balance, pick, outcome, latency, finished, &mut ThreadRandom);
    }
}

/// Enough of a request whose body is all here (none, or buffered) to send
/// it again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: RequestBody,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Option<Replay> {
        Some(Replay {
            body: request.body().replay()?,
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn build(&self) -> Request<RequestBody> {
        let mut request = Request::new(self.body.replay().unwrap_or_else(RequestBody::empty));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// HTTP/1.1 over TLS (hyper's client): the sender goes back to the pool as
/// soon as the answer's head is in, to be reused once the answer is read
/// (unless the connection is an upgrade's own).
async fn send_tls1(
    mut sender: hyper::client::conn::http1::SendRequest<RequestBody>,
    request: Request<RequestBody>,
    read_timeout: std::time::Duration,
    endpoint: &Endpoint,
    keep: bool,
) -> Attempt {
    if let Err(error) = sender.ready().await {
        return Err((ProxyError::Upstream(error), Leftover::Unsent(request)));
    }
    let answer = tokio::time::timeout(read_timeout, sender.send_request(request)).await;
    if keep {
        endpoint.state.pool().checkin_sender(sender);
    }
    match answer {
        Ok(Ok(response)) => Ok(response.map(FromUpstream::Hyper)),
        Ok(Err(error)) => Err((ProxyError::from_upstream(error), Leftover::Lost)),
        Err(_) => Err((ProxyError::ReadTimeout, Leftover::Lost)),
    }
}

/// What is left of the request after a failed attempt.
enum Leftover {
    /// Nothing: its body went out, or went with the exchange.
    Lost,
    /// The upstream cannot have seen it: it may go anywhere, whatever its method.
    Unsent(Request<RequestBody>),
    /// It went out, but has no body: it can go again if the retry rule allows.
    Sent(Request<RequestBody>),
}

impl Leftover {
    fn unsent(&self) -> bool {
        matches!(self, Leftover::Unsent(_))
    }

    fn request(self) -> Option<Request<RequestBody>> {
        match self {
            Leftover::Lost => None,
            Leftover::Unsent(request) | Leftover::Sent(request) => Some(request),
        }
    }
}

/// One attempt: the response, or the error and what is left of the request.
type Attempt = Result<Response<FromUpstream>, (ProxyError, Leftover)>;

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
        let pool = state.pool();
        // Only TLS pods treat an upgrade apart (checked first: it is cheaper).
        let upgrade = pool.is_tls() && request.headers().contains_key(http::header::UPGRADE);
        let checkout = if upgrade {
            // Boxed: the cold path.
            Box::pin(pool.checkout_upgrade(policy.connect_timeout, policy.send_timeout)).await
        } else {
            pool.checkout(policy.connect_timeout, policy.send_timeout)
                .await
        };
        let (conn, connected) = match checkout {
            Ok(checkout) => checkout,
            Err(error) => return Err((error, Leftover::Unsent(request))),
        };
        if let Some(took) = connected {
            metrics.record_upstream_connect(took);
        }
        match conn {
            Conn::H1 { conn, reused } => {
                connections::upstream_connection_used(reused);
                // The head stays here, lent to the connection: after a failure
                // the request is whole again, uncopied (its body if it came
                // back, or an empty one if it never had one).
                let (head, body) = request.into_parts();
                let bodiless = body.is_end_stream();
                let leftover = |head, body: Option<RequestBody>| match body {
                    Some(body) => Leftover::Unsent(Request::from_parts(head, body)),
                    None if bodiless => {
                        Leftover::Sent(Request::from_parts(head, RequestBody::empty()))
                    }
                    None => Leftover::Lost,
                };
                let first = tokio::time::timeout(
                    read_timeout,
                    conn.send(&head, body, state.pool().clone()),
                )
                .await
                .unwrap_or(Err((ProxyError::ReadTimeout, None)));
                match first {
                    Ok(response) => Ok(response.map(FromUpstream::H1)),
                    Err((error, Some(unsent))) if reused => {
                        tracing::debug!(%error, endpoint = %state.addr, "pooled connection closed; retrying on a new one");
                        // Boxed: a cold path that would otherwise enlarge every request's future.
                        let fresh = match Box::pin(
                            state
                                .pool()
                                .connect_fresh(policy.connect_timeout, policy.send_timeout),
                        )
                        .await
                        {
                            Ok((fresh, took)) => {
                                metrics.record_upstream_connect(took);
                                connections::upstream_connection_used(false);
                                fresh
                            }
                            Err(error) => return Err((error, leftover(head, Some(unsent)))),
                        };
                        let second = tokio::time::timeout(
                            read_timeout,
                            fresh.send(&head, unsent, state.pool().clone()),
                        )
                        .await
                        .unwrap_or(Err((ProxyError::ReadTimeout, None)));
                        match second {
                            Ok(response) => Ok(response.map(FromUpstream::H1)),
                            Err((error, body)) => Err((error, leftover(head, body))),
                        }
                    }
                    Err((error, body)) => Err((error, leftover(head, body))),
                }
            }
            // Boxed: its futures would otherwise enlarge every request's state.
            Conn::Tls1(sender) => {
                Box::pin(send_tls1(sender, request, read_timeout, endpoint, !upgrade)).await
            }
            Conn::H2(mut sender) => {
                // An `HTTPS` backend whose pod chose HTTP/2: the request was
                // made for HTTP/1.1.
                let mut request = request;
                if request.version() != http::Version::HTTP_2 {
                    if let Err(error) = into_h2(&mut request) {
                        return Err((error, Leftover::Unsent(request)));
                    }
                }
                if let Err(error) = sender.ready().await {
                    return Err((ProxyError::Upstream(error), Leftover::Unsent(request)));
                }
                match tokio::time::timeout(read_timeout, sender.send_request(request)).await {
                    Ok(Ok(response)) => Ok(response.map(FromUpstream::Hyper)),
                    Ok(Err(error)) => Err((ProxyError::from_upstream(error), Leftover::Lost)),
                    Err(_) => Err((ProxyError::ReadTimeout, Leftover::Lost)),
                }
            }
        }
    }
}

/// An HTTP/1.1-form request into HTTP/2 form, in place: `https`, and the
/// `Host` as `:authority`.
fn into_h2(request: &mut Request<RequestBody>) -> Result<(), ProxyError> {
    let authority = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .ok_or(ProxyError::BadRequest("invalid host"))?;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTPS);
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    *request.uri_mut() =
        Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    *request.version_mut() = http::Version::HTTP_2;
    request.headers_mut().remove(http::header::HOST);
    Ok(())
}
