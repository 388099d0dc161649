//! `auth-url`, as ingress-nginx's `auth_request`: before a request goes on,
//! the authentication service is asked, with the client's headers (never
//! its body) and `X-Original-URL`, `X-Original-Method`,
//! `X-Auth-Request-Redirect`, `X-Real-IP`, `X-Forwarded-For`. A 2xx lets it
//! through, with `auth-response-headers` copied from that answer to the
//! request the pod gets (a header the service did not send is removed, so a
//! client cannot send it in its place). A 401 is the client's, or a 302 to
//! `auth-signin`; a 403 is the client's; any other answer, a failure or a
//! timeout is a 500, never a 200.

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::ResponseBody;
use super::conn::ConnInfo;
use super::context::RequestContext;
use super::edits::Applied;
use super::headers::strip_hop_by_hop;
use crate::policy::auth_cache::Answer;
use crate::routing::{ExternalAuth, Route, RoutingTable};
use crate::telemetry::{AUTH_DURATION, AUTH_REQUESTS};
use crate::upstream::body::RequestBody;
use std::sync::Arc;

/// Most bytes of the service's answer read (and dropped).
const MAX_ANSWER: usize = 64 << 10;

/// `None`: the request goes on. Else the answer the client gets.
pub(super) async fn check(
    auth: &ExternalAuth,
    route: &Route,
    table: &RoutingTable,
    request: &Request<Incoming>,
    host: &str,
    conn: &ConnInfo,
    ctx: &mut RequestContext,
) -> Option<Response<ResponseBody>> {
    let spec = &auth.spec;
    let scheme = if conn.tls { "https" } else { "http" };
    let request_uri = ctx
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let http_host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(host)
        .to_owned();
    let Some(ask) = ask(
        auth,
        request,
        host,
        conn,
        ctx,
        scheme,
        &http_host,
        &request_uri,
    ) else {
        return Some(failed());
    };
    // `auth-cache-key`: an answer kept for this key spares the service.
    let cached = spec.cache.as_ref().map(|(key, cache)| {
        let key = super::edits::render(key, request, host, conn, ctx);
        (format!("{host}{}{key}", ask.uri()), cache)
    });
    let kept = (cached.as_ref()).and_then(|(key, cache)| cache.get(key, Instant::now()));
    let answer = match kept {
        Some(answer) => answer,
        None => {
            let asked = ask_service(auth, route, table, request, host, conn, ctx, ask).await;
            let answer = match asked {
                Ok(answer) => answer,
                Err(refused) => return Some(refused),
            };
            if let Some((key, cache)) = cached {
                cache.put(&key, &answer, &spec.response_headers, Instant::now());
            }
            Arc::new(answer)
        }
    };
    let cookies: Vec<HeaderValue> = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    match answer.status.as_u16() {
        200..=299 => {
            metrics::counter!(AUTH_REQUESTS, "result" => "allowed").increment(1);
            for name in &spec.response_headers {
                ctx.request_edits.push(match answer.headers.get(name) {
                    Some(value) => Applied::Set(name.clone(), value.clone()),
                    None => Applied::Remove(name.clone()),
                });
            }
            let always = spec.always_set_cookie;
            ctx.response_edits.extend(
                cookies
                    .into_iter()
                    .map(|c| (Applied::Add(header::SET_COOKIE, c), always)),
            );
            None
        }
        401 => {
            metrics::counter!(AUTH_REQUESTS, "result" => "denied").increment(1);
            let mut response = match &spec.signin {
                Some(signin) => {
                    let target = super::edits::render(signin, request, host, conn, ctx);
                    signin_redirect(
                        &target,
                        &spec.redirect_param,
                        scheme,
                        &http_host,
                        &request_uri,
                    )
                }
                None => {
                    let mut response = super::filters::plain(StatusCode::UNAUTHORIZED);
                    if let Some(challenge) = answer.headers.get(header::WWW_AUTHENTICATE) {
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, challenge.clone());
                    }
                    response
                }
            };
            for cookie in cookies {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            Some(response)
        }
        403 => {
            metrics::counter!(AUTH_REQUESTS, "result" => "denied").increment(1);
            Some(super::filters::plain(StatusCode::FORBIDDEN))
        }
        other => {
            tracing::warn!(status = other, service = %auth.backend.name, "auth-url answered neither 2xx, 401 nor 403");
            Some(failed())
        }
    }
}

