//! The integration tests, in one binary so that a change links it once: each
//! module drives sluice from the outside (HTTP, TLS, the admin API, a fake
//! apiserver, a manifests directory) with the real peers users have.
//!
//! The metrics recorder is process-wide: a test that asserts exact values of
//! process-wide series runs alone in a fresh process of this binary
//! (`support::alone_in_process`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod access;
mod admission;
mod affinity;
mod balancing;
mod client_certs;
mod dashboard;
mod deploy;
mod drain;
mod error_pages;
mod external_auth;
mod gateway_api;
mod gateway_conformance;
mod hot_swap;
mod kubernetes;
mod layering;
mod metrics;
mod migration;
mod mirroring;
mod policies;
mod protocols;
mod proxy;
mod rewriting;
mod tenancy;
mod tls;
mod upstream_http1;
mod upstream_tls;
