//! Per-route policies applied around the upstream call: retries (and later
//! canary and rate limits).

pub mod retry;
