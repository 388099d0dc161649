//! Gateway API on the same table: HTTPRoutes and GRPCRoutes (as the
//! HTTPRoutes they amount to, `grpc_routes`) attached to the listeners of
//! Gateways whose GatewayClass names sluice's controller become `Route`s
//! beside the Ingresses', with the status sluice writes for them.
//!
//! Here: which listeners take a route (`attached_hosts`: parentRefs,
//! sections, ports, `allowedRoutes`, hostnames) and what each rule becomes
//! (`add_rule`: its matches, `gateway_matches`; its filters,
//! `gateway_filters`; its mirror; its backends, resolved as Service ports
//! of the route's namespace or of one whose ReferenceGrant allows it).
//! Listeners themselves are judged in `gateway_listeners`.
//!
//! Nothing is ignored: a match sluice cannot express skips its rule
//! (routing it more broadly would change what it means), and a filter or
//! `backendRef` it cannot honour makes the rule answer 500, as the spec
//! asks for unresolved filters and references. Each of these is a warning
//! on the route.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::StatusCode;
use k8s_openapi::api::core::v1::Namespace;

use super::gateway_listeners::{allows, intersect, namespace_labels, ListenerCerts};
use super::parse::{Field, Wire};
use super::reference_grants::{From, Grants};
use super::Builder;
use crate::discovery::annotations::IngressAnnotations;
use crate::discovery::gateway::{self, Gateway, GatewayOptions, HttpRoute, HttpRouteRule};
use crate::discovery::{ObjectRef, Snapshot, Warning};
use crate::routing::certs::Certificate;
use crate::routing::edits::{Edits, Step};
use crate::routing::gateway_status::{Condition, ObjectStatus, ParentRef, PartStatus};
use crate::routing::regex_paths::Location;
use crate::routing::weighted::{WeightedBackend, WeightedBackends};
use crate::routing::{
    BackendRef, FilterSpec, Filters, HostKey, IngressRef, PathKind, Protocol, Route, RoutePolicy,
};

