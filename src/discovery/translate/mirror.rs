//! `mirror-target`: the target's addresses become a backend of their own
//! (a name is resolved in the background, as an ExternalName's), refused
//! like pods' where they must be, so a tenant's mirror cannot reach what
//! its Services could not.

use std::sync::Arc;

use super::index::{endpoints_for, PodAddrs};
use super::parse::Field;
use super::Builder;
use crate::discovery::annotations::{MirrorSpec, UpstreamTlsAnnotations};
use crate::discovery::ObjectRef;
use crate::routing::edits::Template;
use crate::routing::{Backend, BackendRef, IngressRef, Mirror, Protocol, RoutePolicy};

impl Builder<'_> {
    /// The mirror of an Ingress's routes; `None` (with a warning) when its
    /// target cannot be spoken to.
    pub(super) fn mirror(
        &mut self,
        (spec, uid): &(MirrorSpec, String),
        ingress: &IngressRef,
        policy: &RoutePolicy,
        object: &ObjectRef,
    ) -> Option<Arc<Mirror>> {
        let site = Some((object, Field::Annotations));
        let name = BackendRef {
            namespace: ingress.namespace.clone(),
            service: format!("mirror {}", spec.host),
            port: spec.port.to_string(),
            via_service_ip: false,
        };
        // As nginx's `proxy_pass https://...`: no verification, no SNI.
        let protocol = if spec.tls {
            let tls = UpstreamTlsAnnotations {
                name: Some(spec.host.clone()),
                ..UpstreamTlsAnnotations::default()
            };
            match self.upstream_tls(&tls, &name) {
                Ok(protocol) => protocol,
                Err(message) => {
                    self.warn(site, "invalid-mirror", format!("mirror-target: {message}"));
                    return None;
                }
            }
        } else {
            Protocol::Http1
        };
        let key = (name, protocol);
        let backend = match self.backends.get(&key) {
            Some(backend) => backend.clone(),
            None => {
                let addrs = match self.index.host_addrs(&spec.host, spec.port) {
                    Ok(PodAddrs { addrs, refused }) => {
                        if !refused.is_empty() {
                            let message =
                                format!("mirror-target: refusing addresses {}", refused.join(", "));
                            self.warn(site, "endpoint-refused", message);
                        }
                        addrs
                    }
                    Err((reason, message)) => {
                        let message = format!("mirror-target: {message}; no copies are sent");
                        self.warn(site, reason, message);
                        Vec::new()
                    }
                };
                let namespace: Arc<str> = key.0.namespace.as_str().into();
                let endpoints = endpoints_for(&namespace, addrs, key.1.clone(), self.retained);
                let budget = (
                    self.defaults.retry_budget_ratio,
                    self.defaults.retry_budget_min_per_second,
                );
                let state = self.retained.backend(&key.0, key.1.clone(), budget);
                let backend =
                    Arc::new(Backend::new(key.0.clone(), key.1.clone(), endpoints, state));
                self.backends.insert(key, backend.clone());
                backend
            }
        };
        let path = match &spec.path {
            Some(path) => path.clone(),
            // ingress-nginx's quirk: `proxy_pass` without a path asks for
            // the mirror's internal location.
            None => Template::parse(&format!("/_mirror-{uid}")).ok()?,
        };
        let metrics = self.request_metrics(
            &ingress.namespace,
            &ingress.name,
            &backend.name.service,
            false,
        );
        Some(Arc::new(Mirror {
            backend,
            path,
            host: http::HeaderValue::try_from(spec.host_header.as_str()).ok()?,
            body: spec.body.then(|| {
                policy
                    .request_buffering
                    .unwrap_or(self.defaults.client_body_buffer_size)
            }),
            metrics,
        }))
    }
}
