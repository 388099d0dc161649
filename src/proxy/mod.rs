//! The data plane: listeners, the request handler, the upstream pool, bodies, errors.

pub mod body;
pub mod error;
pub mod h1;
pub mod handler;
pub mod listener;
pub mod pool;
pub mod tls;

pub use error::ProxyError;
pub use handler::{Proxy, ProxySettings};
