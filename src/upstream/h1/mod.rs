//! HTTP/1.1 to the upstream, driven by the request's own task.
//!
//! hyper's client runs every connection as a task of its own and passes each
//! request and response across channels to it: per proxied request, two task
//! switches, a channel round trip and a oneshot. Here, as in nginx, the task that
//! serves the client connection also drives the upstream connection: `send`
//! writes the head, streams the body and parses the answer's head, and the
//! answer's body (`H1Body`) reads straight from the upstream socket while the
//! client side writes it on. The connection goes back to the pool when its
//! response has been read to the end.
//!
//! Framing follows RFC 9112: `Content-Length`, `chunked` (trailers are read and
//! dropped), or until the upstream closes; none for HEAD, 1xx, 204 and 304.
//! Interim 1xx answers are skipped; a `101` hands the socket to the tunnel.
//!
//! Split as hyper and pingora split theirs: `encode` writes a request, `decode`
//! reads an answer (both pure), `connection` drives one exchange on a socket,
//! `body` streams the answer and returns the connection to its pool.

mod body;
mod connection;
mod decode;
mod encode;

use std::sync::Arc;

pub use body::H1Body;
pub use connection::{Connection, Sent};

use super::pool::Pool;

/// Where an answer's connection goes back to when its body ends: the pool of
/// the endpoint it came from (shared with the endpoint's state, which outlives
/// table swaps).
pub type PoolHandle = Arc<Pool>;
