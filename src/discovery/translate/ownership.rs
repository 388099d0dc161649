//! Who owns a host, and so who may route it and provide its certificate: the
//! first namespace to route it (oldest Ingress first), and under
//! `host-ownership: namespace` the namespaces it lets in.

use std::collections::BTreeSet;

use super::parse::{Field, ParsedIngress};
use super::Builder;
use crate::config::HostOwnership;
use crate::discovery::ObjectRef;
use crate::routing::HostKey;

#[derive(Debug)]
pub(super) struct HostOwner {
    pub(super) namespace: String,
    pub(super) allowed: BTreeSet<String>,
}

/// Whether a TLS host (`a.example`, `*.example`) covers a routed host, as
/// ingress-nginx matches `spec.tls` hosts to rule hosts.
pub(super) fn covers(tls: &HostKey, routed: &HostKey) -> bool {
    match (tls, routed) {
        (HostKey::Wildcard(suffix), HostKey::Exact(host)) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        _ => tls == routed,
    }
}

impl Builder<'_> {
    /// Records each host's owner: the first namespace (oldest Ingress first)
    /// to route it, and whom the owner's Ingresses let in.
    pub(super) fn claim_hosts(&mut self, mains: &[ParsedIngress]) {
        for parsed in mains {
            let namespace = &parsed.object.namespace;
            for host in parsed.routed_hosts() {
                let owner = self
                    .owners
                    .entry(host.clone())
                    .or_insert_with(|| HostOwner {
                        namespace: namespace.clone(),
                        allowed: BTreeSet::new(),
                    });
                if owner.namespace == *namespace {
                    owner
                        .allowed
                        .extend(parsed.allow_namespaces.iter().cloned());
                }
            }
        }
    }

    /// Whether `namespace` may add rules for `host`; if not, the owner.
    pub(super) fn may_route(&self, host: &HostKey, namespace: &str) -> Result<(), &str> {
        // A Gateway API wildcard belongs to whoever owns the Ingress one.
        let shallow;
        let host = match host {
            HostKey::DeepWildcard(suffix) => {
                shallow = HostKey::Wildcard(suffix.clone());
                &shallow
            }
            other => other,
        };
        let Some(owner) = self.owners.get(host) else {
            return Ok(());
        };
        let allowed = self.host_ownership == HostOwnership::Shared
            || owner.namespace == namespace
            || owner.allowed.contains(namespace)
            || owner.allowed.contains("*");
        if allowed {
            Ok(())
        } else {
            Err(&owner.namespace)
        }
    }

    /// Refuses a rule for a host another namespace owns (`host-ownership:
    /// namespace`) with a warning; true when the rule may go in.
    pub(super) fn check_owner(&mut self, host: &HostKey, object: &ObjectRef, field: Field) -> bool {
        let Err(owner) = self.may_route(host, &object.namespace) else {
            return true;
        };
        let message = format!(
            "host {host} belongs to namespace {owner} (host-ownership: namespace), which does not list {} in sluice.io/allow-namespaces; rule refused",
            object.namespace
        );
        self.warn(Some((object, field)), "host-owned", message);
        false
    }

    /// Why an Ingress of `namespace` that routes `routed` may not provide the
    /// certificate for the TLS host `host`, if it may not.
    pub(super) fn certificate_refusal(
        &self,
        host: &str,
        routed: &BTreeSet<&HostKey>,
        namespace: &str,
    ) -> Option<String> {
        let key = match HostKey::parse(Some(host)) {
            Some(key) if key != HostKey::Any => key,
            _ => return Some(format!("invalid host {host:?}; certificate refused")),
        };
        let covered: Vec<&HostKey> = routed.iter().copied().filter(|r| covers(&key, r)).collect();
        if covered.is_empty() {
            return Some(format!(
                "host {host} has no rule in this Ingress; its certificate is refused"
            ));
        }
        let owner_elsewhere = |k: &HostKey| {
            self.owners
                .get(k)
                .map(|o| o.namespace.as_str())
                .filter(|owner| *owner != namespace)
        };
        // The host itself, or else every routed host it covers, is another's.
        let elsewhere = owner_elsewhere(&key).or_else(|| {
            let owners: Option<Vec<&str>> = covered.iter().map(|k| owner_elsewhere(k)).collect();
            owners.and_then(|owners| owners.first().copied())
        });
        elsewhere.map(|owner| {
            format!("host {host} was routed first by namespace {owner}, which provides its certificate; refused")
        })
    }
}
