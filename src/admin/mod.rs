//! The admin listener: `/healthz` for the edge tier, `/readyz` for Kubernetes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;

pub async fn serve(listener: TcpListener, lifecycle: Arc<Lifecycle>, stop: CancellationToken) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let lifecycle = lifecycle.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &lifecycle);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, lifecycle: &Lifecycle) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => {
            if lifecycle.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !lifecycle.is_configured() {
                text(StatusCode::SERVICE_UNAVAILABLE, "not configured yet\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(
                crate::telemetry::prometheus().render(),
            )));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
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
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
