//! sluice: a Kubernetes L7 ingress proxy.
//!
//! # Layers
//!
//! Each module imports only the layers below it (`tests/it/layering.rs` checks
//! it), so there is no cycle and each piece can be read on its own:
//!
//! ```text
//! 9  main                          the command line
//! 8  server, demo, migrate         wiring: listeners, discovery, drain; the
//!                                  `sluice migrate` report
//! 7  admin, reload                 the admin API and dashboard; config reloads
//! 6  discovery | proxy             sources -> translate -> table | the request pipeline
//! 5  config                        the config file, typed, read by both of the above
//! 4  routing                       the model: table, routes and their filters,
//!                                  backends, endpoints, certificates
//! 3  upstream                      protocols, pools, the HTTP/1 client, ProxyError
//! 2  policy                        canary, rate limits, retries, refused addresses
//! 1  balance                       pure decisions: estimates, breaker, pick
//! 0  units, telemetry, lifecycle,  leaves; compat: ingress-nginx's keys and
//!    compat                        snippets, as data
//! ```
//!
//! # Data flow
//!
//! ```text
//!  manifests dir / apiserver -> Snapshot -> translate() -> RoutingTable
//!                                   |                      | ArcSwap (swapped whole)
//!              discovery::retained (what outlives tables)  |
//!  client -> listener (h1 | h2c | TLS) -> proxy::pipeline -> upstream pool -> pod
//! ```
//!
//! # The request pipeline (`proxy::pipeline`)
//!
//! ```text
//! accept -> route -> request filters -> choose backend -> upstream -> response -> log
//! ```
//!
//! A per-request context carries what each phase learns; the metrics and the
//! access-log line are written once from it, at the end. A route's request
//! filters (redirects, body size, rate limit, canary choice) are compiled by
//! `translate` into `routing::filters`, which maps them onto Ingress annotations
//! and Gateway API's HTTPRoute filters.
//!
//! Glossary: an Ingress rule path becomes a [`routing::Route`]; a Service port a
//! [`routing::Backend`]; a ready pod address from an EndpointSlice an
//! [`routing::Endpoint`]. State that must outlive table swaps (connection pools,
//! latency estimates, breakers, retry budgets, cursors, limiters) lives in
//! [`discovery::retained`], keyed, and is collected once no table refers to it.

pub mod admin;
pub mod balance;
pub mod compat;
pub mod config;
pub mod demo;
pub mod discovery;
#[cfg(test)]
mod fuzz;
pub mod lifecycle;
pub mod migrate;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod units;
pub mod upstream;
