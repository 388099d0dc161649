//! Layer 6, the data plane: listeners, TLS, the request pipeline (`pipeline`,
//! with its context, filters and upstream phase), the client-side bodies.
//!
//! The functions a request's future is made of (`Proxy::handle` down to
//! `h1::Connection::send`) return `async move` blocks instead of being `async fn`:
//! rustc keeps an `async fn`'s arguments in its future twice (as captured values
//! and again as locals), and this future is copied whole at each level and, over
//! HTTP/2, again when hyper spawns each stream. The blocks made it 6.2 KB -> 3.9 KB
//! and cut 3% of an HTTP/1.1 request's instructions, 4% of an h2c one's
//! (`benches/README.md`).

pub mod activity;
mod affinity;
pub mod body;
pub mod client_addr;
mod client_cert;
pub mod conn;
mod context;
mod edits;
mod error_pages;
mod external_auth;
mod filters;
mod forward;
mod headers;
pub mod listener;
mod mirror;
pub mod passthrough;
pub mod pipeline;
pub mod proxy_protocol;
pub mod tls;
pub mod tunnel;

pub use crate::upstream::error::{self, ProxyError};
pub use conn::ConnInfo;
pub use headers::X_REQUEST_ID;
pub use pipeline::{Proxy, ProxySettings};
