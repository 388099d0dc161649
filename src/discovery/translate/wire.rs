//! How a backend's pods are spoken to: TLS settings made from the
//! annotations and the Secret they name, once per identity in a build; and
//! SSL passthrough hosts, whose connections go to the pods TLS and all.

use std::sync::Arc;

use super::parse::Field;
use super::Builder;
use crate::discovery::annotations::UpstreamTlsAnnotations;
use crate::discovery::ObjectRef;
use crate::routing::{Backend, BackendRef, HostKey, Passthrough, Protocol, RoutePolicy};
use crate::upstream::tls::{TlsSpec, UpstreamTls};

impl Builder<'_> {
    /// The `Protocol::Tls` for a backend: its Secret read, its settings made
    /// once per build and identity.
    pub(super) fn upstream_tls(
        &mut self,
        tls: &UpstreamTlsAnnotations,
        backend_ref: &BackendRef,
    ) -> Result<Protocol, String> {
        let mut spec = TlsSpec {
            verify: tls.verify,
            sni: tls.sni,
            h2: tls.h2,
            no_tls12: tls.no_tls12,
            no_tls13: tls.no_tls13,
            // ingress-nginx verifies against `proxy_ssl_name`, whose default
            // (the upstream's internal name) no certificate carries; the
            // Service's cluster DNS name is one a pod's certificate does.
            name: tls.name.clone().unwrap_or_else(|| {
                format!("{}.{}.svc", backend_ref.service, backend_ref.namespace)
            }),
            ..TlsSpec::default()
        };
        if let Some((namespace, name)) = &tls.secret {
            let field = |key| self.index.secret_field(namespace, name, key);
            spec.ca = field("ca.crt")?;
            spec.client = match (field("tls.crt")?, field("tls.key")?) {
                (Some(cert), Some(key)) => Some((cert, key)),
                _ => None,
            };
        }
        if let Some(made) = self.upstream_tls.get(&spec) {
            return Ok(Protocol::Tls(made.clone()));
        }
        let made = Arc::new(UpstreamTls::new(spec.clone())?);
        self.upstream_tls.insert(spec, made.clone());
        Ok(Protocol::Tls(made))
    }
}

impl Builder<'_> {
    /// `ssl-passthrough` for one rule's host: the first Ingress to claim an
    /// exact host gets its connections (the host's owner: `add` checked it).
    pub(super) fn add_passthrough(
        &mut self,
        host: &HostKey,
        backend: &Arc<Backend>,
        policy: &RoutePolicy,
        object: &ObjectRef,
        field: Field,
    ) {
        if !self.ssl_passthrough {
            let message = "ssl-passthrough needs --enable-ssl-passthrough (as in ingress-nginx); TLS is terminated as usual".to_owned();
            self.warn(Some((object, field)), "passthrough-disabled", message);
            return;
        }
        let HostKey::Exact(name) = host else {
            let message = format!(
                "ssl-passthrough needs an exact host, not {host}; TLS is terminated as usual"
            );
            self.warn(Some((object, field)), "passthrough-refused", message);
            return;
        };
        if self.passthrough.contains_key(name) {
            return;
        }
        self.passthrough.insert(
            name.clone(),
            Passthrough {
                backend: backend.clone(),
                balance: policy.balance.clone(),
                connect_timeout: policy.connect_timeout,
            },
        );
    }
}
