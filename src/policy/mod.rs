//! Per-route policies applied around the upstream call: retries (and later
//! canary and rate limits).

pub mod canary;
pub mod ratelimit;
pub mod retry;
pub mod upstream_deny;
