//! ExternalName Services: their DNS names are resolved here, in the
//! background, never on the request path. A new name is looked up within a
//! second of appearing; every name is looked up again every `REFRESH`. A
//! failed lookup keeps the name's last addresses. New addresses rebuild the
//! table (`Publisher::set_resolved`).
//!
//! The system resolver gives no TTLs, so `REFRESH` stands in for them (a
//! documented difference).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{in_background, Publisher};

/// How often every name is looked up again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How often the table is checked for new names.
const POLL: Duration = Duration::from_secs(1);
/// A lookup that takes longer counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Names looked up at most (a tenant's Services cannot make sluice query
/// without bound).
const MAX_NAMES: usize = 1_000;

pub async fn run(publisher: Arc<Publisher>, stop: CancellationToken) {
    let mut resolved: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut refreshed = Instant::now();
    loop {
        let names = publisher.external_names();
        let refresh = refreshed.elapsed() >= REFRESH;
        if refresh {
            refreshed = Instant::now();
        }
        let mut next = BTreeMap::new();
        for name in names.into_iter().take(MAX_NAMES) {
            let known = resolved.get(&name).cloned();
            let looked_up = match (&known, refresh) {
                (Some(known), false) => Some(known.clone()),
                _ => lookup(&name).await.or(known),
            };
            if let Some(ips) = looked_up {
                next.insert(name, ips);
            }
        }
        if next != resolved {
            resolved = next;
            let publisher = publisher.clone();
            let map = Arc::new(resolved.clone());
            let _ = in_background(move || publisher.set_resolved(map)).await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The addresses of `name`, sorted; `None` when the lookup fails.
async fn lookup(name: &str) -> Option<Vec<IpAddr>> {
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
    match found {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort_unstable();
            ips.dedup();
            (!ips.is_empty()).then_some(ips)
        }
        _ => {
            tracing::warn!(%name, "ExternalName lookup failed; keeping its last addresses");
            None
        }
    }
}