/// Sends the question; `Err`: the answer the client gets (a 500).
#[allow(clippy::too_many_arguments)]
async fn ask_service(
    auth: &ExternalAuth,
    route: &Route,
    table: &RoutingTable,
    request: &Request<Incoming>,
    host: &str,
    conn: &ConnInfo,
    ctx: &RequestContext,
    mut ask: Request<RequestBody>,
) -> Result<Answer, Response<ResponseBody>> {
    // The service: its own backend, or the route sluice serves for its URL.
    let (service_route, backend, metrics) = match &auth.spec.internal {
        None => (route, &auth.backend, &auth.metrics),
        Some(url) => {
            let url = super::edits::render(url, request, host, conn, ctx);
            let Some(found) = internal_route(table, &url, &mut ask) else {
                tracing::warn!(url, "auth-url: no route serves it");
                return Err(failed());
            };
            (&**found, found.active_backend(), &found.metrics)
        }
    };
    let policy = &service_route.policy;
    let started = Instant::now();
    let deadline = policy.connect_timeout + policy.read_timeout;
    let exchange = async {
        let (response, _pick) =
            super::forward::send_once(ask, service_route, backend, metrics).await?;
        let (parts, mut body) = response.into_parts();
        // Read (up to a bound) so the connection goes back to its pool.
        let mut read = 0;
        while read < MAX_ANSWER {
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        Ok::<_, crate::upstream::ProxyError>(parts)
    };
    let answer = tokio::time::timeout(deadline, exchange).await;
    metrics::histogram!(AUTH_DURATION).record(started.elapsed().as_secs_f64());
    match answer {
        Ok(Ok(parts)) => Ok(Answer {
            status: parts.status,
            headers: parts.headers,
        }),
        Ok(Err(error)) => {
            tracing::warn!(%error, service = %auth.backend.name, "auth-url request failed");
            Err(failed())
        }
        Err(_) => {
            tracing::warn!(service = %auth.backend.name, "auth-url request timed out");
            Err(failed())
        }
    }
}

/// `auth-url` with `$variables` in its host, rendered: the route of this
/// table that serves it, with `ask` pointed at it (path and `Host`).
fn internal_route<'t>(
    table: &'t RoutingTable,
    url: &str,
    ask: &mut Request<RequestBody>,
) -> Option<&'t std::sync::Arc<Route>> {
    let rest = url.split_once("://")?.1;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let uri = Uri::try_from(path).ok()?;
    let routing_path = crate::routing::normalize::routing_path(uri.path())?;
    let route = table.route(authority, &routing_path)?;
    *ask.uri_mut() = uri;
    ask.headers_mut()
        .insert(header::HOST, HeaderValue::try_from(authority).ok()?);
    Some(route)
}

/// The request the service gets.
#[allow(clippy::too_many_arguments)]
fn ask(
    auth: &ExternalAuth,
    request: &Request<Incoming>,
    host: &str,
    conn: &ConnInfo,
    ctx: &RequestContext,
    scheme: &str,
    http_host: &str,
    request_uri: &str,
) -> Option<Request<RequestBody>> {
    let spec = &auth.spec;
    let path = super::edits::render(&spec.path, request, host, conn, ctx);
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let mut ask = Request::new(RequestBody::empty());
    *ask.method_mut() = spec
        .method
        .clone()
        .unwrap_or_else(|| request.method().clone());
    *ask.uri_mut() = Uri::try_from(path).ok()?;
    *ask.version_mut() = Version::HTTP_11;
    let headers = ask.headers_mut();
    *headers = request.headers().clone();
    strip_hop_by_hop(headers, false);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(HeaderName::from_static("x-forwarded-proto"));
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set(
        "x-original-url",
        format!("{scheme}://{http_host}{request_uri}"),
    );
    set("x-original-method", request.method().to_string());
    set("x-sent-from", "nginx-ingress-controller".into());
    set("x-real-ip", ctx.client.ip.to_string());
    set("x-forwarded-for", ctx.client.ip.to_string());
    let redirect = match &spec.request_redirect {
        Some(template) => super::edits::render(template, request, host, conn, ctx),
        None => request_uri.to_owned(),
    };
    set("x-auth-request-redirect", redirect);
    if spec.method.is_some() {
        set("x-original-uri", request_uri.to_owned());
        set("x-scheme", scheme.to_owned());
    }
    headers.insert(
        HeaderName::from_static("x-request-id"),
        ctx.request_id.clone(),
    );
    headers.insert(header::HOST, spec.host.clone());
    // `auth-proxy-set-headers`, after ingress-nginx's own.
    for (name, value) in &spec.set_headers {
        let value = super::edits::render(value, request, host, conn, ctx);
        if let Ok(value) = HeaderValue::try_from(value) {
            ask.headers_mut().insert(name.clone(), value);
        }
    }
    Some(ask)
}

/// ingress-nginx's `buildAuthSignURL`: the sign-in URL with the request's
/// own URL under `redirect_param`, unless it has that parameter already.
fn signin_redirect(
    target: &str,
    redirect_param: &str,
    scheme: &str,
    http_host: &str,
    request_uri: &str,
) -> Response<ResponseBody> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let has_param = query
        .split('&')
        .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == redirect_param);
    let location = if has_param {
        target.to_owned()
    } else {
        let back = format!(
            "{scheme}://{http_host}{}",
            crate::routing::edits::escape_uri_component(request_uri)
        );
        let joiner = if query.is_empty() && !target.ends_with('?') {
            '?'
        } else {
            '&'
        };
        format!("{target}{joiner}{redirect_param}={back}")
    };
    let mut response = super::filters::plain(StatusCode::FOUND);
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn failed() -> Response<ResponseBody> {
    metrics::counter!(AUTH_REQUESTS, "result" => "error").increment(1);
    super::filters::plain(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signin_url_carries_where_to_come_back() {
        let location = |target: &str| {
            let response = signin_redirect(target, "rd", "https", "app.example", "/a b?x=1");
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            location("https://auth.example/oauth2/start"),
            "https://auth.example/oauth2/start?rd=https://app.example%2Fa%20b%3Fx%3D1"
        );
        assert_eq!(
            location("https://auth.example/start?x=1"),
            "https://auth.example/start?x=1&rd=https://app.example%2Fa%20b%3Fx%3D1"
        );
        assert_eq!(
            location("https://auth.example/start?rd=/home"),
            "https://auth.example/start?rd=/home"
        );
    }
}
