//! Layer 8, beside `server`. `sluice demo`: a few upstream "pods" on fixed loopback ports that the manifests
//! in `config/demo/` point at, with different latencies and one that fails now and
//! then, so routing and (later) balancing can be watched with nothing installed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy)]
pub struct DemoPod {
    pub name: &'static str,
    pub port: u16,
    pub latency: Duration,
    /// Share of requests answered with a 500.
    pub failure_ratio: f64,
}

/// Must match the EndpointSlices in `config/demo/`.
pub const DEMO_PODS: &[DemoPod] = &[
    DemoPod {
        name: "web-1",
        port: 18081,
        latency: Duration::from_millis(2),
        failure_ratio: 0.0,
    },
    DemoPod {
        name: "web-2",
        port: 18082,
        latency: Duration::from_millis(15),
        failure_ratio: 0.0,
    },
    DemoPod {
        name: "api-1",
        port: 18083,
        latency: Duration::from_millis(30),
        failure_ratio: 0.0,
    },
    DemoPod {
        name: "api-2",
        port: 18084,
        latency: Duration::from_millis(80),
        failure_ratio: 0.2,
    },
];

/// Binds every demo pod; fails if a port is taken.
pub async fn start_pods() -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for pod in DEMO_PODS {
        let addr = SocketAddr::from(([127, 0, 0, 1], pod.port));
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("demo pod {} cannot listen on {addr}: {e}", pod.name),
            )
        })?;
        tokio::spawn(serve_pod(listener, *pod));
        addrs.push(addr);
    }
    Ok(addrs)
}

async fn serve_pod(listener: TcpListener, pod: DemoPod) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, pod));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    pod: DemoPod,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(pod.latency).await;
    let failed = fastrand::f64() < pod.failure_ratio;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let body = format!(
        "{} from pod {} ({} ms)\n{} {} host={} x-forwarded-for={} x-request-id={}\n",
        if failed { "failure" } else { "hello" },
        pod.name,
        pod.latency.as_millis(),
        request.method(),
        request.uri(),
        header("host"),
        header("x-forwarded-for"),
        header("x-request-id"),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if failed {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(response)
}
