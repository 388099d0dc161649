//! Connection metrics: handles resolved once per process, so counting a
//! connection or a pooled request is an atomic add.

use std::sync::OnceLock;

use metrics::{Counter, Gauge};

use super::{DOWNSTREAM_CONNECTIONS, UPSTREAM_CONNECTIONS_OPEN, UPSTREAM_CONNECTION_USES};

/// How a client connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downstream {
    Http1,
    H2c,
    /// HTTP/1.1 over TLS.
    Tls,
    /// HTTP/2 over TLS.
    H2,
}

/// The protocol of an upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Http1,
    H2c,
}

struct Handles {
    downstream: [Gauge; 4],
    upstream_open: [Gauge; 2],
    new: Counter,
    reused: Counter,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        // Handles taken before the recorder exists would count into nothing.
        super::prometheus();
        let downstream = |p: &'static str| metrics::gauge!(DOWNSTREAM_CONNECTIONS, "protocol" => p);
        let upstream =
            |p: &'static str| metrics::gauge!(UPSTREAM_CONNECTIONS_OPEN, "protocol" => p);
        Handles {
            downstream: [
                downstream("http1"),
                downstream("h2c"),
                downstream("tls"),
                downstream("h2"),
            ],
            upstream_open: [upstream("http1"), upstream("h2c")],
            new: metrics::counter!(UPSTREAM_CONNECTION_USES, "connection" => "new"),
            reused: metrics::counter!(UPSTREAM_CONNECTION_USES, "connection" => "reused"),
        }
    })
}

impl Downstream {
    pub fn opened(self) {
        handles().downstream[self as usize].increment(1.0);
    }

    pub fn closed(self) {
        handles().downstream[self as usize].decrement(1.0);
    }
}

impl Upstream {
    pub fn opened(self) {
        handles().upstream_open[self as usize].increment(1.0);
    }

    pub fn closed(self) {
        handles().upstream_open[self as usize].decrement(1.0);
    }
}

/// An HTTP/1.1 upstream request went out on a new or a pooled connection.
pub fn upstream_connection_used(reused: bool) {
    let handles = handles();
    if reused {
        handles.reused.increment(1);
    } else {
        handles.new.increment(1);
    }
}

/// A short label for why a TLS handshake with a pod failed: `certificate`
/// (not trusted, wrong name, expired, refused ours), `protocol` (no common
/// version, suite or ALPN), or `io` (the connection broke).
pub fn tls_failure_reason(error: &std::io::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        "certificate"
    } else if error.kind() == std::io::ErrorKind::InvalidData {
        "protocol"
    } else {
        "io"
    }
}