impl Builder<'_> {
    /// Adds every HTTPRoute of an accepted Gateway's listeners; returns the
    /// status sluice would write for them and their Gateways.
    pub(super) fn add_http_routes(
        &mut self,
        snapshot: &Snapshot,
        options: &GatewayOptions,
    ) -> Vec<ObjectStatus> {
        let mut statuses = Vec::new();
        let mut classes: BTreeSet<&str> = BTreeSet::new();
        for class in &snapshot.gateway_classes {
            let Some(name) = class.metadata.name.as_deref() else {
                continue;
            };
            if class.spec.controller_name != options.controller_name {
                continue;
            }
            classes.insert(name);
            statuses.push(ObjectStatus {
                kind: "GatewayClass",
                namespace: String::new(),
                name: name.to_owned(),
                generation: class.metadata.generation,
                conditions: vec![
                    Condition::holds("Accepted", "Accepted"),
                    Condition::holds("SupportedVersion", "SupportedVersion"),
                ],
                parts: Vec::new(),
            });
        }
        let gateways: Vec<&Arc<Gateway>> = snapshot
            .gateways
            .iter()
            .filter(|g| classes.contains(g.spec.gateway_class_name.as_str()))
            .collect();
        // (namespace, Gateway, listener) of the listeners that serve.
        let mut accepted = BTreeSet::new();
        let grants = Grants::new(&snapshot.reference_grants);
        let mut listener_certs = ListenerCerts::new();
        for gateway in &gateways {
            let status = self.check_listeners(gateway, (&grants, options), &mut listener_certs);
            for part in &status.parts {
                if part.programmed() {
                    accepted.insert((
                        status.namespace.clone(),
                        status.name.clone(),
                        part.name.clone(),
                    ));
                }
            }
            statuses.push(status);
        }
        // Routes attached to each listener, for its status.
        let mut attached: BTreeMap<(String, String, String), u32> = BTreeMap::new();
        // GRPCRoutes as the HTTPRoutes they amount to (`grpc_routes`).
        let http = snapshot
            .http_routes
            .iter()
            .map(|r| ("HTTPRoute", r.clone()));
        let grpc = (snapshot.grpc_routes.iter())
            .map(|r| ("GRPCRoute", Arc::new(super::grpc_routes::as_http_route(r))));
        let mut routes: Vec<(&'static str, Arc<HttpRoute>)> = http.chain(grpc).collect();
        // Oldest first, as Ingresses, so the older route keeps a contested path.
        routes.sort_by(|(_, a), (_, b)| {
            let key = |r: &HttpRoute| {
                (
                    r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    r.metadata.namespace.clone(),
                    r.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        for (kind, route) in routes {
            let route = &*route;
            let object = ObjectRef {
                kind,
                namespace: route.metadata.namespace.clone().unwrap_or_default(),
                name: route.metadata.name.clone().unwrap_or_default(),
            };
            let (hosts, mut parents) = self.attached_hosts(
                route,
                (&gateways, &accepted, &listener_certs, &snapshot.namespaces),
                &object,
                &mut attached,
            );
            if !parents.is_empty() {
                self.ignored(&object, "spec", &route.spec.other);
            }
            if parents.is_empty() {
                // No parent of sluice's: not ours to serve or to judge.
                continue;
            }
            let mut refs = Condition::holds("ResolvedRefs", "ResolvedRefs");
            if !hosts.is_empty() {
                for (i, rule) in route.spec.rules.iter().enumerate() {
                    if let Some(failed) = self.add_rule(rule, i, &hosts, &object, &grants) {
                        if refs.status == "True" {
                            refs = failed;
                        }
                    }
                }
            }
            for parent in &mut parents {
                parent.conditions.push(refs.clone());
            }
            statuses.push(ObjectStatus {
                kind,
                namespace: object.namespace,
                name: object.name,
                generation: route.metadata.generation,
                conditions: Vec::new(),
                parts: parents,
            });
        }
        for status in statuses.iter_mut().filter(|s| s.kind == "Gateway") {
            for part in &mut status.parts {
                let key = (
                    status.namespace.clone(),
                    status.name.clone(),
                    part.name.clone(),
                );
                part.attached_routes = Some(attached.get(&key).copied().unwrap_or(0));
            }
        }
        statuses
    }

    /// The hosts a route gets from the listeners it attaches to.
    fn attached_hosts(
        &mut self,
        route: &HttpRoute,
        (gateways, accepted, certs, namespaces): Listeners<'_>,
        object: &ObjectRef,
        attached_to: &mut BTreeMap<(String, String, String), u32>,
    ) -> (BTreeMap<HostKey, Over>, Vec<PartStatus>) {
        let labels = &namespace_labels(namespaces, &object.namespace);
        let mut hosts: BTreeMap<HostKey, Over> = BTreeMap::new();
        let mut parents = Vec::new();
        for (i, parent) in route.spec.parent_refs.iter().enumerate() {
            let field = format!("spec.parentRefs[{i}]");
            let is_gateway = parent.group.as_deref().unwrap_or(gateway::GROUP) == gateway::GROUP
                && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway";
            if !is_gateway {
                continue;
            }
            let namespace = parent.namespace.as_deref().unwrap_or(&object.namespace);
            let Some(gateway) = gateways.iter().find(|g| {
                g.metadata.name.as_deref() == Some(parent.name.as_str())
                    && g.metadata.namespace.as_deref() == Some(namespace)
            }) else {
                // Another controller's Gateway, or none: not ours to report.
                continue;
            };
            let mut attached = false;
            // A listener that would take the route but for its hostnames.
            let mut hostnames_only = false;
            // A listener of the section and port the parentRef names.
            let mut named_any = false;
            for listener in &gateway.spec.listeners {
                let named = parent
                    .section_name
                    .as_deref()
                    .is_none_or(|s| s == listener.name);
                let port = parent.port.is_none_or(|p| p == listener.port);
                named_any |= named && port;
                let served = accepted.contains(&(
                    namespace.to_owned(),
                    parent.name.clone(),
                    listener.name.clone(),
                ));
                let route_namespace = (object.namespace.as_str(), labels);
                let allowed = allows(listener, namespace, route_namespace, object.kind);
                if !(named && port && served && allowed) {
                    continue;
                }
                let found = intersect(listener.hostname.as_deref(), &route.spec.hostnames);
                let key = (
                    namespace.to_owned(),
                    parent.name.clone(),
                    listener.name.clone(),
                );
                if !found.is_empty() {
                    *attached_to.entry(key.clone()).or_default() += 1;
                }
                attached |= !found.is_empty();
                hostnames_only |= found.is_empty();
                let tls = listener.protocol == "HTTPS";
                if let Some(certificate) = certs.get(&key) {
                    self.host_certificates(&found, certificate, namespace);
                }
                for host in found {
                    let over = hosts.entry(host).or_default();
                    over.http |= !tls;
                    over.https |= tls;
                }
            }
            let accepted = if attached {
                Condition::holds("Accepted", "Accepted")
            } else {
                let message = format!("no listener of Gateway {namespace}/{} accepts this route (section, port, namespaces or hostnames); not served", parent.name);
                self.warn_at(object, field, "route-not-attached", message.clone());
                let reason = if !named_any {
                    "NoMatchingParent"
                } else if hostnames_only {
                    "NoMatchingListenerHostname"
                } else {
                    "NotAllowedByListeners"
                };
                Condition::fails("Accepted", reason, message)
            };
            let section = parent
                .section_name
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            parents.push(PartStatus {
                parent: Some(ParentRef {
                    namespace: namespace.to_owned(),
                    name: parent.name.clone(),
                    section_name: parent.section_name.clone(),
                    port: parent.port,
                }),
                ..PartStatus::new(
                    format!("Gateway {namespace}/{}{section}", parent.name),
                    vec![accepted],
                )
            });
        }
        (hosts, parents)
    }

    fn add_rule(
        &mut self,
        rule: &HttpRouteRule,
        index: usize,
        hosts: &BTreeMap<HostKey, Over>,
        object: &ObjectRef,
        grants: &Grants<'_>,
    ) -> Option<Condition> {
        let field = format!("spec.rules[{index}]");
        // gRPC is HTTP/2 to the pods; HTTPRoutes' backends get HTTP/1.1.
        let wire = Wire::Plain(match object.kind {
            "GRPCRoute" => Protocol::H2c,
            _ => Protocol::Http1,
        });
        // Where the rule goes; a match sluice cannot express skips it.
        let mut matches = Vec::new();
        for (m, matched) in rule.matches.iter().enumerate() {
            match super::gateway_matches::compile(matched) {
                Ok(compiled) => matches.push(compiled),
                Err((reason, message)) => {
                    self.warn_at(object, format!("{field}.matches[{m}]"), reason, message);
                    return None;
                }
            }
        }
        if matches.is_empty() {
            matches.push(super::gateway_matches::compile(&Default::default()).ok()?);
        }
        // What the rule answers with: its backend, or a 500 for what
        // cannot be honoured.
        let mut refused = None;
        // Each match's edits, made once for all the hosts
        // (`ReplacePrefixMatch` replaces its own prefix).
        let mut match_edits = Vec::new();
        for compiled in &matches {
            let prefix = (compiled.kind == PathKind::Prefix).then_some(compiled.path.as_str());
            match super::gateway_filters::compile(&rule.filters, prefix) {
                Ok(steps) => match_edits.push((!steps.is_empty()).then(|| {
                    Arc::new(Edits {
                        steps,
                        ..Edits::default()
                    })
                })),
                Err(why) => {
                    let message = format!("{why}; the rule answers 500, as the spec asks for filters that cannot be honoured");
                    refused = Some(("unsupported-filter", format!("{field}.filters"), message));
                    break;
                }
            }
        }
        self.ignored(object, &field, &rule.other);
        let persistence = rule.session_persistence.as_ref();
        let (affinity, unserved) = persistence
            .map(super::gateway_filters::session_affinity)
            .unwrap_or_default();
        for why in unserved {
            let at = format!("{field}.sessionPersistence");
            self.warn_at(object, at, "unsupported-field", why);
        }
        let timeouts = rule.timeouts.clone().unwrap_or_default();
        self.ignored(object, &format!("{field}.timeouts"), &timeouts.other);
        let limits = super::gateway_filters::timeouts(&timeouts).unwrap_or_else(|why| {
            let message = format!("{why}; the rule answers 500");
            refused.get_or_insert(("invalid-timeout", format!("{field}.timeouts"), message));
            (None, None)
        });
        // The backends with weight (1 unless said), each a Service port of
        // the route's own namespace; one that is not makes the rule a 500.
        let live: Vec<_> = rule
            .backend_refs
            .iter()
            .filter(|b| b.weight != Some(0))
            .collect();
        let mut targets = Vec::new();
        let mut refs_failed = None;
        for (b, backend) in live.iter().enumerate() {
            self.ignored(object, &format!("{field}.backendRefs[{b}]"), &backend.other);
            match self.resolve_backend(backend, &object.namespace, grants) {
                Ok(target) => targets.push((backend.weight.unwrap_or(1), target)),
                Err(unresolved) => {
                    refs_failed.get_or_insert(Condition::fails(
                        "ResolvedRefs",
                        unresolved.spec_reason,
                        unresolved.message.clone(),
                    ));
                    let message = format!("{}; the rule answers 500", unresolved.message);
                    refused.get_or_insert((
                        unresolved.reason,
                        format!("{field}.backendRefs"),
                        message,
                    ));
                }
            }
        }
        // A redirect answers by itself; any other rule needs a backend.
        let redirects = rule.filters.iter().any(|f| f.kind == "RequestRedirect");
        if live.is_empty() && !redirects {
            let message = "no backend with weight; the rule answers 500".to_owned();
            refused.get_or_insert(("no-backend", format!("{field}.backendRefs"), message));
        }
        let mut policy = IngressAnnotations::default().policy(self.defaults);
        // `backendRequest` bounds each attempt, as `proxy-read-timeout`
        // does; `request` all of them together.
        if let Some(backend) = limits.1 {
            policy.read_timeout = backend;
        }
        if let Some(request) = limits.0 {
            policy.request_timeout = Some(request);
            policy.read_timeout = policy.read_timeout.min(request);
        }
        match self.gateway_mirror(rule, object, grants, &wire, index) {
            Ok(mirror) => policy.mirror = mirror,
            Err(unresolved) => {
                let message = format!("{}; the rule answers 500", unresolved.message);
                let at = format!("{field}.filters");
                refused.get_or_insert((unresolved.reason, at, message));
            }
        }
        let target = targets.first().map(|(_, target)| target.clone());
        let refusal = refused.map(|(reason, at, message)| {
            self.warn_at(object, at, reason, message);
            Arc::new(Edits {
                steps: vec![Step::Return {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    text: None,
                }],
                ..Edits::default()
            })
        });
        let backend_ref = target.unwrap_or_else(|| BackendRef {
            namespace: object.namespace.clone(),
            service: String::new(),
            port: String::new(),
            via_service_ip: false,
        });
        let backend = if refusal.is_some() || targets.is_empty() {
            // Never reached: the rule answers before a backend is chosen.
            let state = self
                .retained
                .backend(&backend_ref, Protocol::Http1, (0.0, 0));
            Arc::new(crate::routing::Backend::new(
                backend_ref.clone(),
                Protocol::Http1,
                Vec::new(),
                state,
            ))
        } else {
            let site = Some((object, Field::Rule(index)));
            self.backend(backend_ref.clone(), &wire, site)
        };
        let ingress = IngressRef {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            kind: object.kind,
        };
        let metrics = self.request_metrics(
            &ingress.namespace,
            &ingress.name,
            &backend_ref.service,
            false,
        );
        // Two or more: one per request by weight, each counted as its own.
        let weighted = if refusal.is_none() && targets.len() > 1 {
            let mut choices = Vec::new();
            for (weight, target) in &targets {
                let site = Some((object, Field::Rule(index)));
                let backend = self.backend(target.clone(), &wire, site);
                let metrics =
                    self.request_metrics(&ingress.namespace, &ingress.name, &target.service, false);
                choices.push(WeightedBackend {
                    weight: *weight,
                    backend,
                    metrics,
                });
            }
            WeightedBackends::new(choices).map(Arc::new)
        } else {
            None
        };
        for (host, over) in hosts {
            // The host's owner decides who routes it (`host-ownership`), and
            // its client certificates guard every route of it, these too.
            if let Err(owner) = self
                .may_route(host, &object.namespace)
                .map_err(str::to_owned)
            {
                let message = format!("host {host} belongs to namespace {owner} (host-ownership: namespace); rule refused");
                self.warn_at(object, field.clone(), "host-owned", message);
                continue;
            }
            let client_cert = self
                .client_certs
                .get(host)
                .map(|(settings, _)| settings.clone());
            for (i, compiled) in matches.iter().enumerate() {
                let (kind, path) = (&compiled.kind, &compiled.path);
                let edits = refusal
                    .clone()
                    .or_else(|| match_edits.get(i).cloned().flatten());
                let route = Arc::new(Route {
                    metrics: metrics.clone(),
                    ingress: ingress.clone(),
                    backend: backend.clone(),
                    filters: Filters::new(FilterSpec {
                        deny: self.deny_all.clone(),
                        client_cert: client_cert.clone(),
                        edits,
                        body_limit: policy.body_limit,
                        weighted: weighted.clone(),
                        // Only the listeners the route is attached to serve it.
                        only_over_tls: (over.http != over.https).then_some(over.https),
                        ..FilterSpec::default()
                    }),
                    fallback: None,
                    policy: RoutePolicy {
                        // The cookie's `Path` is the match's, as an Ingress rule's.
                        affinity: affinity.clone().map(|a| a.for_rule(path)),
                        ..policy.clone()
                    },
                });
                let routes = self.hosts.entry(host.clone()).or_default();
                match routes.insert_guarded(*kind, path, compiled.conditions.clone(), route) {
                    // Only plain paths join ingress-nginx's regex mode.
                    Ok(()) if !compiled.conditions.is_empty() || *kind == PathKind::Regex => {}
                    Ok(()) => routes.note(Location {
                        kind: *kind,
                        path: path.to_string(),
                        prefix_type: *kind == PathKind::Prefix,
                        regex: false,
                    }),
                    Err(owner) => {
                        let message = format!(
                            "host {host} path {path:?} with these conditions is already served by {}/{}; skipped",
                            owner.ingress.namespace, owner.ingress.name
                        );
                        self.warn_at(object, field.clone(), "conflict", message);
                    }
                }
            }
        }
        refs_failed
    }
}

impl Builder<'_> {
    /// Fields sluice does not act on yet: named in a warning, never ignored
    /// silently.
    pub(super) fn ignored(
        &mut self,
        object: &ObjectRef,
        field: &str,
        other: &BTreeMap<String, serde_json::Value>,
    ) {
        if other.is_empty() {
            return;
        }
        let names: Vec<&str> = other.keys().map(String::as_str).collect();
        let message = format!("{} not served yet; ignored", names.join(", "));
        self.warn_at(object, field.to_owned(), "unsupported-field", message);
    }

    pub(super) fn warn_at(
        &mut self,
        object: &ObjectRef,
        field: String,
        reason: &'static str,
        message: String,
    ) {
        self.warnings.push(Warning {
            file: None,
            object: Some(object.clone()),
            field: Some(field),
            reason,
            message,
        });
    }
}

/// Why a `backendRef` cannot be used: the warning's reason, the status
/// condition's reason, and the text of both.
pub(super) struct Unresolved {
    pub(super) reason: &'static str,
    pub(super) spec_reason: &'static str,
    pub(super) message: String,
}

impl Builder<'_> {
    /// A `backendRef` as a Service port that exists and may be referred to.
    pub(super) fn resolve_backend(
        &self,
        backend: &gateway::BackendRef,
        namespace: &str,
        grants: &Grants<'_>,
    ) -> Result<BackendRef, Unresolved> {
        let target = service_port(backend, namespace, grants)?;
        let key = (target.namespace.as_str(), target.service.as_str());
        if !self.index.services.contains_key(&key) {
            return Err(Unresolved {
                reason: "backend-not-found",
                spec_reason: "BackendNotFound",
                message: format!("Service {}/{} does not exist", key.0, key.1),
            });
        }
        Ok(target)
    }
}

/// A `backendRef` as a Service port of the route's namespace, or of one
/// whose ReferenceGrant allows it, or why not.
fn service_port(
    backend: &gateway::BackendRef,
    namespace: &str,
    grants: &Grants<'_>,
) -> Result<BackendRef, Unresolved> {
    let unresolved = |reason, spec_reason, message: String| Unresolved {
        reason,
        spec_reason,
        message,
    };
    let service = backend.group.as_deref().unwrap_or("").is_empty()
        && backend.kind.as_deref().unwrap_or("Service") == "Service";
    if !service {
        let message = "only Service backends are served".into();
        return Err(unresolved("invalid-backend", "InvalidKind", message));
    }
    let target = backend.namespace.as_deref().unwrap_or(namespace);
    let from = From {
        kind: "HTTPRoute",
        namespace,
    };
    if !grants.permit(&from, "Service", target, &backend.name) {
        let message = format!(
            "Service {target}/{} is in another namespace, and no ReferenceGrant there lets this route refer to it",
            backend.name
        );
        return Err(unresolved("ref-not-permitted", "RefNotPermitted", message));
    }
    if !backend.filters.is_empty() {
        let message = "backendRef filters are not served yet".into();
        return Err(unresolved(
            "unsupported-filter",
            "UnsupportedValue",
            message,
        ));
    }
    let Some(port) = backend.port else {
        let message = "a Service backend needs a port".into();
        return Err(unresolved("invalid-backend", "UnsupportedValue", message));
    };
    Ok(BackendRef {
        namespace: target.to_owned(),
        service: backend.name.clone(),
        port: port.to_string(),
        via_service_ip: false,
    })
}

/// The Gateways of sluice's classes, their listeners that serve (by
/// namespace, Gateway, listener), and the certificates of those without a
/// hostname.
type Listeners<'a> = (
    &'a [&'a Arc<Gateway>],
    &'a BTreeSet<(String, String, String)>,
    &'a ListenerCerts,
    &'a [Arc<Namespace>],
);

impl Builder<'_> {
    /// An HTTPS listener without a hostname gives its certificate to the
    /// hosts of the routes attached to it, where no Ingress or older
    /// listener gave one, and no other namespace owns the host.
    fn host_certificates(
        &mut self,
        hosts: &[HostKey],
        certificate: &Certificate,
        gateway_namespace: &str,
    ) {
        // A host's certificate is keyed by its name as written (`*.x` for
        // a wildcard); a route for any host has none of its own.
        for host in hosts.iter().filter(|h| **h != HostKey::Any) {
            if self.may_route(host, gateway_namespace).is_ok() {
                self.certs.insert(&host.to_string(), certificate.clone());
            }
        }
    }
}

/// The listeners that serve a route's host: plain HTTP, HTTPS, or both.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Over {
    pub(super) http: bool,
    pub(super) https: bool,
}
