//! `ProxyError`: every way a proxied request can fail, and the one place that maps a
//! failure to an HTTP status and a retry decision.

use std::error::Error as _;
use std::io;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use thiserror::Error;

use crate::balance::window::Outcome;
use crate::policy::retry::Failure;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("no ready endpoint")]
    NoEndpoint,
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request body larger than the limit")]
    BodyTooLarge,
    #[error("reading the request body from the client failed")]
    ClientBody,
    /// The client stopped sending its body for `client-body-timeout`.
    #[error("the client did not send its request body in time")]
    ClientBodyTimeout,
    #[error("connecting to the upstream failed")]
    Connect(#[source] io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("HTTP handshake with the upstream failed")]
    Handshake(#[source] hyper::Error),
    /// The TLS handshake with the pod failed (its own failure class: counted
    /// by reason, a connect failure for the breaker, retried like one).
    /// (An `io::Error`, not its text: a larger variant would enlarge every
    /// request's future.)
    #[error("TLS handshake with the upstream failed: {0}")]
    TlsHandshake(#[source] io::Error),
    #[error("the upstream did not send data in time")]
    ReadTimeout,
    #[error("the upstream did not accept data in time")]
    SendTimeout,
    #[error("the upstream request failed")]
    Upstream(#[source] hyper::Error),
    #[error("the upstream connection failed")]
    UpstreamConnection(#[source] io::Error),
    #[error("the upstream sent an invalid response: {0}")]
    UpstreamResponse(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadRequest(_) | ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Connect(_)
            | ProxyError::Handshake(_)
            | ProxyError::TlsHandshake(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamConnection(_)
            | ProxyError::UpstreamResponse(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ReadTimeout | ProxyError::SendTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// True when the upstream never saw the request, so another endpoint may take it
    /// whatever the method. (The retries issue adds idempotent-method rules.)
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::ConnectTimeout
                | ProxyError::Handshake(_)
                | ProxyError::TlsHandshake(_)
        )
    }

    /// What this failure tells the balancer about the endpoint; `None` when it
    /// says nothing about it (the client's fault, a pooled connection's race).
    pub fn outcome(&self, unsent: bool) -> Option<Outcome> {
        match self {
            ProxyError::Connect(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Handshake(_)
            | ProxyError::TlsHandshake(_) => Some(Outcome::ConnectFailure),
            _ if unsent => None,
            ProxyError::ReadTimeout
            | ProxyError::SendTimeout
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamConnection(_)
            | ProxyError::UpstreamResponse(_) => Some(Outcome::NetworkError),
            _ => None,
        }
    }

    /// How this failure counts for retries; `None`: never retried.
    pub fn failure(&self, unsent: bool) -> Option<Failure> {
        match self {
            _ if self.is_retryable() || unsent => Some(Failure::NotSent),
            ProxyError::ReadTimeout | ProxyError::SendTimeout => Some(Failure::Timeout),
            ProxyError::Upstream(_)
            | ProxyError::UpstreamConnection(_)
            | ProxyError::UpstreamResponse(_) => Some(Failure::Error),
            _ => None,
        }
    }

    /// Classifies a failed h2 exchange. hyper wraps errors raised by our own
    /// request body (limit, client gone) and our upstream IO (send timeout); find them.
    pub fn from_upstream(err: hyper::Error) -> ProxyError {
        let mut source = err.source();
        while let Some(cause) = source {
            // `io::Error::source()` skips the error it wraps, so look inside by hand.
            let ours = cause.downcast_ref::<ProxyError>().or_else(|| {
                cause
                    .downcast_ref::<io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<ProxyError>())
            });
            match ours {
                Some(ProxyError::BodyTooLarge) => return ProxyError::BodyTooLarge,
                Some(ProxyError::ClientBody) => return ProxyError::ClientBody,
                Some(ProxyError::SendTimeout) => return ProxyError::SendTimeout,
                Some(ProxyError::ReadTimeout) => return ProxyError::ReadTimeout,
                _ => {}
            }
            source = cause.source();
        }
        ProxyError::Upstream(err)
    }

    /// A short plain-text response: status line words and what went wrong.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let status = self.status();
        let body = format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self
        );
        let mut response = Response::new(B::from(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [
            (ProxyError::NoRoute, 404, false),
            (ProxyError::NoEndpoint, 503, false),
            (ProxyError::BadRequest("x"), 400, false),
            (ProxyError::BodyTooLarge, 413, false),
            (ProxyError::ClientBodyTimeout, 408, false),
            (
                ProxyError::Connect(io::ErrorKind::ConnectionRefused.into()),
                502,
                true,
            ),
            (ProxyError::ConnectTimeout, 504, true),
            (ProxyError::ReadTimeout, 504, false),
            (ProxyError::SendTimeout, 504, false),
        ];
        for (err, status, retryable) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.is_retryable(), retryable, "{err}");
        }
    }
}
