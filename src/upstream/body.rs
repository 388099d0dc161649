//! The bodies the upstream side carries. Frames pass through as they come,
//! so backpressure reaches the sender, except a request body that its route
//! buffers (`proxy-request-buffering`).
//!
//! * `RequestBody`: client -> upstream, enforcing `proxy-body-size`; read
//!   whole first where the route buffers requests (`buffered`).
//! * `FromUpstream`: the upstream's answer as its protocol delivers it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::buffered::{Buffering, Outcome, Reader, Spool};
use super::error::ProxyError;
use super::h1::H1Body;
use crate::telemetry::requests::RequestMetrics;

pub struct RequestBody {
    /// What was read before the request went out (`buffered`): sent first.
    /// (Boxed: most requests have none, and this body is moved with every
    /// request's future.)
    buffered: Option<Box<Reader>>,
    /// The client's body (the rest of it, after `buffered`), as it comes.
    live: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
    /// Where the request size goes when the body is done (the original body only,
    /// not a replay).
    metrics: Option<Arc<RequestMetrics>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Option<u64>, metrics: Arc<RequestMetrics>) -> RequestBody {
        RequestBody {
            buffered: None,
            live: Some(inner),
            limit,
            seen: 0,
            metrics: Some(metrics),
        }
    }

    pub fn empty() -> RequestBody {
        RequestBody {
            buffered: None,
            live: None,
            limit: None,
            seen: 0,
            metrics: None,
        }
    }

    /// Reads the client's body before the request goes out
    /// (`proxy-request-buffering: on`), into memory and `spool`.
    pub async fn buffer(
        &mut self,
        spool: &Spool,
        settings: Buffering,
    ) -> Result<Outcome, ProxyError> {
        let Some(live) = self.live.as_mut() else {
            return Ok(Outcome::Memory);
        };
        let (buffered, outcome) = spool
            .read(live, settings, self.limit, &mut self.seen)
            .await?;
        if outcome != Outcome::Streamed {
            self.live = None;
        }
        self.buffered = Some(Box::new(Reader::new(Arc::new(buffered))));
        Ok(outcome)
    }

    /// The same body once more, for another attempt: only when all of it
    /// is here (none, or buffered whole).
    pub fn replay(&self) -> Option<RequestBody> {
        if self.live.as_ref().is_some_and(|live| !live.is_end_stream()) {
            return None;
        }
        let mut body = RequestBody::empty();
        body.buffered = self.buffered.as_ref().map(|r| Box::new(r.again()));
        Some(body)
    }

    /// Whether a body was read whole before the request went out.
    pub fn is_buffered(&self) -> bool {
        self.buffered.is_some() && self.live.is_none()
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
        if let Some(buffered) = this.buffered.as_mut() {
            if !buffered.is_end_stream() {
                let frame = ready!(buffered.poll_frame(cx)).map(|frame| {
                    frame.map_err(|error| {
                        tracing::warn!(%error, "reading a spooled request body failed");
                        ProxyError::ClientBody
                    })
                });
                return Poll::Ready(frame);
            }
        }
        let Some(inner) = this.live.as_mut() else {
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
        self.buffered.as_ref().is_none_or(|r| r.is_end_stream())
            && self.live.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.buffered.as_ref().map_or(0, |r| r.remaining());
        match &self.live {
            None => SizeHint::with_exact(buffered),
            Some(live) => {
                let live = live.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(live.lower() + buffered);
                if let Some(upper) = live.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
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
