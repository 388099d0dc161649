//! Runs a route's request filters (`routing::filters`) in order. A filter
//! either lets the request go on, answers it here (a redirect, a 413, a
//! rate-limit refusal, a 403, a snippet's `return`), or, for a canary, chooses
//! where it goes. Each filter's work is a few lines here; a filter that grows
//! gets a module of its own beside this one (`edits`).

use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::conn::ConnInfo;
use super::context::RequestContext;
use super::headers::content_length;
use super::pipeline::ProxySettings;
use crate::policy::affinity::backend_tag;
use crate::policy::basic_auth::Verdict;
use crate::policy::cors::Cors;
use crate::policy::digest_auth::DigestVerdict;
use crate::routing::{Canary, Passwords, RequestFilter, Route};

use super::edits::Applied;
use crate::upstream::error::ProxyError;

/// The answer when a filter gives one here; `None` sends the request on (to
/// the canary if one took it: `ctx.canary`).
pub(super) fn run(
    route: &Route,
    request: &mut Request<Incoming>,
    host: &str,
    conn: &ConnInfo,
    ctx: &mut RequestContext,
    settings: &ArcSwap<ProxySettings>,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    for filter in route.filters.iter() {
        match filter {
            RequestFilter::Deny(body) => return Ok(Some(denied(body))),
            RequestFilter::OnlyOver { tls } => {
                if conn.tls != *tls {
                    return Err(ProxyError::NoRoute);
                }
            }
            RequestFilter::ClientCert(Err(())) => return Ok(Some(forbidden())),
            RequestFilter::ClientCert(Ok(ca)) => {
                if let Some(refused) = super::client_cert::check(ca, route, request, conn) {
                    return Ok(Some(refused));
                }
            }
            RequestFilter::Edits(edits) => {
                if let Some(answer) = super::edits::run(edits, request, host, conn, ctx) {
                    return Ok(Some(answer));
                }
            }
            RequestFilter::Cors(cors) => {
                if let Some(origin) = cors.allow_origin(request.headers()) {
                    if request.method() == http::Method::OPTIONS {
                        return Ok(Some(preflight(cors, origin)));
                    }
                    let set = cors
                        .headers(origin)
                        .map(|(n, v)| (Applied::Set(n, v), true));
                    ctx.response_edits.extend(set);
                }
            }
            RequestFilter::HttpsRedirect {
                preserve_trailing_slash,
            } => {
                if !conn.tls {
                    let uri = request.uri();
                    return Ok(Some(https_redirect(host, uri, *preserve_trailing_slash)));
                }
            }
            RequestFilter::Access(list) => {
                if !list.admits(ctx.client.ip) {
                    return Ok(Some(forbidden()));
                }
            }
            RequestFilter::Passwords(Err(())) => return Ok(Some(unavailable())),
            RequestFilter::Passwords(Ok(auth)) => {
                if let Some(refused) = passwords(auth, request, ctx) {
                    return Ok(Some(refused));
                }
            }
            RequestFilter::AccessOrAuth(list, auth) => {
                if list.admits(ctx.client.ip) {
                    if auth.is_some() {
                        request.headers_mut().remove(header::AUTHORIZATION);
                    }
                    ctx.auth_waived = true;
                } else if let Some(refused) = auth.as_ref().and_then(|a| passwords(a, request, ctx))
                {
                    return Ok(Some(refused));
                }
            }
            RequestFilter::BodyLimit(limit) => {
                if content_length(request.headers()).is_some_and(|length| length > *limit) {
                    return Err(ProxyError::BodyTooLarge);
                }
            }
            RequestFilter::ConnLimit(limiter) => match limiter.acquire(ctx.client.ip) {
                Ok(slot) => ctx.conn_slot = slot.map(Box::new),
                Err(_) => {
                    let status = settings.load().limit_conn_status;
                    return Ok(Some(connections_limited(status)));
                }
            },
            RequestFilter::RateLimit(limiter) => {
                if let Err(retry_after) = limiter.check(request.headers(), ctx.client.ip) {
                    let status = settings.load().limit_status;
                    return Ok(Some(rate_limited(status, retry_after)));
                }
            }
            RequestFilter::Weighted(weighted) => {
                let choice = weighted.pick(fastrand::u64(..weighted.total().max(1)));
                ctx.weighted = Some((choice.backend.clone(), choice.metrics.clone()));
            }
            RequestFilter::Canary(canary) => {
                let pinned = sticky_side(route, canary, request.headers());
                let takes = !canary.backend.endpoint_set().endpoints.is_empty()
                    && pinned
                        .unwrap_or_else(|| canary.rule.decide(request.headers(), ctx.client.ip));
                if takes {
                    canary.requests.increment(1);
                    ctx.canary = Some(canary.clone());
                }
            }
        }
    }
    Ok(None)
}

