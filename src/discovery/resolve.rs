//! ExternalName Services: their DNS names are resolved here, in the
//! background, never on the request path. A new name is looked up within a
//! second of appearing; a known one again when its records' TTL runs out
//! (as ingress-nginx's Lua resolver does), kept between `MIN_KEEP` and
//! `MAX_KEEP`. A failed lookup keeps the name's last addresses and is tried
//! again after `RETRY`. New addresses rebuild the table
//! (`Publisher::set_resolved`).
//!
//! The resolver reads the node's `/etc/resolv.conf` (cluster DNS, search
//! domains, `ndots`) and `/etc/hosts`, as the pod's own lookups would. If
//! that configuration cannot be read, the system resolver is used, which
//! reports no TTLs: `MAX_KEEP_UNTIMED` stands in for them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use hickory_resolver::TokioResolver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{in_background, Publisher};

/// Addresses are kept at least this long, whatever their TTL (a TTL of 0
/// must not make sluice query every second).
const MIN_KEEP: Duration = Duration::from_secs(5);
/// And at most this long, so a record with a TTL of days is still checked.
const MAX_KEEP: Duration = Duration::from_secs(300);
/// Without TTLs (the system resolver), how long addresses are kept.
const MAX_KEEP_UNTIMED: Duration = Duration::from_secs(30);
/// After a failed lookup, the next try.
const RETRY: Duration = Duration::from_secs(5);
/// How often the table is checked for new names and due ones.
const POLL: Duration = Duration::from_secs(1);
/// A lookup that takes longer counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Names looked up at most (a tenant's Services cannot make sluice query
/// without bound), and at most this many at once.
const MAX_NAMES: usize = 1_000;
const CONCURRENT: usize = 16;

/// What is known of one name.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Empty until a lookup has succeeded.
    ips: Vec<IpAddr>,
    /// When to look the name up again.
    due: Instant,
}

/// The answer to one lookup: the addresses and how long they may be kept.
type Answer = Option<(Vec<IpAddr>, Duration)>;

enum Dns {
    Hickory(Box<TokioResolver>),
    System,
}

impl Dns {
    fn new() -> Dns {
        match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Dns::Hickory(Box::new(resolver)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the DNS configuration; ExternalName Services use the system resolver, refreshed every 30 s");
                Dns::System
            }
        }
    }

    async fn lookup(&self, name: &str) -> Answer {
        let answer: Answer = match self {
            Dns::Hickory(resolver) => {
                let found = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name)).await;
                match found {
                    Ok(Ok(found)) => {
                        let ttl = found
                            .valid_until()
                            .saturating_duration_since(std::time::Instant::now());
                        Some((found.iter().collect(), ttl))
                    }
                    _ => None,
                }
            }
            Dns::System => {
                let found =
                    tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
                match found {
                    Ok(Ok(found)) => Some((found.map(|a| a.ip()).collect(), MAX_KEEP_UNTIMED)),
                    _ => None,
                }
            }
        };
        let answer = answer.filter(|(ips, _)| !ips.is_empty());
        if answer.is_none() {
            tracing::warn!(%name, "ExternalName lookup failed; keeping its last addresses");
        }
        answer
    }
}

