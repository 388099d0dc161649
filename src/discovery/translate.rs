//! `translate`: a snapshot of Kubernetes objects -> a `RoutingTable` and warnings.
//!
//! Pure and synchronous. Nothing here makes what outlives a table (pools,
//! balancer and retry state, rate limiters, metric handles) or remembers the
//! last good objects: the table names what it needs by key and the caller's
//! home of retained state (`retained`) hands it out. Every problem is local: a
//! bad path, annotation or backend skips that piece with a warning, and the
//! rest of the table is built as usual.
//!
//! Each Ingress is first parsed on its own (`parse_ingress`, no table involved),
//! then inserted. When it has faults of its own (a bad annotation, host or path) and
//! an earlier version of it was valid, that last valid version is served instead:
//! one bad `kubectl apply` must not take a working site down.
//!
//! The parts: `class` (which Ingresses are ours), `parse` (one Ingress on its
//! own), `ownership` (who owns a host and its certificate), `index` (Services,
//! EndpointSlices and Secrets by name, and the endpoint-only update); this file
//! runs the build and inserts routes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::annotations::IngressAnnotations;
use super::retained::{LastGood, Retained};
use super::{ObjectRef, Snapshot, Warning};
use crate::config::{ForeignKey, HostOwnership, ProxyDefaults};
use crate::policy::client_cert::ClientCa;
use crate::policy::ratelimit::{LimitSpec, Limiter};
use crate::policy::upstream_deny::UpstreamDeny;
use crate::routing::certs::{Certificate, TlsCerts};
use crate::routing::edits::Edits;
use crate::telemetry::requests::{MetricsOptions, RequestMetrics};
use crate::upstream::tls::{TlsSpec, UpstreamTls};

use crate::routing::{
    Backend, BackendRef, Canary, ExternalAuth, FilterSpec, Filters, HostKey, HostRoutes,
    IngressRef, Passthrough, Protocol, Route, RoutingTable, TableStats,
};

mod auth;
mod certificates;
mod class;
mod client_certs;
mod faults;
mod gateway;
mod gateway_filters;
mod gateway_listeners;
mod gateway_matches;
mod grpc_routes;
mod headers;
mod hosts;
mod index;
mod mirror;
mod ownership;
mod parse;
mod reference_grants;
mod wire;

pub use class::{ClassSelection, DEFAULT_CONTROLLER_CLASS, DEFAULT_INGRESS_CLASS};
pub use index::{external_name_key, update_endpoints, SERVICE_NAME_LABEL};

use class::select_ours;
use faults::{add_isolated, config_key_warnings, isolated};
use index::{endpoints_for, PodAddrs, SnapshotIndex};
use ownership::HostOwner;
#[cfg(test)]
use parse::PANIC_FOR_TESTS;
use parse::{ingress_object, parse_ingress, Field, ParsedIngress, Wire};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranslateOptions {
    pub defaults: ProxyDefaults,
    /// Serves requests no Ingress matches.
    pub default_backend: Option<BackendRef>,
    /// `namespace/name` of the TLS Secret served when SNI matches nothing.
    pub default_certificate: Option<(String, String)>,
    /// Instances sharing a `limit-scope: cluster` limit.
    pub cluster_instances: u32,
    pub class: ClassSelection,
    pub metrics: MetricsOptions,
    /// Pod addresses never sent to.
    pub upstream_deny: UpstreamDeny,
    /// Who may route a host that another namespace routes.
    pub host_ownership: HostOwnership,
    pub gateway: crate::discovery::gateway::GatewayOptions,
    /// The config file's ingress-nginx keys without a sluice counterpart:
    /// warnings, and a 403 on every route for one that fails closed.
    pub ingress_nginx_keys: Vec<ForeignKey>,
    /// Honour `ssl-passthrough` (`--enable-ssl-passthrough`).
    pub ssl_passthrough: bool,
}

/// What `translate` produced.
#[derive(Debug)]
pub struct Translation {
    pub table: RoutingTable,
    pub warnings: Vec<Warning>,
    /// Ingresses that parsed without faults of their own: the versions to fall
    /// back to if a later edit breaks them.
    pub valid: HashMap<ObjectRef, Arc<Ingress>>,
    /// Every Ingress of our class, valid or not (their status is ours to write).
    pub ours: Vec<ObjectRef>,
    /// Ingresses skipped because they belong to another class.
    pub ignored: usize,
}

