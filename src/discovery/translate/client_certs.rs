//! `auth-tls-*`: client certificates are a host's, as in ingress-nginx
//! ("applied per host"): the handshake asks for them before any path is
//! known. The first Ingress (oldest first) of the namespace that owns a host
//! to ask sets them, and every route of the host, whichever Ingress it
//! comes from, checks them.
//!
//! Tenancy: an Ingress of another namespace (let in by
//! `sluice.io/allow-namespaces`) cannot set or change them; if it asks for
//! them on a host that has none, its own routes fail closed (403).

use std::collections::HashMap;
use std::sync::Arc;

use super::parse::{Field, ParsedIngress};
use super::Builder;
use crate::discovery::annotations::ClientCertSpec;
use crate::discovery::ObjectRef;
use crate::policy::client_cert::{ClientCa, VerifyClient};
use crate::routing::certs::ByHost;
use crate::routing::HostKey;

/// A host's settings (`Err`: unreadable, the host answers 403), and the
/// Ingress that set them.
pub(super) type HostClientCerts = HashMap<HostKey, (Result<Arc<ClientCa>, ()>, ObjectRef)>;

impl Builder<'_> {
    /// Each host's client-certificate settings, before any route is built:
    /// first the owners' (oldest Ingress first), then what the others asked
    /// for, which only warns.
    pub(super) fn claim_client_certs(&mut self, mains: &[ParsedIngress]) {
        let asking = || mains.iter().filter(|p| p.client_certs.is_some());
        for parsed in asking() {
            let object = &parsed.object;
            let mut loaded = None;
            for host in parsed.routed_hosts() {
                if !self.owns(host, &object.namespace) {
                    continue;
                }
                let spec = parsed.client_certs.as_ref();
                let settings = loaded
                    .get_or_insert_with(|| spec.map_or(Err(()), |s| self.client_ca(s, object)))
                    .clone();
                match self.client_certs.get(host) {
                    None => {
                        self.client_certs
                            .insert(host.clone(), (settings, object.clone()));
                    }
                    Some((kept, by)) => {
                        let same = match (kept, &settings) {
                            (Ok(kept), Ok(ours)) => kept.same(ours),
                            _ => false,
                        };
                        if !same {
                            let message = format!("host {host} has client-certificate settings from the older Ingress {}/{}, which apply to all its routes (as in ingress-nginx); these are not used", by.namespace, by.name);
                            self.warn(Some((object, Field::Annotations)), "conflict", message);
                        }
                    }
                }
            }
        }
        for parsed in asking() {
            let object = &parsed.object;
            for host in parsed.routed_hosts() {
                if self.owns(host, &object.namespace) {
                    continue;
                }
                let (reason, message) = match self.client_certs.get(host) {
                    Some((_, by)) => ("conflict", format!("host {host} belongs to namespace {}, whose Ingress {} sets its client certificates; this Ingress's routes check those, not these", by.namespace, by.name)),
                    None if *host == HostKey::Any => ("fail-closed", "client certificates need a host (the handshake picks them by SNI); this rule without a host answers 403".to_owned()),
                    None => {
                        let owner = self.owners.get(host).map_or("", |o| o.namespace.as_str());
                        ("fail-closed", format!("host {host} belongs to namespace {owner}, which alone may ask its clients for certificates and does not; this Ingress's routes for it answer 403"))
                    }
                };
                self.warn(Some((object, Field::Annotations)), reason, message);
            }
        }
    }

    /// Whether `namespace` may set `host`'s client certificates.
    fn owns(&self, host: &HostKey, namespace: &str) -> bool {
        *host != HostKey::Any
            && self
                .owners
                .get(host)
                .is_none_or(|o| o.namespace == namespace)
    }

    /// What a route of `host` checks: the host's settings, or a refusal for
    /// an Ingress that asks for client certificates the host does not have.
    pub(super) fn client_cert_for(
        &self,
        host: &HostKey,
        parsed: &ParsedIngress,
    ) -> Option<Result<Arc<ClientCa>, ()>> {
        match self.client_certs.get(host) {
            Some((settings, _)) => Some(settings.clone()),
            None => parsed.client_certs.as_ref().map(|_| Err(())),
        }
    }

    /// The hosts whose handshakes ask for a certificate, for the listener
    /// (`auth-tls-verify-client: off` asks for none).
    pub(super) fn client_cas(&self) -> ByHost<Arc<ClientCa>> {
        let mut by_host = ByHost::default();
        for (host, (settings, _)) in &self.client_certs {
            if let Some(settings) = settings
                .as_ref()
                .ok()
                .filter(|s| s.verify != VerifyClient::Off)
            {
                by_host.insert(&host.to_string(), settings.clone());
            }
        }
        by_host
    }

    /// The CA bundle of `auth-tls-secret`, from the Ingress's own namespace.
    fn client_ca(
        &mut self,
        spec: &ClientCertSpec,
        object: &ObjectRef,
    ) -> Result<Arc<ClientCa>, ()> {
        let read = || -> Result<ClientCa, String> {
            let (namespace, name) = &spec.secret;
            let namespace = namespace.as_deref().unwrap_or(&object.namespace);
            if namespace != object.namespace {
                return Err(format!("auth-tls-secret {namespace}/{name} is in another namespace; only the Ingress's own may be named"));
            }
            let ca = self
                .index
                .secret_field(namespace, name, "ca.crt")?
                .ok_or_else(|| format!("Secret {namespace}/{name} has no ca.crt"))?;
            let crl = self.index.secret_field(namespace, name, "ca.crl")?;
            ClientCa::new(&ca, crl.as_deref(), spec.options.clone())
        };
        read().map(Arc::new).map_err(|message| {
            let message =
                format!("auth-tls-secret: {message}; the host answers 403, as in ingress-nginx");
            self.warn(
                Some((object, Field::Annotations)),
                "invalid-auth-secret",
                message,
            );
        })
    }
}