pub async fn run(publisher: Arc<Publisher>, stop: CancellationToken) {
    let dns = Dns::new();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut published: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let names: Vec<String> = publisher
            .external_names()
            .into_iter()
            .take(MAX_NAMES)
            .collect();
        let due = due_names(&entries, &names, now);
        let answers: Vec<(String, Answer)> = stream::iter(due)
            .map(|name| async {
                let answer = dns.lookup(&name).await;
                (name, answer)
            })
            .buffer_unordered(CONCURRENT)
            .collect()
            .await;
        entries = settle(entries, &names, answers, Instant::now());
        let resolved: BTreeMap<String, Vec<IpAddr>> = entries
            .iter()
            .filter(|(_, entry)| !entry.ips.is_empty())
            .map(|(name, entry)| (name.clone(), entry.ips.clone()))
            .collect();
        if resolved != published {
            published = resolved;
            let publisher = publisher.clone();
            let map = Arc::new(published.clone());
            let _ = in_background(move || publisher.set_resolved(map)).await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The names to look up now: new ones, and those whose time has come.
fn due_names(entries: &BTreeMap<String, Entry>, names: &[String], now: Instant) -> Vec<String> {
    names
        .iter()
        .filter(|name| entries.get(*name).is_none_or(|entry| entry.due <= now))
        .cloned()
        .collect()
}

/// The entries after these answers: names no longer served are forgotten;
/// an answer's addresses are kept for their TTL (within bounds); a failure
/// keeps the last addresses and tries again after `RETRY`.
fn settle(
    mut entries: BTreeMap<String, Entry>,
    names: &[String],
    answers: Vec<(String, Answer)>,
    now: Instant,
) -> BTreeMap<String, Entry> {
    entries.retain(|name, _| names.contains(name));
    for (name, answer) in answers {
        let entry = match answer {
            Some((mut ips, ttl)) => {
                ips.sort_unstable();
                ips.dedup();
                Entry {
                    ips,
                    due: now + ttl.clamp(MIN_KEEP, MAX_KEEP),
                }
            }
            None => Entry {
                ips: entries.remove(&name).map(|e| e.ips).unwrap_or_default(),
                due: now + RETRY,
            },
        };
        entries.insert(name, entry);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_looked_up_again_when_their_ttl_runs_out() {
        let t0 = Instant::now();
        let names = vec!["a.example".to_owned(), "b.example".to_owned()];
        assert_eq!(
            due_names(&BTreeMap::new(), &names, t0),
            names,
            "new names at once"
        );
        let answers = vec![
            (
                "a.example".to_owned(),
                Some((
                    vec![ip("10.0.0.2"), ip("10.0.0.1"), ip("10.0.0.2")],
                    Duration::from_secs(60),
                )),
            ),
            (
                "b.example".to_owned(),
                Some((vec![ip("10.0.1.1")], Duration::ZERO)),
            ),
        ];
        let entries = settle(BTreeMap::new(), &names, answers, t0);
        assert_eq!(entries["a.example"].ips, [ip("10.0.0.1"), ip("10.0.0.2")]);
        // A TTL of 0 is kept MIN_KEEP; 60 s is kept 60 s.
        assert!(due_names(&entries, &names, t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(due_names(&entries, &names, t0 + MIN_KEEP), ["b.example"]);
        assert_eq!(
            due_names(&entries, &names, t0 + Duration::from_secs(60)),
            names
        );
        // A day's TTL is checked after MAX_KEEP all the same.
        let long = vec![(
            "a.example".to_owned(),
            Some((vec![ip("10.0.0.1")], Duration::from_secs(86_400))),
        )];
        let entries = settle(entries, &names, long, t0);
        assert_eq!(entries["a.example"].due, t0 + MAX_KEEP);
    }

    #[test]
    fn a_failure_keeps_the_last_addresses_and_retries_soon() {
        let t0 = Instant::now();
        let names = vec!["a.example".to_owned()];
        let ok = vec![(
            "a.example".to_owned(),
            Some((vec![ip("10.0.0.1")], Duration::from_secs(60))),
        )];
        let entries = settle(BTreeMap::new(), &names, ok, t0);
        let later = t0 + Duration::from_secs(60);
        let entries = settle(entries, &names, vec![("a.example".to_owned(), None)], later);
        assert_eq!(entries["a.example"].ips, [ip("10.0.0.1")]);
        assert_eq!(entries["a.example"].due, later + RETRY);
        // A name never resolved has no addresses, and is tried again too.
        let entries = settle(
            BTreeMap::new(),
            &names,
            vec![("a.example".to_owned(), None)],
            t0,
        );
        assert!(entries["a.example"].ips.is_empty());
        assert_eq!(due_names(&entries, &names, t0 + RETRY), names);
        // A name no longer served is forgotten.
        assert!(settle(entries, &[], vec![], t0).is_empty());
    }
}