/// `affinity-canary-behavior: sticky`: whether the affinity cookie pins the
/// user to the canary (`Some(true)`) or to the main backend (`Some(false)`).
fn sticky_side(route: &Route, canary: &Canary, headers: &http::HeaderMap) -> Option<bool> {
    let affinity = route.policy.affinity.as_ref().filter(|a| a.canary_sticky)?;
    let tag = affinity.cookie_backend(headers)?;
    if tag == backend_tag(&canary.backend.name) {
        Some(true)
    } else if tag == backend_tag(&route.backend.name) {
        Some(false)
    } else {
        None
    }
}

/// `auth-type`: the 401 when the credentials are refused.
fn passwords(
    auth: &Passwords,
    request: &mut Request<Incoming>,
    ctx: &mut RequestContext,
) -> Option<Response<ResponseBody>> {
    match auth {
        Passwords::Basic(auth) => match auth.check(request.headers()) {
            Verdict::Admit => {}
            Verdict::Refuse => return Some(unauthorized(&auth.challenge)),
            // Verified by the pipeline, off the event loop.
            Verdict::Slow(check) => ctx.slow_auth = Some(Box::new(check)),
        },
        Passwords::Digest(auth) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // The request target as the client sent it (nginx's
            // `$request_uri`), which its `uri=` must name.
            let uri = ctx.uri.path_and_query().map_or("/", |p| p.as_str());
            let method = request.method().as_str();
            if let DigestVerdict::Refuse { stale } = auth.check(method, uri, request.headers(), now)
            {
                return Some(unauthorized(&auth.challenge(now, stale)));
            }
        }
    }
    // As ingress-nginx: the pods never see the credentials.
    request.headers_mut().remove(header::AUTHORIZATION);
    None
}

/// A CORS preflight, answered here: 204 with the CORS headers, as
/// ingress-nginx's template.
fn preflight(cors: &Cors, origin: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.extend(cors.headers(origin));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain charset=UTF-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// No valid credentials: 401 with the realm's challenge.
pub(super) fn unauthorized(challenge: &HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(bytes::Bytes::from_static(
        b"401 Authorization Required\n",
    )));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A broken access configuration (ingress-nginx's denied location).
fn unavailable() -> Response<ResponseBody> {
    plain(StatusCode::SERVICE_UNAVAILABLE)
}

/// An access rule refused the client (nginx's plain 403).
pub(super) fn forbidden() -> Response<ResponseBody> {
    plain(StatusCode::FORBIDDEN)
}

/// A short answer of sluice's own: the status line's words as text.
pub(super) fn plain(status: StatusCode) -> Response<ResponseBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(ResponseBody::from(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Fail closed: a 403 whose body names what sluice cannot honour.
fn denied(body: &std::sync::Arc<str>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(bytes::Bytes::copy_from_slice(
        body.as_bytes(),
    )));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A 308 to the same host and path over HTTPS (the method and body are kept).
fn https_redirect(host: &str, uri: &Uri, preserve_trailing_slash: bool) -> Response<ResponseBody> {
    // To the standard port: the plain port number means nothing on HTTPS.
    let host = crate::routing::strip_port(host);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    // As ingress-nginx: the request URI's last `/` goes (`/` itself too),
    // unless `preserve-trailing-slash`.
    let target = match preserve_trailing_slash {
        true => target,
        false => target.strip_suffix('/').unwrap_or(target),
    };
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

/// Over `limit-connections`: no upstream call, a short answer.
fn connections_limited(status: StatusCode) -> Response<ResponseBody> {
    let body = format!(
        "{} {}: too many requests in progress from this address\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(ResponseBody::from(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Over the Ingress's rate limit: no upstream call, a short answer, and when
/// to come back.
fn rate_limited(status: StatusCode, retry_after: Duration) -> Response<ResponseBody> {
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
