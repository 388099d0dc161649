//! An Ingress's `spec.tls`: each Secret read once per build, and a
//! certificate only for a host the Ingress routes and its namespace owns.

use std::collections::BTreeSet;

use super::parse::{Field, ParsedIngress};
use super::Builder;
use crate::routing::certs::Certificate;

impl Builder<'_> {
    /// Loads the certificates of an Ingress's `spec.tls`; returns its TLS hosts
    /// (they get HTTPS redirects whether or not their Secret is usable).
    pub(super) fn add_tls(&mut self, parsed: &ParsedIngress) -> BTreeSet<String> {
        let mut tls_hosts = BTreeSet::new();
        let routed = parsed.routed_hosts();
        let namespace = &parsed.object.namespace;
        for (i, (hosts, secret)) in parsed.tls.iter().enumerate() {
            tls_hosts.extend(hosts.iter().cloned());
            // Without a Secret, the default certificate serves these hosts.
            let Some(secret) = secret else { continue };
            // A certificate only for a host this Ingress routes, and only from
            // the namespace that routed the host first: no tenant can serve its
            // certificate (and so terminate TLS) for another tenant's host.
            let mut ours = Vec::new();
            for host in hosts {
                let refusal = self.certificate_refusal(host, &routed, namespace);
                match refusal {
                    Some(message) => self.warn(
                        Some((&parsed.object, Field::Tls(i))),
                        "tls-host-refused",
                        message,
                    ),
                    None => ours.push(host),
                }
            }
            if ours.is_empty() {
                continue;
            }
            let loaded = self.certificate(namespace, secret);
            for host in ours {
                let certificate = match &loaded {
                    Ok(certificate) => certificate.clone(),
                    Err(message) => {
                        let kept = self.previous_certs.for_host(host).cloned();
                        let suffix = if kept.is_some() {
                            "; the host keeps its last good certificate"
                        } else {
                            ""
                        };
                        let message = format!(
                            "host {host}: Secret {}/{secret}: {message}{suffix}",
                            parsed.object.namespace
                        );
                        self.warn(
                            Some((&parsed.object, Field::Tls(i))),
                            "invalid-certificate",
                            message,
                        );
                        match kept {
                            Some(kept) => kept,
                            None => continue,
                        }
                    }
                };
                if !self.certs.insert(host, certificate) {
                    let message = format!(
                        "host {host} already has a certificate from an older Ingress; ignored"
                    );
                    self.warn(Some((&parsed.object, Field::Tls(i))), "conflict", message);
                }
            }
        }
        tls_hosts
    }

    pub(super) fn certificate(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Result<Certificate, String> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(loaded) = self.loaded.get(&key) {
            return loaded.clone();
        }
        let loaded = self.index.certificate(namespace, name);
        self.loaded.insert(key, loaded.clone());
        loaded
    }
}
