//! `mirror-target`: a copy of a request goes to another server, fire and
//! forget. Its answer is read and dropped, its failure only counted: neither
//! ever touches the client's request, which does not wait for it (nginx's
//! does). Copies in flight are bounded for the whole process; beyond, a copy
//! is dropped and counted, so a slow mirror cannot hold resources without
//! bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::header;
use http::{HeaderValue, Request, Uri, Version};
use http_body::Body as _;

use super::headers::strip_hop_by_hop;
use crate::routing::{Mirror, Route};
use crate::telemetry::MIRROR_REQUESTS;
use crate::upstream::body::RequestBody;

/// Copies in flight at once, for all routes.
const MAX_IN_FLIGHT: usize = 1024;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Sends a copy of `request` (its body only if it is all here: buffered or
/// none) to the route's mirror, asking for `path`.
pub(super) fn send_copy(
    mirror: &Arc<Mirror>,
    route: &Arc<Route>,
    request: &Request<RequestBody>,
    path: String,
) {
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        count("dropped");
        return;
    }
    let slot = Slot;
    let Some(copy) = copy_of(mirror, request, &path) else {
        count("failed");
        return;
    };
    let (mirror, route) = (mirror.clone(), route.clone());
    let policy = &route.policy;
    let deadline = policy.connect_timeout + policy.read_timeout;
    tokio::spawn(async move {
        let _slot = slot;
        let exchange = async {
            let (response, _pick) =
                super::forward::send_once(copy, &route, &mirror.backend, &mirror.metrics).await?;
            // Read to the end, so the connection goes back to its pool.
            let mut body = response.into_body();
            while let Some(frame) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                frame?;
            }
            Ok::<(), crate::upstream::ProxyError>(())
        };
        let result = match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(())) => "answered",
            Ok(Err(error)) => {
                tracing::debug!(%error, mirror = %mirror.backend.name, "mirrored request failed");
                "failed"
            }
            Err(_) => "failed",
        };
        count(result);
    });
}

/// The copy: the client's method and headers (as nginx's mirror
/// subrequest: no forwarded headers of sluice's), the mirror's `Host`.
fn copy_of(
    mirror: &Mirror,
    request: &Request<RequestBody>,
    path: &str,
) -> Option<Request<RequestBody>> {
    let body = mirror
        .body
        .and_then(|_| request.body().replay())
        .unwrap_or_else(RequestBody::empty);
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = Uri::try_from(path).ok()?;
    *copy.version_mut() = Version::HTTP_11;
    let headers = copy.headers_mut();
    *headers = request.headers().clone();
    strip_hop_by_hop(headers, false);
    // Without a `Host` of its own, the copy keeps the request's (from its
    // authority when it came over HTTP/2).
    let host = mirror.host.clone().or_else(|| {
        let authority = request.uri().authority()?;
        HeaderValue::try_from(authority.as_str()).ok()
    });
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    if copy.body().is_end_stream() {
        let headers = copy.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
    }
    Some(copy)
}

fn count(result: &'static str) {
    metrics::counter!(MIRROR_REQUESTS, "result" => result).increment(1);
}

/// One copy in flight, released when the copy is done.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}
