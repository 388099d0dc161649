//! sluice: a Kubernetes L7 ingress proxy.
//!
//! ```text
//!  manifests dir / apiserver -> Snapshot -> translate() -> RoutingTable
//!                                                          | ArcSwap (swapped whole)
//!  client -> listener (h1 | h2c) -> route(host, path) -> pick endpoint -> pool -> pod
//! ```
//!
//! Glossary: an Ingress rule path becomes a [`routing::Route`]; a Service port a
//! [`routing::Backend`]; a ready pod address from an EndpointSlice an
//! [`routing::Endpoint`]. State that must outlive table swaps (connection pools)
//! hangs off [`balance::EndpointState`], keyed by address.

pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod discovery;
#[cfg(test)]
mod fuzz;
pub mod lifecycle;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod units;
pub mod upstream;