pub fn translate(
    snapshot: &Snapshot,
    options: &TranslateOptions,
    retained: &Retained,
    last: &LastGood,
) -> Translation {
    let last_valid = &last.ingresses;
    let mut builder = Builder::new(snapshot, retained, options, last);
    builder.deny_all = config_key_warnings(&options.ingress_nginx_keys, &mut builder.warnings);
    builder.global_auth = builder.global_auth(&options.ingress_nginx_keys);
    builder.cluster_instances = options.cluster_instances.max(1);
    builder.metrics_options = options.metrics;
    let headers =
        headers::ConfigMapHeaders::new(snapshot, &options.defaults, &mut builder.warnings);
    let (ours, ignored) = select_ours(snapshot, &options.class);
    let mut valid = HashMap::new();
    let mut our_refs = Vec::with_capacity(ours.len());
    let mut mains = Vec::new();
    let mut canaries = Vec::new();
    for ingress in ours {
        let object = ingress_object(ingress);
        our_refs.push(object.clone());
        // A bug that only one object's content can reach costs that object, not
        // the table: it is skipped with a warning and the rest is built as usual.
        let parsed = isolated(&object, &mut builder.warnings, || {
            parse_ingress(ingress, &object, &options.defaults, &headers)
        });
        let Some(mut parsed) = parsed else { continue };
        if parsed.faults.is_empty() {
            valid.insert(object, ingress.clone());
        } else if let Some(previous) = last_valid.get(&object).filter(|p| !Arc::ptr_eq(p, ingress))
        {
            let fallback = parse_ingress(previous, &object, &options.defaults, &headers);
            if fallback.faults.is_empty() {
                for fault in &mut parsed.faults {
                    fault.message +=
                        "; serving the last valid version of this Ingress until it is fixed";
                }
                builder.warnings.append(&mut parsed.faults);
                valid.insert(object, previous.clone());
                parsed = fallback;
            }
        }
        if parsed.canary.is_some() {
            canaries.push(parsed);
        } else {
            mains.push(parsed);
        }
    }
    let default_route = options.default_backend.as_ref().map(|backend_ref| {
        let policy = IngressAnnotations::default().policy(&options.defaults);
        let backend = builder.backend(backend_ref.clone(), &Wire::Plain(Protocol::Http1), None);
        Arc::new(Route {
            ingress: IngressRef {
                namespace: backend_ref.namespace.clone(),
                name: String::new(),
                kind: "Ingress",
            },
            metrics: builder.request_metrics(
                &backend_ref.namespace,
                "",
                &backend_ref.service,
                false,
            ),
            backend,
            filters: Filters::new(FilterSpec {
                deny: builder.deny_all.clone(),
                access: (!options.defaults.access.is_empty())
                    .then(|| Arc::new(options.defaults.access.clone())),
                body_limit: policy.body_limit,
                ..FilterSpec::default()
            }),
            fallback: None,
            policy,
        })
    });
    builder.default_route = default_route.clone();
    builder.claim_hosts(&mains);
    builder.claim_client_certs(&mains);
    for parsed in mains {
        let object = parsed.object.clone();
        add_isolated(&mut builder, &object, |b| b.add(parsed));
    }
    // Gateway API's routes, after the Ingresses: an older Ingress keeps a
    // contested host and path.
    // Isolated as each Ingress is: a bug that a route's content reaches
    // costs the Gateway API routes, not the table.
    let mut gateway_api = Vec::new();
    let gateway_object = ObjectRef {
        kind: "HTTPRoute",
        namespace: String::new(),
        name: "(Gateway API)".into(),
    };
    add_isolated(&mut builder, &gateway_object, |b| {
        gateway_api = b.add_http_routes(snapshot, &options.gateway);
    });
    // Canaries attach to the routes of the Ingresses they shadow, so those come first.
    for parsed in canaries {
        let object = parsed.object.clone();
        add_isolated(&mut builder, &object, |b| b.add_canary(parsed));
    }
    if let Some((namespace, name)) = &options.default_certificate {
        match builder.certificate(namespace, name) {
            Ok(certificate) => builder.certs.default = Some(certificate),
            Err(message) => {
                let kept = last.certs.default.clone();
                let suffix = if kept.is_some() {
                    "; keeping the last good one"
                } else {
                    ""
                };
                builder.warnings.push(Warning {
                    file: None,
                    object: Some(ObjectRef {
                        kind: "Secret",
                        namespace: namespace.clone(),
                        name: name.clone(),
                    }),
                    field: None,
                    reason: "invalid-certificate",
                    message: format!("default certificate: {message}{suffix}"),
                });
                builder.certs.default = kept;
            }
        }
    }
    let (mut table, warnings) = builder.finish(default_route);
    table.gateway_api = gateway_api;
    Translation {
        table,
        warnings,
        valid,
        ours: our_refs,
        ignored,
    }
}

