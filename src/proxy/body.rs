//! Streaming bodies in both directions. Nothing here buffers a whole body: each
//! wrapper passes frames through as they come, so backpressure reaches the sender.
//!
//! (`upstream::body` has the two the upstream side needs: `RequestBody`, client
//! -> upstream, and `FromUpstream`, the answer as its protocol delivers it.)
//! * `UpstreamBody`: upstream -> client, enforcing `proxy-read-timeout` between frames.
//! * `ResponseBody`: what the listener sends: a proxied body or a short local one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::policy::connlimit::ConnSlot;
use crate::routing::InFlight;
use crate::telemetry::access_log::{AccessLog, Entry};
use crate::telemetry::requests::RequestMetrics;
use crate::upstream::body::FromUpstream;
use crate::upstream::error::ProxyError;

pin_project! {
    pub struct UpstreamBody {
        inner: FromUpstream,
        read_timeout: Duration,
        // Armed only while waiting for the upstream: frames that are already
        // there (most small bodies) cost no timer operation.
        #[pin]
        deadline: Sleep,
        armed: bool,
        // The request counts as in flight on its endpoint until the body is done.
        in_flight: Option<InFlight>,
        // Recorded when the body is done (or dropped).
        completion: Option<Completion>,
        // `limit-rate`: frames are held back to keep to the rate.
        throttle: Option<Box<Throttle>>,
    }
}

/// `limit-rate` / `limit-rate-after`, as nginx's `limit_rate` for one
/// response: after `after` bytes, at most `rate` bytes a second.
pub struct Throttle {
    rate: u64,
    after: u64,
    sent: u64,
    /// When the body passed `after` bytes.
    since: Option<Instant>,
    /// A frame waiting for its time.
    held: Option<Frame<Bytes>>,
    sleep: Pin<Box<Sleep>>,
}

impl Throttle {
    pub fn new(rate: u64, after: u64) -> Box<Throttle> {
        Box::new(Throttle {
            rate: rate.max(1),
            after,
            sent: 0,
            since: None,
            held: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        })
    }

    /// Counts `len` more bytes; the time they may go, if later than now.
    fn account(&mut self, len: u64, now: Instant) -> Option<Instant> {
        self.sent += len;
        let limited = self.sent.checked_sub(self.after).filter(|&n| n > 0)?;
        let since = *self.since.get_or_insert(now);
        let due = since + Duration::from_secs_f64(limited as f64 / self.rate as f64);
        (due > now).then_some(due)
    }
}

/// What happens when a response body has been sent (or abandoned): its size
/// goes to the route's metrics and the access log line is written.
pub struct Completion {
    pub metrics: Option<Arc<RequestMetrics>>,
    pub log: Option<PendingLog>,
    pub bytes: u64,
    /// `limit-connections`: the request counts until its answer is sent.
    pub slot: Option<Box<ConnSlot>>,
}

/// An access log line waiting for the response body to end.
pub struct PendingLog {
    pub entry: Box<Entry>,
    pub started: Instant,
    pub log: AccessLog,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.record_response_size(self.bytes);
        }
        if let Some(pending) = &mut self.log {
            let entry = &mut pending.entry;
            entry.bytes_out = self.bytes;
            entry.duration_ms = pending.started.elapsed().as_secs_f64() * 1e3;
            pending.log.log(entry);
        }
    }
}

impl UpstreamBody {
    pub fn new(inner: FromUpstream, read_timeout: Duration, in_flight: InFlight) -> UpstreamBody {
        UpstreamBody {
            inner,
            read_timeout,
            deadline: tokio::time::sleep(read_timeout),
            armed: false,
            in_flight: Some(in_flight),
            completion: None,
            throttle: None,
        }
    }

    /// Holds frames back to keep to `limit-rate`.
    pub fn throttled(mut self, throttle: Box<Throttle>) -> UpstreamBody {
        self.throttle = Some(throttle);
        self
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let mut this = self.project();
        if let Some(throttle) = this.throttle.as_mut() {
            if throttle.held.is_some() {
                ready!(throttle.sleep.as_mut().poll(cx));
                return Poll::Ready(throttle.held.take().map(Ok));
            }
        }
        match Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                match &frame {
                    None => {
                        this.in_flight.take();
                        this.completion.take();
                    }
                    Some(Ok(f)) => {
                        if let (Some(data), Some(done)) = (f.data_ref(), this.completion.as_mut()) {
                            done.bytes += data.len() as u64;
                        }
                    }
                    Some(Err(_)) => {}
                }
                *this.armed = false;
                if let (Some(throttle), Some(Ok(f))) = (this.throttle.as_mut(), &frame) {
                    let len = f.data_ref().map_or(0, |d| d.len() as u64);
                    if let Some(due) = throttle.account(len, Instant::now()) {
                        throttle.sleep.as_mut().reset(due);
                        if throttle.sleep.as_mut().poll(cx).is_pending() {
                            throttle.held = frame.and_then(Result::ok);
                            return Poll::Pending;
                        }
                    }
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                // The timeout runs between two frames, from when the wait began.
                if !*this.armed {
                    *this.armed = true;
                    this.deadline
                        .as_mut()
                        .reset(Instant::now() + *this.read_timeout);
                }
                ready!(this.deadline.poll(cx));
                tracing::debug!("upstream response body read timed out");
                Poll::Ready(Some(Err(ProxyError::ReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A frame held back by the throttle is still to come.
        self.inner.is_end_stream() && self.throttle.as_ref().is_none_or(|t| t.held.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Upstream { #[pin] body: UpstreamBody },
        Local { data: Option<Bytes> },
    }
}

impl ResponseBody {
    pub fn upstream(body: UpstreamBody) -> ResponseBody {
        ResponseBody::Upstream { body }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::Local { data: None }
    }

    /// Completes the request when the body ends: at once for a local body.
    pub fn on_done(&mut self, mut completion: Completion) {
        match self {
            ResponseBody::Upstream { body } => body.completion = Some(completion),
            ResponseBody::Local { data } => {
                completion.bytes = data.as_ref().map_or(0, |d| d.len() as u64);
            }
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(data: Bytes) -> ResponseBody {
        ResponseBody::Local {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body } => body.poll_frame(cx),
            ResponseBodyProj::Local { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body } => body.is_end_stream(),
            ResponseBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body } => body.size_hint(),
            ResponseBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_throttle_holds_bytes_past_the_first_ones_to_the_rate() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(1000, 500);
        // The first 500 bytes go at once.
        assert_eq!(throttle.account(400, t0), None);
        assert_eq!(throttle.account(100, t0), None);
        // Then 1000 bytes a second: 250 more may go a quarter second later.
        assert_eq!(
            throttle.account(250, t0),
            Some(t0 + Duration::from_millis(250))
        );
        assert_eq!(throttle.account(250, t0 + Duration::from_secs(1)), None);
    }
}
