//! Layer 7, wiring. The admin listener: `/healthz` for the edge tier, `/readyz` for Kubernetes,
//! `/metrics` for Prometheus (all open), and the JSON API under `/api/` and the
//! dashboard at `/`, which answer only clients on loopback unless an
//! `admin-token` is configured and presented as a bearer token (the port is
//! reachable by Prometheus on the node).

pub mod api;
mod bounded;
pub mod endpoints;
pub mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigState;
use crate::discovery::Publisher;
use crate::lifecycle::Lifecycle;
use crate::routing::RoutingTable;

/// The dashboard: one self-contained page that polls `/api/*` and `/metrics`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    pub lifecycle: Arc<Lifecycle>,
    pub table: Arc<ArcSwap<RoutingTable>>,
    pub publisher: Arc<Publisher>,
    /// The running config and the file's, swapped on reload.
    pub config: Arc<ArcSwap<ConfigState>>,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let builder = Arc::new(bounded::builder());
    let slots = bounded::Slots::new();
    while let Some((stream, peer, slot)) = slots.accept(&listener, &stop, "admin").await {
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(bounded::HEAD_TIMEOUT, stream.peek(&mut [0u8; 1]))
                .await
                .is_err()
            {
                return;
            }
            let service = service_fn(move |request| {
                let response = respond(&request, peer, &state);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    peer: SocketAddr,
    state: &AdminState,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let lifecycle = &state.lifecycle;
    let path = request.uri().path();
    if (path.starts_with("/api/") || path == "/")
        && !allowed(
            request.headers(),
            peer,
            state.config.load().running.admin_token.as_deref(),
        )
    {
        return text(
            StatusCode::FORBIDDEN,
            "the admin API answers loopback clients or a valid bearer token\n",
        );
    }
    match path {
        "/healthz" => {
            if lifecycle.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !lifecycle.is_configured() {
                text(StatusCode::SERVICE_UNAVAILABLE, "not configured yet\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }
        "/readyz" => {
            if lifecycle.is_synced() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "initial sync not finished\n",
                )
            }
        }
        "/metrics" => {
            let mut body = crate::telemetry::prometheus().render();
            endpoints::render(&state.table.load(), &mut body);
            with_type(
                Response::new(Full::new(Bytes::from(body))),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        "/" => with_type(
            Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes()))),
            "text/html; charset=utf-8",
        ),
        "/api/routes" => json(&api::routes(&state.table.load())),
        "/api/warnings" => json(&api::warnings(Some(&state.publisher))),
        "/api/config" => json(&api::config(&state.config.load())),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Loopback clients, or anyone presenting the configured token.
fn allowed(headers: &http::HeaderMap, peer: SocketAddr, token: Option<&str>) -> bool {
    if let Some(token) = token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented
            .is_some_and(|p| crate::compat::nginx::constant_time_eq(p.as_bytes(), token.as_bytes()))
        {
            return true;
        }
    }
    peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback()
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    with_type(
        Response::new(Full::new(Bytes::from(body))),
        "application/json",
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    with_type(response, "text/plain; charset=utf-8")
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_answers_loopback_or_the_token() {
        let remote: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let none = http::HeaderMap::new();
        let mut good = http::HeaderMap::new();
        good.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let mut bad = http::HeaderMap::new();
        bad.insert(header::AUTHORIZATION, "Bearer guess".parse().unwrap());
        assert!(allowed(&none, local, None));
        assert!(allowed(&none, mapped, None));
        assert!(!allowed(&none, remote, None));
        assert!(
            !allowed(&good, remote, None),
            "no token configured: loopback only"
        );
        assert!(allowed(&good, remote, Some("s3cret")));
        assert!(!allowed(&bad, remote, Some("s3cret")));
    }
}