struct Builder<'a> {
    index: SnapshotIndex<'a>,
    retained: &'a Retained,
    defaults: &'a ProxyDefaults,
    host_ownership: HostOwnership,
    /// Each host's owner: the namespace that routed it first, and the other
    /// namespaces its Ingresses let in (`sluice.io/allow-namespaces`).
    owners: HashMap<HostKey, HostOwner>,
    certs: TlsCerts,
    previous_certs: &'a TlsCerts,
    /// Each Secret is parsed once per build, however many hosts use it.
    loaded: HashMap<(String, String), Result<Certificate, String>>,
    cluster_instances: u32,
    metrics_options: MetricsOptions,
    backends: HashMap<(BackendRef, Protocol), Arc<Backend>>,
    hosts: BTreeMap<HostKey, HostRoutes>,
    warnings: Vec<Warning>,
    /// Set when a config key fails closed: every route answers 403.
    deny_all: Option<Arc<str>>,
    /// TLS settings for pods, made once per identity in a build.
    upstream_tls: HashMap<TlsSpec, Arc<UpstreamTls>>,
    /// Honour `ssl-passthrough`; the hosts claimed so far.
    ssl_passthrough: bool,
    passthrough: HashMap<String, Passthrough>,
    /// `from-to-www-redirect`: the other name of a host, and its redirect.
    www: Vec<(HostKey, Arc<Route>)>,
    /// The global default backend's route (`custom-http-errors` without a
    /// `default-backend` annotation).
    default_route: Option<Arc<Route>>,
    /// Each host's client-certificate settings (`client_certs`).
    client_certs: client_certs::HostClientCerts,
    /// The config's `global-auth-url`: asked for every route of an Ingress
    /// without its own `auth-url`, unless it says `enable-global-auth: "false"`.
    global_auth: Option<Arc<ExternalAuth>>,
}

