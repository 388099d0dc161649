//! `custom-http-errors`: an answer with one of the route's listed statuses,
//! from the pod or from sluice itself, is replaced by what the default
//! backend answers, as ingress-nginx's `error_page` to its
//! `@custom_*_CODE` locations: the client's method and headers, the path
//! `/`, and the headers that describe the error (`X-Code`, `X-Format`,
//! `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
//! `X-Service-Port`, `X-Request-ID`). The default backend's status is the
//! answer's.

use http::header::{HeaderName, HeaderValue, ACCEPT, HOST};
use http::{HeaderMap, Request, Response, Uri};

use super::body::{ResponseBody, UpstreamBody};
use super::context::RequestContext;
use super::forward::send_with_retries;
use super::headers::strip_hop_by_hop;
use crate::routing::ErrorPages;
use crate::upstream::body::RequestBody;

/// The default backend's answer for `status`, or its failure's.
pub async fn answer(
    pages: &ErrorPages,
    status: u16,
    headers: HeaderMap,
    ctx: &RequestContext,
) -> Response<ResponseBody> {
    let route = &pages.route;
    let request = match error_request(status, headers, ctx) {
        Some(request) => request,
        None => {
            return crate::upstream::error::ProxyError::BadRequest("invalid request").to_response()
        }
    };
    match send_with_retries(request, route, &route.backend, None, &route.metrics).await {
        Ok((response, pick, _)) => {
            let (parts, body) = response.into_parts();
            let body = UpstreamBody::new(body, route.policy.read_timeout, pick.in_flight);
            Response::from_parts(parts, ResponseBody::upstream(body))
        }
        Err(error) => error.to_response(),
    }
}

fn error_request(
    status: u16,
    mut headers: HeaderMap,
    ctx: &RequestContext,
) -> Option<Request<RequestBody>> {
    strip_hop_by_hop(&mut headers, false);
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    let format = headers.get(ACCEPT).cloned();
    let host = match (headers.contains_key(HOST), ctx.uri.authority()) {
        (false, Some(authority)) => Some(HeaderValue::try_from(authority.as_str()).ok()?),
        _ => None,
    };
    let mut set = |name: &'static str, value: HeaderValue| {
        headers.insert(HeaderName::from_static(name), value);
    };
    let text = |s: &str| HeaderValue::try_from(s).ok();
    set("x-code", HeaderValue::from(status));
    set("x-format", format.unwrap_or(HeaderValue::from_static("")));
    let uri = ctx.uri.path_and_query().map_or("/", |p| p.as_str());
    set("x-original-uri", text(uri)?);
    if let Some(backend) = &ctx.backend {
        set("x-namespace", text(&backend.name.namespace)?);
        set("x-service-name", text(&backend.name.service)?);
        set("x-service-port", text(&backend.name.port)?);
    }
    if let Some(route) = &ctx.route {
        set("x-ingress-name", text(&route.ingress.name)?);
    }
    set("x-request-id", ctx.request_id.clone());
    set("x-forwarded-for", ctx.client.header.clone());
    if let Some(host) = host {
        set("host", host);
    }
    let mut request = Request::new(RequestBody::empty());
    *request.method_mut() = ctx.method.clone();
    // As ingress-nginx's `rewrite (.*) / break`.
    *request.uri_mut() = Uri::from_static("/");
    *request.headers_mut() = headers;
    Some(request)
}
