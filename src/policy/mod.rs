//! Layer 2, pure decisions about a request: canary choice, rate limits,
//! retries, and which pod addresses are refused. They reuse balancing's keys
//! (`balance::policy::hash64`), so they sit just above it.

pub mod access;
pub mod affinity;
pub mod auth_cache;
pub mod basic_auth;
pub mod canary;
pub mod client_cert;
pub mod connlimit;
pub mod cors;
pub mod digest_auth;
pub mod ratelimit;
pub mod retry;
pub mod upstream_deny;