impl<'a> Builder<'a> {
    fn new(
        snapshot: &'a Snapshot,
        retained: &'a Retained,
        options: &'a TranslateOptions,
        last: &'a LastGood,
    ) -> Builder<'a> {
        Builder {
            index: SnapshotIndex::new(snapshot, &options.upstream_deny),
            retained,
            defaults: &options.defaults,
            host_ownership: options.host_ownership,
            owners: HashMap::new(),
            certs: TlsCerts::default(),
            previous_certs: &last.certs,
            loaded: HashMap::new(),
            cluster_instances: 1,
            metrics_options: MetricsOptions::default(),
            backends: HashMap::new(),
            hosts: BTreeMap::new(),
            warnings: Vec::new(),
            deny_all: None,
            upstream_tls: HashMap::new(),
            ssl_passthrough: options.ssl_passthrough,
            passthrough: HashMap::new(),
            www: Vec::new(),
            default_route: None,
            client_certs: HashMap::new(),
            global_auth: None,
        }
    }

    fn add(&mut self, mut parsed: ParsedIngress) {
        self.warnings.append(&mut parsed.faults);
        self.warnings.append(&mut parsed.notices);
        let tls_hosts = self.add_tls(&parsed);
        let limiter = parsed
            .limit
            .as_ref()
            .map(|(spec, cluster)| self.limiter(&parsed.ingress, spec, *cluster));
        let conn_limiter = (parsed.limit_connections.as_ref())
            .map(|(max, exempt)| self.retained.conn_limiter(&parsed.ingress, *max, exempt));
        let object = &parsed.object;
        let fallback = parsed
            .fallback
            .clone()
            .map(|b| self.backend(b, &parsed.wire, Some((object, Field::Annotations))));
        let ingress = &parsed.ingress;
        let error_pages = self.error_pages(&parsed, &fallback);
        let external_auth = match &parsed.external_auth {
            Some(spec) => Some(self.external_auth(spec, &parsed.ingress, object)),
            None => self.global_auth.clone().filter(|_| !parsed.no_global_auth),
        };
        let no_auth_locations = &self.defaults.no_auth_locations;
        let basic_auth = parsed
            .basic_auth
            .as_ref()
            .map(|spec| self.basic_auth(spec, object));
        let mirror = parsed
            .mirror
            .as_ref()
            .and_then(|spec| self.mirror(spec, &parsed.ingress, &parsed.policy, object));
        // A config key that fails closed closes every route; else the
        // Ingress's own access annotation may.
        let deny = self.deny_all.clone().or_else(|| parsed.deny.clone());
        let route_to = |backend: Arc<Backend>,
                        metrics: Arc<RequestMetrics>,
                        host: &HostKey,
                        rule_path: &str,
                        edits: &Option<Arc<Edits>>,
                        client_cert: &Option<Result<Arc<ClientCa>, ()>>| {
            let https_redirect = parsed.force_ssl_redirect
                || (parsed.ssl_redirect && tls_hosts.contains(&host.to_string()));
            let mut policy = parsed.policy.clone();
            policy.affinity = policy.affinity.map(|a| a.for_rule(rule_path));
            policy.error_pages = error_pages.clone();
            policy.mirror = mirror.clone();
            // `no-auth-locations`: by the rule's path, as ingress-nginx.
            policy.external_auth = external_auth.clone().filter(|_| {
                !no_auth_locations
                    .iter()
                    .any(|l| rule_path.starts_with(l.as_str()))
            });
            Arc::new(Route {
                metrics,
                ingress: parsed.ingress.clone(),
                backend,
                filters: Filters::new(FilterSpec {
                    deny: deny.clone(),
                    client_cert: client_cert.clone(),
                    cors: parsed.cors.clone(),
                    https_redirect,
                    preserve_trailing_slash: parsed.preserve_trailing_slash,
                    edits: edits.clone(),
                    access: parsed.access.clone(),
                    passwords: basic_auth.clone(),
                    satisfy_any: parsed.satisfy_any,
                    external_auth: policy.external_auth.is_some(),
                    body_limit: policy.body_limit,
                    limiter: limiter.clone(),
                    conn_limiter: conn_limiter.clone(),
                    weighted: None,
                    only_over_tls: None,
                }),
                fallback: fallback.clone(),
                policy,
            })
        };
        for path in &parsed.paths {
            let target = &path.target;
            if !self.check_owner(&path.host, object, target.field) {
                continue;
            }
            let backend = self.backend(
                target.backend.clone(),
                &parsed.wire,
                Some((object, target.field)),
            );
            let metrics = self.request_metrics(
                &ingress.namespace,
                &ingress.name,
                &backend.name.service,
                false,
            );
            if parsed.ssl_passthrough {
                self.add_passthrough(&path.host, &backend, &parsed.policy, object, target.field);
            }
            let client_cert = self.client_cert_for(&path.host, &parsed);
            let root_redirect = parsed.app_root.as_ref().map(|root| {
                let root = Some(root.clone());
                route_to(
                    backend.clone(),
                    metrics.clone(),
                    &path.host,
                    &path.path,
                    &root,
                    &client_cert,
                )
            });
            if let (true, false, HostKey::Exact(name)) =
                (parsed.from_to_www, path.alias, &path.host)
            {
                let other = match name.strip_prefix("www.") {
                    Some(bare) => bare.to_owned(),
                    None => format!("www.{name}"),
                };
                let edits = Some(hosts::www_redirect(name));
                // Only a redirect: the other name's own settings, if any.
                let other_cert = (self.client_certs.get(&HostKey::Exact(other.clone())))
                    .map(|(settings, _)| settings.clone());
                let redirect = route_to(
                    backend.clone(),
                    metrics.clone(),
                    &path.host,
                    "/",
                    &edits,
                    &other_cert,
                );
                self.www.push((HostKey::Exact(other), redirect));
            }
            let route = route_to(
                backend,
                metrics,
                &path.host,
                &path.path,
                &path.edits,
                &client_cert,
            );
            let routes = self.hosts.entry(path.host.clone()).or_default();
            if let Some(redirect) = root_redirect {
                routes.set_root_redirect(redirect);
            }
            match routes.insert(path.kind, &path.path, route) {
                Ok(()) => routes.note(path.location.clone()),
                Err(owner) => {
                    let message = format!(
                    "host {} path {:?} ({:?}) is already served by the older Ingress {}; path skipped",
                    path.host, path.path, path.kind, owner.ingress
                );
                    let field = match target.field {
                        Field::PathBackend { rule, path } => Field::Path { rule, path },
                        other => other,
                    };
                    self.warn(Some((object, field)), "conflict", message);
                }
            }
        }
        if let Some((target, hosts)) = &parsed.default {
            let backend = self.backend(
                target.backend.clone(),
                &parsed.wire,
                Some((object, target.field)),
            );
            let metrics = self.request_metrics(
                &ingress.namespace,
                &ingress.name,
                &backend.name.service,
                false,
            );
            for host in hosts {
                if !self.check_owner(host, object, target.field) {
                    continue;
                }
                let client_cert = self.client_cert_for(host, &parsed);
                let route = route_to(
                    backend.clone(),
                    metrics.clone(),
                    host,
                    "/",
                    &parsed.edits,
                    &client_cert,
                );
                if let Err(owner) = self
                    .hosts
                    .entry(host.clone())
                    .or_default()
                    .set_default(route)
                {
                    let message = format!(
                        "host {host} already has a default backend from the older Ingress {}; ignored",
                        owner.ingress
                    );
                    self.warn(Some((object, target.field)), "conflict", message);
                }
            }
        }
    }

    /// The Ingress's limiter: the same one while the limit is unchanged, so
    /// that a rebuild does not hand every client a fresh budget.
    fn limiter(&mut self, ingress: &IngressRef, spec: &LimitSpec, cluster: bool) -> Arc<Limiter> {
        let mut spec = spec.clone();
        if cluster {
            spec.per_second /= f64::from(self.cluster_instances);
        }
        self.retained.limiter(ingress, spec)
    }

    /// A canary Ingress: its paths join the main Ingress's routes for the same
    /// host and path, which decide per request by the canary's rules.
    fn add_canary(&mut self, mut parsed: ParsedIngress) {
        self.warnings.append(&mut parsed.faults);
        // A canary's other annotations are the main Ingress's business, as in
        // ingress-nginx: its access annotations deny nothing (the main
        // Ingress's filters run first), so say so instead of "fails closed".
        for notice in &mut parsed.notices {
            if notice.reason == "fail-closed" {
                notice.reason = "canary-annotation-ignored";
                notice.message = "on a canary Ingress, access annotations have no effect (the main Ingress's apply, as in ingress-nginx); ignored".into();
            }
        }
        self.warnings.append(&mut parsed.notices);
        let Some(rule) = parsed.canary.take() else {
            return;
        };
        let requests = self.retained.canary_requests(&parsed.ingress);
        for path in &parsed.paths {
            let target = &path.target;
            let site = Some((&parsed.object, target.field));
            let backend = self.backend(target.backend.clone(), &parsed.wire, site);
            let ingress = &parsed.ingress;
            let canary = Arc::new(Canary {
                metrics: self.request_metrics(
                    &ingress.namespace,
                    &ingress.name,
                    &backend.name.service,
                    true,
                ),
                ingress: parsed.ingress.clone(),
                backend,
                rule: rule.clone(),
                requests: requests.clone(),
            });
            let main = self
                .hosts
                .get_mut(&path.host)
                .and_then(|routes| routes.route_at_mut(path.kind, &path.path));
            let refusal = match main {
                None => Some((
                    "canary-without-main",
                    format!(
                        "no main Ingress serves host {} path {:?} ({:?}); canary path ignored",
                        path.host, path.path, path.kind
                    ),
                )),
                // A canary takes a share of the main Ingress's traffic: only the
                // main Ingress's own namespace may do that.
                Some(main) if main.ingress.namespace != ingress.namespace => Some((
                    "canary-cross-namespace",
                    format!(
                        "host {} path {:?} is served by Ingress {}/{}; a canary from namespace {} cannot attach to another namespace's Ingress; canary path refused",
                        path.host, path.path, main.ingress.namespace, main.ingress.name, ingress.namespace
                    ),
                )),
                Some(main) => {
                    let mut with_canary = (**main).clone();
                    with_canary.filters = main.filters.with_canary(canary);
                    *main = Arc::new(with_canary);
                    None
                }
            };
            if let Some((reason, message)) = refusal {
                self.warn(Some((&parsed.object, target.field)), reason, message);
            }
        }
    }

    fn warn(&mut self, site: Option<(&ObjectRef, Field)>, reason: &'static str, message: String) {
        self.warnings.push(Warning {
            file: None,
            object: site.map(|s| s.0.clone()),
            field: site.map(|s| s.1.to_string()),
            reason,
            message,
        });
    }

    /// The request metrics of one label set, shared by every path that has it.
    fn request_metrics(
        &mut self,
        namespace: &str,
        ingress: &str,
        service: &str,
        canary: bool,
    ) -> Arc<RequestMetrics> {
        self.retained
            .request_metrics((namespace, ingress, service, canary), self.metrics_options)
    }

    /// The backend for a Service port. A missing Service or port still yields a
    /// backend (with no endpoints: 503, as ingress-nginx answers) plus a warning, so
    /// the route starts working as soon as the Service appears.
    fn backend(
        &mut self,
        backend_ref: BackendRef,
        wire: &Wire,
        site: Option<(&ObjectRef, Field)>,
    ) -> Arc<Backend> {
        let protocol = match wire {
            Wire::Plain(protocol) => protocol.clone(),
            Wire::Tls(tls) => match self.upstream_tls(tls, &backend_ref) {
                Ok(protocol) => protocol,
                Err(message) => {
                    // Closed: no pod is spoken to without the TLS asked for.
                    let message =
                        format!("backend {backend_ref}: TLS to the pods: {message}; answering 503");
                    self.warn(site, "invalid-upstream-tls", message);
                    let budget = (
                        self.defaults.retry_budget_ratio,
                        self.defaults.retry_budget_min_per_second,
                    );
                    let state = self.retained.backend(&backend_ref, Protocol::Http1, budget);
                    return Arc::new(Backend::new(
                        backend_ref,
                        Protocol::Http1,
                        Vec::new(),
                        state,
                    ));
                }
            },
        };
        let key = (backend_ref, protocol);
        if let Some(backend) = self.backends.get(&key) {
            return backend.clone();
        }
        let addrs = match self.index.endpoint_addrs(&key.0) {
            Ok(PodAddrs { addrs, refused }) => {
                if !refused.is_empty() {
                    let message = format!(
                        "backend {}: refusing pod addresses {}",
                        key.0,
                        refused.join(", ")
                    );
                    self.warn(site, "endpoint-refused", message);
                }
                addrs
            }
            Err((reason, message)) => {
                self.warn(
                    site,
                    reason,
                    format!("backend {}: {message}; answering 503", key.0),
                );
                Vec::new()
            }
        };
        let namespace: Arc<str> = key.0.namespace.as_str().into();
        let protocol = key.1.clone();
        let endpoints = endpoints_for(&namespace, addrs, protocol.clone(), self.retained);
        let budget = (
            self.defaults.retry_budget_ratio,
            self.defaults.retry_budget_min_per_second,
        );
        let state = self.retained.backend(&key.0, protocol.clone(), budget);
        let backend = Arc::new(Backend::new(key.0.clone(), protocol, endpoints, state));
        self.backends.insert(key, backend.clone());
        backend
    }

    fn finish(mut self, default_route: Option<Arc<Route>>) -> (RoutingTable, Vec<Warning>) {
        self.finish_hosts();
        let client_cas = self.client_cas();
        let stats = TableStats {
            hosts: 0,
            routes: self.hosts.values().map(HostRoutes::route_count).sum(),
            backends: self.backends.len(),
        };
        let backends = self.backends.into_values().collect();
        let mut table = RoutingTable::new(self.hosts, backends, default_route, stats);
        table.unrouted = self
            .retained
            .request_metrics(("", "", "", false), self.metrics_options);
        table.client_cas = client_cas;
        table.tls = self.certs;
        table.passthrough = self.passthrough;
        (table, self.warnings)
    }
}

#[cfg(test)]
mod tests;
