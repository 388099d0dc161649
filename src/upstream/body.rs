//! The bodies the upstream side carries. Neither buffers: frames pass through
//! as they come, so backpressure reaches the sender.
//!
//! * `RequestBody`: client -> upstream, enforcing `proxy-body-size`.
//! * `FromUpstream`: the upstream's answer as its protocol delivers it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::ProxyError;
use super::h1::H1Body;
use crate::telemetry::requests::RequestMetrics;

pub struct RequestBody {
    /// `None` for an empty body (a bodiless request sent again).
    inner: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
    /// Where the request size goes when the body is done (the original body only,
    /// not a replay).
    metrics: Option<Arc<RequestMetrics>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Option<u64>, metrics: Arc<RequestMetrics>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            limit,
            seen: 0,
            metrics: Some(metrics),
        }
    }

    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            limit: None,
            seen: 0,
            metrics: None,
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.record_request_size(self.seen);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        // Every field is Unpin (hyper's `Incoming` is), so no projection is needed.
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match ready!(Pin::new(inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "client request body failed");
                return Poll::Ready(Some(Err(ProxyError::ClientBody)));
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            this.seen += data.len() as u64;
            if this.limit.is_some_and(|limit| this.seen > limit) {
                return Poll::Ready(Some(Err(ProxyError::BodyTooLarge)));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The body of an upstream's answer: read off an HTTP/1.1 connection by the
/// request's task, or an h2 stream from hyper.
#[derive(Debug)]
pub enum FromUpstream {
    H1(H1Body),
    /// hyper's client body: HTTP/2 (h2c, `GRPCS`), or HTTP/1.1 over TLS.
    Hyper(Incoming),
}

impl Body for FromUpstream {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        // Both are Unpin.
        match self.get_mut() {
            FromUpstream::H1(body) => Pin::new(body).poll_frame(cx),
            FromUpstream::Hyper(body) => {
                Pin::new(body).poll_frame(cx).map_err(ProxyError::Upstream)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FromUpstream::H1(body) => body.is_end_stream(),
            FromUpstream::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FromUpstream::H1(body) => body.size_hint(),
            FromUpstream::Hyper(body) => body.size_hint(),
        }
    }
}
