//! Layer 3, under the model: how sluice talks to pods. Protocols, the
//! per-endpoint connection pools, the HTTP/1.1 client (`h1`: encode / decode /
//! connection / body), the bodies the upstream side carries, and `ProxyError`,
//! the one error type of a proxied exchange (most of its variants are born here;
//! `proxy` maps them to responses).
//!
//! Nothing here knows about routes or tables: a pool is given an address and a
//! protocol, and an answer's connection goes back to the pool it came from.

pub mod body;
pub mod buffered;
pub mod error;
pub mod h1;
pub mod pool;
pub mod tls;

pub use error::ProxyError;

/// How sluice speaks to the pods of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge: plaintext gRPC and other h2c servers.
    H2c,
    /// TLS (`HTTPS`: HTTP/1.1, as nginx; `GRPCS`: HTTP/2), with its settings,
    /// whose identity is part of every pool's key.
    Tls(std::sync::Arc<tls::UpstreamTls>),
}

impl Protocol {
    /// Whether requests go out as HTTP/2 (with `:scheme` and `:authority`).
    pub fn is_h2(&self) -> bool {
        match self {
            Protocol::Http1 => false,
            Protocol::H2c => true,
            Protocol::Tls(tls) => tls.spec.h2,
        }
    }
}
