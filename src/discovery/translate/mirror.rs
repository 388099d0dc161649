//! `mirror-target`: the target's addresses become a backend of their own
//! (a name is resolved in the background, as an ExternalName's), refused
//! like pods' where they must be, so a tenant's mirror cannot reach what
//! its Services could not.

use std::sync::Arc;

use super::gateway::Unresolved;
use super::index::{endpoints_for, PodAddrs};
use super::parse::{Field, Wire};
use super::reference_grants::Grants;
use super::Builder;
use crate::discovery::annotations::{MirrorSpec, UpstreamTlsAnnotations};
use crate::discovery::gateway::HttpRouteRule;
use crate::discovery::ObjectRef;
use crate::routing::edits::{Template, Var};
use crate::routing::{Backend, BackendRef, IngressRef, Mirror, Protocol, RoutePolicy};

impl Builder<'_> {
    /// The backend of a service named by a URL (`mirror-target`,
    /// `auth-url`; `key` in warnings), named `LABEL HOST`: its host resolved in the background (or an address),
    /// refused like pods' where they must be; HTTPS without verification
    /// or SNI, as nginx's `proxy_pass https://...`. `None` (with a warning)
    /// when it cannot be spoken to.
    pub(super) fn url_backend(
        &mut self,
        (key, label): (&str, &str),
        host: &str,
        port: u16,
        tls: bool,
        ingress: &IngressRef,
        object: &ObjectRef,
    ) -> Option<Arc<Backend>> {
        let site = Some((object, Field::Annotations));
        let name = BackendRef {
            namespace: ingress.namespace.clone(),
            service: format!("{label} {host}"),
            port: port.to_string(),
            via_service_ip: false,
        };
        let protocol = if tls {
            let tls = UpstreamTlsAnnotations {
                name: Some(host.to_owned()),
                ..UpstreamTlsAnnotations::default()
            };
            match self.upstream_tls(&tls, &name) {
                Ok(protocol) => protocol,
                Err(message) => {
                    self.warn(site, "invalid-url-target", format!("{key}: {message}"));
                    return None;
                }
            }
        } else {
            Protocol::Http1
        };
        let key_of = (name, protocol);
        if let Some(backend) = self.backends.get(&key_of) {
            return Some(backend.clone());
        }
        let addrs = match self.index.host_addrs(host, port) {
            Ok(PodAddrs { addrs, refused }) => {
                if !refused.is_empty() {
                    let message = format!("{key}: refusing addresses {}", refused.join(", "));
                    self.warn(site, "endpoint-refused", message);
                }
                addrs
            }
            Err((reason, message)) => {
                self.warn(site, reason, format!("{key}: {message}"));
                Vec::new()
            }
        };
        let namespace: Arc<str> = key_of.0.namespace.as_str().into();
        let endpoints = endpoints_for(&namespace, addrs, key_of.1.clone(), self.retained);
        let budget = (
            self.defaults.retry_budget_ratio,
            self.defaults.retry_budget_min_per_second,
        );
        let state = self.retained.backend(&key_of.0, key_of.1.clone(), budget);
        let backend = Arc::new(Backend::new(
            key_of.0.clone(),
            key_of.1.clone(),
            endpoints,
            state,
        ));
        self.backends.insert(key_of, backend.clone());
        Some(backend)
    }

    /// The mirror of an Ingress's routes; `None` (with a warning) when its
    /// target cannot be spoken to.
    pub(super) fn mirror(
        &mut self,
        (spec, uid): &(MirrorSpec, String),
        ingress: &IngressRef,
        policy: &RoutePolicy,
        object: &ObjectRef,
    ) -> Option<Arc<Mirror>> {
        let backend = self.url_backend(
            ("mirror-target", "mirror"),
            &spec.host,
            spec.port,
            spec.tls,
            ingress,
            object,
        )?;
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
            host: Some(http::HeaderValue::try_from(spec.host_header.as_str()).ok()?),
            body: spec.body.then(|| {
                policy
                    .request_buffering
                    .unwrap_or(self.defaults.client_body_buffer_size)
            }),
            metrics,
        }))
    }

    /// The mirror of an HTTPRoute rule's `RequestMirror` filter: copies of
    /// its requests, body and all (as `mirror-request-body`'s default), to a
    /// Service port resolved as its `backendRefs` are. One mirror per rule,
    /// of every request: more, or a share of requests, cannot be honoured.
    pub(super) fn gateway_mirror(
        &mut self,
        rule: &HttpRouteRule,
        object: &ObjectRef,
        grants: &Grants<'_>,
        wire: &Wire,
        index: usize,
    ) -> Result<Option<Arc<Mirror>>, Unresolved> {
        let unserved = |message: String| Unresolved {
            reason: "unsupported-filter",
            spec_reason: "UnsupportedValue",
            message,
        };
        let mut mirrors = rule.filters.iter().filter(|f| f.kind == "RequestMirror");
        let Some(filter) = mirrors.next() else {
            return Ok(None);
        };
        if mirrors.next().is_some() {
            return Err(unserved(
                "more than one RequestMirror is not served yet".into(),
            ));
        }
        let Some(spec) = &filter.request_mirror else {
            return Err(unserved("RequestMirror without its settings".into()));
        };
        if let Some(name) = spec.other.keys().next() {
            return Err(unserved(format!("RequestMirror {name} is not served yet")));
        }
        let target = self.resolve_backend(&spec.backend_ref, &object.namespace, grants)?;
        let site = Some((object, Field::Rule(index)));
        let backend = self.backend(target.clone(), wire, site);
        let metrics = self.request_metrics(&object.namespace, &object.name, &target.service, false);
        Ok(Some(Arc::new(Mirror {
            backend,
            path: Template::var(Var::RequestUri),
            host: None,
            body: Some(self.defaults.client_body_buffer_size),
            metrics,
        })))
    }
}
