//! `translate`: a snapshot of Kubernetes objects -> a `RoutingTable` and warnings.
//!
//! Pure and synchronous (the endpoint registry only hands out the long-lived state
//! for each pod address). Every problem is local: a bad path, annotation or backend
//! skips that piece with a warning, and the rest of the table is built as usual.
//!
//! Each Ingress is first parsed on its own (`parse_ingress`, no table involved),
//! then inserted. When it has faults of its own (a bad annotation, host or path) and
//! an earlier version of it was valid, that last valid version is served instead:
//! one bad `kubectl apply` must not take a working site down.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::annotations::IngressAnnotations;
use super::{ObjectRef, Snapshot, Warning};
use crate::balance::EndpointRegistry;
use crate::config::{HostOwnership, ProxyDefaults};
use crate::policy::canary::CanaryRule;
use crate::policy::ratelimit::{LimitSpec, Limiter};
use crate::policy::retry::RetryBudget;
use crate::policy::upstream_deny::UpstreamDeny;
use crate::proxy::tls::{load_certified_key, Certificate, TlsCerts};
use crate::telemetry::requests::{MetricsOptions, RequestMetrics};

use crate::routing::{
    Backend, BackendRef, Canary, Endpoint, HostKey, HostRoutes, IngressRef, PathKind, Protocol,
    Route, RoutePolicy, RoutingTable, TableStats,
};

/// The label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const DEFAULT_INGRESS_CLASS: &str = "sluice";
pub const DEFAULT_CONTROLLER_CLASS: &str = "sluice.io/ingress-controller";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

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
}

/// Which Ingresses are ours, so several fleets can share a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSelection {
    pub ingress_class: String,
    pub controller_class: String,
    pub watch_without_class: bool,
}

impl Default for ClassSelection {
    fn default() -> Self {
        ClassSelection {
            ingress_class: DEFAULT_INGRESS_CLASS.into(),
            controller_class: DEFAULT_CONTROLLER_CLASS.into(),
            watch_without_class: false,
        }
    }
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

/// What earlier builds knew to be good, to fall back on when a later edit breaks.
#[derive(Debug, Default)]
pub struct LastGood {
    /// The last version of each Ingress that had no faults of its own.
    pub ingresses: HashMap<ObjectRef, Arc<Ingress>>,
    /// The certificates the previous table served.
    pub certs: TlsCerts,
    /// The previous table's rate limiters: an unchanged limit keeps its state.
    pub limiters: HashMap<IngressRef, Arc<Limiter>>,
}

pub fn translate(
    snapshot: &Snapshot,
    options: &TranslateOptions,
    endpoints: &EndpointRegistry,
    last: &LastGood,
) -> Translation {
    let last_valid = &last.ingresses;
    let mut builder = Builder::new(snapshot, endpoints, options, last);
    builder.cluster_instances = options.cluster_instances.max(1);
    builder.metrics_options = options.metrics;
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
            parse_ingress(ingress, &object, &options.defaults)
        });
        let Some(mut parsed) = parsed else { continue };
        if parsed.faults.is_empty() {
            valid.insert(object, ingress.clone());
        } else if let Some(previous) = last_valid.get(&object).filter(|p| !Arc::ptr_eq(p, ingress))
        {
            let fallback = parse_ingress(previous, &object, &options.defaults);
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
    builder.claim_hosts(&mains);
    for parsed in mains {
        let object = parsed.object.clone();
        add_isolated(&mut builder, &object, |b| b.add(parsed));
    }
    // Canaries attach to the routes of the Ingresses they shadow, so those come first.
    for parsed in canaries {
        let object = parsed.object.clone();
        add_isolated(&mut builder, &object, |b| b.add_canary(parsed));
    }
    let default_route = options.default_backend.as_ref().map(|backend_ref| {
        let backend = builder.backend(backend_ref.clone(), Protocol::Http1, None);
        Arc::new(Route {
            ingress: IngressRef {
                namespace: backend_ref.namespace.clone(),
                name: String::new(),
            },
            metrics: builder.request_metrics(
                &backend_ref.namespace,
                "",
                &backend_ref.service,
                false,
            ),
            backend,
            canary: None,
            limiter: None,
            fallback: None,
            policy: IngressAnnotations::default().policy(&options.defaults),
        })
    });
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
    let (table, warnings) = builder.finish(default_route);
    Translation {
        table,
        warnings,
        valid,
        ours: our_refs,
        ignored,
    }
}

/// Runs one object's part of a build; if it panics (a bug only that object's
/// content reaches), the object gets an `internal-error` warning and `None`.
fn isolated<T>(
    object: &ObjectRef,
    warnings: &mut Vec<Warning>,
    work: impl FnOnce() -> T,
) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(done) => Some(done),
        Err(panic) => {
            warnings.push(internal_error(object, panic.as_ref()));
            None
        }
    }
}

/// `isolated` for adding an object to the table being built. What it added
/// before failing stays: each route is whole, and the rest of the table is not
/// touched.
fn add_isolated(builder: &mut Builder<'_>, object: &ObjectRef, add: impl FnOnce(&mut Builder<'_>)) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| add(&mut *builder)));
    if let Err(panic) = result {
        builder
            .warnings
            .push(internal_error(object, panic.as_ref()));
    }
}

fn internal_error(object: &ObjectRef, panic: &(dyn std::any::Any + Send)) -> Warning {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic");
    Warning {
        file: None,
        object: Some(object.clone()),
        field: None,
        reason: "internal-error",
        message: format!("sluice failed on this object ({what}); skipped, please report it"),
    }
}

/// Our Ingresses, oldest first (on a conflict the first to claim a rule keeps it),
/// and how many belong to someone else.
fn select_ours<'s>(
    snapshot: &'s Snapshot,
    class: &ClassSelection,
) -> (Vec<&'s Arc<Ingress>>, usize) {
    let ours_by_name = |name: &str| {
        snapshot.ingress_classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                    == Some(&class.controller_class)
        })
    };
    let default_class = snapshot.ingress_classes.iter().any(|c| {
        c.metadata.name.as_deref() == Some(&class.ingress_class)
            && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                == Some(&class.controller_class)
            && annotation(&c.metadata, DEFAULT_CLASS_ANNOTATION) == Some("true")
    });
    let is_ours = |ingress: &Ingress| {
        if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return ours_by_name(name);
        }
        if let Some(legacy) = annotation(&ingress.metadata, LEGACY_CLASS_ANNOTATION) {
            return legacy == class.ingress_class;
        }
        default_class || class.watch_without_class
    };
    let mut ours: Vec<&Arc<Ingress>> = snapshot.ingresses.iter().filter(|i| is_ours(i)).collect();
    let ignored = snapshot.ingresses.len() - ours.len();
    ours.sort_by(|a, b| {
        let key = |i: &'s Ingress| {
            let m = &i.metadata;
            (
                m.creation_timestamp.as_ref(),
                m.namespace.as_deref(),
                m.name.as_deref(),
            )
        };
        key(a).cmp(&key(b))
    });
    (ours, ignored)
}

/// Whether a TLS host (`a.example`, `*.example`) covers a routed host, as
/// ingress-nginx matches `spec.tls` hosts to rule hosts.
fn covers(tls: &HostKey, routed: &HostKey) -> bool {
    match (tls, routed) {
        (HostKey::Wildcard(suffix), HostKey::Exact(host)) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        _ => tls == routed,
    }
}

fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn ingress_object(ingress: &Ingress) -> ObjectRef {
    ObjectRef {
        kind: "Ingress",
        namespace: namespace_of(&ingress.metadata).to_owned(),
        name: ingress.metadata.name.clone().unwrap_or_default(),
    }
}

#[derive(Debug)]
struct HostOwner {
    namespace: String,
    allowed: BTreeSet<String>,
}

/// An Ingress, checked and reduced to what the table needs.
struct ParsedIngress {
    object: ObjectRef,
    ingress: IngressRef,
    policy: RoutePolicy,
    protocol: Protocol,
    /// `default-backend` annotation: serves when a rule's Service has no endpoints.
    fallback: Option<BackendRef>,
    paths: Vec<ParsedPath>,
    /// `spec.defaultBackend`, and the hosts it serves.
    default: Option<(BackendTarget, BTreeSet<HostKey>)>,
    /// `spec.tls`: hosts and the Secret holding their certificate.
    tls: Vec<(Vec<String>, Option<String>)>,
    /// Plain HTTP for a TLS host gets a redirect (`ssl-redirect`, default true).
    ssl_redirect: bool,
    /// Plain HTTP gets a redirect even without TLS (`force-ssl-redirect`).
    force_ssl_redirect: bool,
    /// This is a canary Ingress, with these rules.
    canary: Option<CanaryRule>,
    /// Its rate limit, and whether it is cluster-wide.
    limit: Option<(LimitSpec, bool)>,
    /// Namespaces that may route this Ingress's hosts too (`host-ownership: namespace`).
    allow_namespaces: BTreeSet<String>,
    /// Problems of the Ingress itself (not of the Services it names).
    faults: Vec<Warning>,
}

impl ParsedIngress {
    /// Every host this Ingress routes: its rules' and its default backend's.
    fn routed_hosts(&self) -> BTreeSet<&HostKey> {
        let mut hosts: BTreeSet<&HostKey> = self.paths.iter().map(|p| &p.host).collect();
        if let Some((_, default_hosts)) = &self.default {
            hosts.extend(default_hosts);
        }
        hosts
    }
}

struct ParsedPath {
    host: HostKey,
    kind: PathKind,
    path: String,
    target: BackendTarget,
}

/// A backend reference and the field it came from, for warnings.
struct BackendTarget {
    backend: BackendRef,
    field: Field,
}

/// Where in an Ingress a warning points. Formatted only when a warning is made:
/// building 10,000 Ingresses must not format 10,000 field paths for nothing.
#[derive(Debug, Clone, Copy)]
enum Field {
    Annotations,
    Path { rule: usize, path: usize },
    PathBackend { rule: usize, path: usize },
    DefaultBackend,
    Tls(usize),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Annotations => f.write_str("metadata.annotations"),
            Field::Path { rule, path } => write!(f, "spec.rules[{rule}].http.paths[{path}]"),
            Field::PathBackend { rule, path } => {
                write!(f, "spec.rules[{rule}].http.paths[{path}].backend")
            }
            Field::DefaultBackend => f.write_str("spec.defaultBackend"),
            Field::Tls(i) => write!(f, "spec.tls[{i}]"),
        }
    }
}

/// An Ingress name that makes `parse_ingress` fail, to test that one object's
/// failure stays its own.
#[cfg(test)]
const PANIC_FOR_TESTS: &str = "panic-for-tests";

fn parse_ingress(ingress: &Ingress, object: &ObjectRef, defaults: &ProxyDefaults) -> ParsedIngress {
    #[cfg(test)]
    #[allow(clippy::panic)]
    if object.name == PANIC_FOR_TESTS {
        panic!("failing as the test asked");
    }
    let namespace = object.namespace.as_str();
    let mut parsed = ParsedIngress {
        object: object.clone(),
        ingress: IngressRef {
            namespace: namespace.to_owned(),
            name: object.name.clone(),
        },
        policy: IngressAnnotations::default().policy(defaults),
        protocol: Protocol::default(),
        fallback: None,
        paths: Vec::new(),
        default: None,
        tls: Vec::new(),
        ssl_redirect: true,
        force_ssl_redirect: false,
        canary: None,
        limit: None,
        allow_namespaces: BTreeSet::new(),
        faults: Vec::new(),
    };
    let fault = |field: String, reason: &'static str, message: String| Warning {
        file: None,
        object: Some(object.clone()),
        field: Some(field),
        reason,
        message,
    };
    let annotations = match IngressAnnotations::parse(ingress.metadata.annotations.as_ref()) {
        Ok(a) => a,
        Err(error) => {
            let message = format!("{error}; Ingress skipped");
            parsed.faults.push(fault(
                "metadata.annotations".into(),
                "invalid-annotation",
                message,
            ));
            return parsed;
        }
    };
    parsed.policy = annotations.policy(defaults);
    parsed.ssl_redirect = annotations.ssl_redirect.unwrap_or(true);
    parsed.canary = annotations.canary.clone();
    parsed.limit = annotations
        .limit
        .clone()
        .map(|spec| (spec, annotations.limit_cluster));
    parsed.force_ssl_redirect = annotations.force_ssl_redirect.unwrap_or(false);
    parsed.allow_namespaces = annotations.allow_namespaces.iter().cloned().collect();
    parsed.protocol = annotations.backend_protocol.unwrap_or_default();
    parsed.fallback = annotations
        .default_backend
        .as_ref()
        .map(|(service, port)| BackendRef {
            namespace: namespace.to_owned(),
            service: service.clone(),
            port: port.clone(),
        });
    let Some(spec) = &ingress.spec else {
        parsed.faults.push(fault(
            "spec".into(),
            "invalid-ingress",
            "no spec; Ingress skipped".into(),
        ));
        return parsed;
    };

    for tls in spec.tls.iter().flatten() {
        let hosts = tls
            .hosts
            .iter()
            .flatten()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        parsed.tls.push((hosts, tls.secret_name.clone()));
    }
    let mut hosts = BTreeSet::new();
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        let Some(host) = HostKey::parse(rule.host.as_deref()) else {
            let host = rule.host.as_deref().unwrap_or_default();
            let message = format!("invalid host {host:?}; rule skipped");
            parsed.faults.push(fault(
                format!("spec.rules[{ri}].host"),
                "invalid-host",
                message,
            ));
            continue;
        };
        hosts.insert(host.clone());
        let paths = rule.http.iter().flat_map(|http| http.paths.iter());
        for (pi, path) in paths.enumerate() {
            let field = || Field::Path { rule: ri, path: pi }.to_string();
            let kind = match path.path_type.as_str() {
                "Exact" => PathKind::Exact,
                "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
                other => {
                    let message = format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific; path skipped");
                    parsed.faults.push(fault(field(), "invalid-path", message));
                    continue;
                }
            };
            let value = path.path.as_deref().unwrap_or("/");
            if !value.starts_with('/') {
                let message = format!("path {value:?} must start with '/'; path skipped");
                parsed.faults.push(fault(field(), "invalid-path", message));
                continue;
            }
            let field = Field::PathBackend { rule: ri, path: pi };
            match backend_ref(&path.backend, namespace) {
                Ok(backend) => parsed.paths.push(ParsedPath {
                    host: host.clone(),
                    kind,
                    path: value.to_owned(),
                    target: BackendTarget { backend, field },
                }),
                Err(message) => {
                    parsed
                        .faults
                        .push(fault(field.to_string(), "invalid-backend", message))
                }
            }
        }
    }
    if let Some(default_backend) = &spec.default_backend {
        let field = Field::DefaultBackend;
        match backend_ref(default_backend, namespace) {
            Ok(backend) => {
                // It serves the Ingress's own hosts; without rules, every host.
                if hosts.is_empty() {
                    hosts.insert(HostKey::Any);
                }
                parsed.default = Some((BackendTarget { backend, field }, hosts));
            }
            Err(message) => {
                parsed
                    .faults
                    .push(fault(field.to_string(), "invalid-backend", message))
            }
        }
    }
    parsed
}

fn backend_ref(backend: &IngressBackend, namespace: &str) -> Result<BackendRef, String> {
    let service = backend
        .service
        .as_ref()
        .ok_or("resource backends are not supported; skipped")?;
    let port = service
        .port
        .as_ref()
        .and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()))
        .ok_or_else(|| {
            format!(
                "service {:?} has no port number or name; skipped",
                service.name
            )
        })?;
    Ok(BackendRef {
        namespace: namespace.to_owned(),
        service: service.name.clone(),
        port,
    })
}

struct Builder<'a> {
    index: SnapshotIndex<'a>,
    registry: &'a EndpointRegistry,
    defaults: &'a ProxyDefaults,
    host_ownership: HostOwnership,
    /// Each host's owner: the namespace that routed it first, and the other
    /// namespaces its Ingresses let in (`sluice.io/allow-namespaces`).
    owners: HashMap<HostKey, HostOwner>,
    certs: TlsCerts,
    previous_certs: &'a TlsCerts,
    /// Each Secret is parsed once per build, however many hosts use it.
    loaded: HashMap<(String, String), Result<Certificate, String>>,
    last_limiters: &'a HashMap<IngressRef, Arc<Limiter>>,
    limiters: HashMap<IngressRef, Arc<Limiter>>,
    cluster_instances: u32,
    metrics_options: MetricsOptions,
    /// One `RequestMetrics` per label set, shared by all paths that have it.
    metrics: HashMap<(String, String, String, bool), Arc<RequestMetrics>>,
    backends: HashMap<(BackendRef, Protocol), Arc<Backend>>,
    hosts: BTreeMap<HostKey, HostRoutes>,
    warnings: Vec<Warning>,
}

impl<'a> Builder<'a> {
    fn new(
        snapshot: &'a Snapshot,
        registry: &'a EndpointRegistry,
        options: &'a TranslateOptions,
        last: &'a LastGood,
    ) -> Builder<'a> {
        Builder {
            index: SnapshotIndex::new(snapshot, &options.upstream_deny),
            registry,
            defaults: &options.defaults,
            host_ownership: options.host_ownership,
            owners: HashMap::new(),
            certs: TlsCerts::default(),
            previous_certs: &last.certs,
            loaded: HashMap::new(),
            last_limiters: &last.limiters,
            limiters: HashMap::new(),
            cluster_instances: 1,
            metrics_options: MetricsOptions::default(),
            metrics: HashMap::new(),
            backends: HashMap::new(),
            hosts: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Records each host's owner: the first namespace (oldest Ingress first)
    /// to route it, and whom the owner's Ingresses let in.
    fn claim_hosts(&mut self, mains: &[ParsedIngress]) {
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
    fn may_route(&self, host: &HostKey, namespace: &str) -> Result<(), &str> {
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
    fn check_owner(&mut self, host: &HostKey, object: &ObjectRef, field: Field) -> bool {
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

    fn add(&mut self, mut parsed: ParsedIngress) {
        self.warnings.append(&mut parsed.faults);
        let tls_hosts = self.add_tls(&parsed);
        let limiter = parsed
            .limit
            .as_ref()
            .map(|(spec, cluster)| self.limiter(&parsed.ingress, spec, *cluster));
        let object = &parsed.object;
        let fallback = parsed
            .fallback
            .clone()
            .map(|b| self.backend(b, parsed.protocol, Some((object, Field::Annotations))));
        let ingress = &parsed.ingress;
        let route_to = |backend: Arc<Backend>, metrics: Arc<RequestMetrics>, host: &HostKey| {
            let mut policy = parsed.policy.clone();
            policy.https_redirect = parsed.force_ssl_redirect
                || (parsed.ssl_redirect && tls_hosts.contains(&host.to_string()));
            Arc::new(Route {
                metrics,
                ingress: parsed.ingress.clone(),
                backend,
                canary: None,
                limiter: limiter.clone(),
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
                parsed.protocol,
                Some((object, target.field)),
            );
            let metrics = self.request_metrics(
                &ingress.namespace,
                &ingress.name,
                &backend.name.service,
                false,
            );
            let route = route_to(backend, metrics, &path.host);
            let routes = self.hosts.entry(path.host.clone()).or_default();
            if let Err(owner) = routes.insert(path.kind, &path.path, route) {
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
        if let Some((target, hosts)) = &parsed.default {
            let backend = self.backend(
                target.backend.clone(),
                parsed.protocol,
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
                let route = route_to(backend.clone(), metrics.clone(), host);
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

    /// The Ingress's limiter: the previous table's one when the limit is unchanged,
    /// so that a rebuild does not hand every client a fresh budget.
    fn limiter(&mut self, ingress: &IngressRef, spec: &LimitSpec, cluster: bool) -> Arc<Limiter> {
        let mut spec = spec.clone();
        if cluster {
            spec.per_second /= f64::from(self.cluster_instances);
        }
        let limiter = match self.last_limiters.get(ingress) {
            Some(previous) if *previous.spec() == spec => previous.clone(),
            _ => Arc::new(Limiter::new(spec, &ingress.namespace, &ingress.name)),
        };
        self.limiters.insert(ingress.clone(), limiter.clone());
        limiter
    }

    /// A canary Ingress: its paths join the main Ingress's routes for the same
    /// host and path, which decide per request by the canary's rules.
    fn add_canary(&mut self, mut parsed: ParsedIngress) {
        self.warnings.append(&mut parsed.faults);
        let Some(rule) = parsed.canary.take() else {
            return;
        };
        let labels = [
            ("namespace", parsed.ingress.namespace.clone()),
            ("ingress", parsed.ingress.name.clone()),
        ];
        let requests = metrics::counter!(crate::telemetry::CANARY_REQUESTS, &labels);
        for path in &parsed.paths {
            let target = &path.target;
            let site = Some((&parsed.object, target.field));
            let backend = self.backend(target.backend.clone(), parsed.protocol, site);
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
                    with_canary.canary = Some(canary);
                    *main = Arc::new(with_canary);
                    None
                }
            };
            if let Some((reason, message)) = refusal {
                self.warn(Some((&parsed.object, target.field)), reason, message);
            }
        }
    }

    /// Loads the certificates of an Ingress's `spec.tls`; returns its TLS hosts
    /// (they get HTTPS redirects whether or not their Secret is usable).
    fn add_tls(&mut self, parsed: &ParsedIngress) -> BTreeSet<String> {
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

    /// Why an Ingress of `namespace` that routes `routed` may not provide the
    /// certificate for the TLS host `host`, if it may not.
    fn certificate_refusal(
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

    fn certificate(&mut self, namespace: &str, name: &str) -> Result<Certificate, String> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(loaded) = self.loaded.get(&key) {
            return loaded.clone();
        }
        let loaded = self.index.certificate(namespace, name);
        self.loaded.insert(key, loaded.clone());
        loaded
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
        let options = self.metrics_options;
        self.metrics
            .entry((
                namespace.to_owned(),
                ingress.to_owned(),
                service.to_owned(),
                canary,
            ))
            .or_insert_with(|| {
                Arc::new(RequestMetrics::new(
                    namespace, ingress, service, canary, options,
                ))
            })
            .clone()
    }

    /// The backend for a Service port. A missing Service or port still yields a
    /// backend (with no endpoints: 503, as ingress-nginx answers) plus a warning, so
    /// the route starts working as soon as the Service appears.
    fn backend(
        &mut self,
        backend_ref: BackendRef,
        protocol: Protocol,
        site: Option<(&ObjectRef, Field)>,
    ) -> Arc<Backend> {
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
        let endpoints = endpoints_for(&namespace, addrs, protocol, self.registry);
        let budget = RetryBudget::new(
            self.defaults.retry_budget_ratio,
            self.defaults.retry_budget_min_per_second,
        );
        let backend =
            Arc::new(Backend::new(key.0.clone(), protocol, endpoints).with_retry_budget(budget));
        self.backends.insert(key, backend.clone());
        backend
    }

    fn finish(self, default_route: Option<Arc<Route>>) -> (RoutingTable, Vec<Warning>) {
        let stats = TableStats {
            hosts: 0,
            routes: self.hosts.values().map(HostRoutes::route_count).sum(),
            backends: self.backends.len(),
        };
        let backends = self.backends.into_values().collect();
        let mut table = RoutingTable::new(self.hosts, backends, default_route, stats);
        table.unrouted = RequestMetrics::unrouted(self.metrics_options);
        table.tls = self.certs;
        table.limiters = self.limiters;
        (table, self.warnings)
    }
}

fn endpoints_for(
    namespace: &Arc<str>,
    addrs: Vec<SocketAddr>,
    protocol: Protocol,
    registry: &EndpointRegistry,
) -> Vec<Endpoint> {
    registry
        .endpoints(namespace, &addrs, protocol)
        .into_iter()
        .map(|state| Endpoint { state })
        .collect()
}

/// Recomputes the endpoints of every backend of the given Services in `table`, in
/// place. This is the cheap path for pod churn: its cost follows the number of
/// backends of those Services, not the size of the table. Returns how many
/// backends it touched.
pub fn update_endpoints(
    table: &RoutingTable,
    snapshot: &Snapshot,
    services: &BTreeSet<(String, String)>,
    registry: &EndpointRegistry,
    deny: &UpstreamDeny,
) -> usize {
    let index = SnapshotIndex::for_services(snapshot, deny, services);
    let mut touched = 0;
    let mut replaced = Vec::new();
    for (namespace, service) in services {
        for backend in table.backends_of(namespace, service) {
            let PodAddrs { addrs, refused } =
                index.endpoint_addrs(&backend.name).unwrap_or_default();
            if !refused.is_empty() {
                // A full rebuild turns this into a warning on the Ingress; here,
                // between rebuilds, the log says it at once.
                tracing::warn!(backend = %backend.name, refused = ?refused, "pod addresses refused");
            }
            let namespace: Arc<str> = namespace.as_str().into();
            let fresh = endpoints_for(&namespace, addrs, backend.protocol, registry);
            let old = backend.swap_endpoints(fresh);
            replaced.extend(
                old.endpoints
                    .iter()
                    .map(|e| (namespace.clone(), e.addr(), backend.protocol)),
            );
            touched += 1;
        }
    }
    // Only the pods these Services lost can have become unused: check just those,
    // not the whole registry, so the cost follows the size of the change.
    registry.collect(&replaced);
    touched
}

/// A Service port's pod addresses.
#[derive(Debug, Default)]
struct PodAddrs {
    addrs: Vec<SocketAddr>,
    /// Addresses sluice will not send to, each with its reason.
    refused: Vec<String>,
}

/// Services and EndpointSlices by `(namespace, service name)`, Secrets by name.
struct SnapshotIndex<'a> {
    deny: &'a UpstreamDeny,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> SnapshotIndex<'a> {
    fn new(snapshot: &'a Snapshot, deny: &'a UpstreamDeny) -> SnapshotIndex<'a> {
        Self::filtered(snapshot, deny, |_| true)
    }

    fn for_services(
        snapshot: &'a Snapshot,
        deny: &'a UpstreamDeny,
        wanted: &BTreeSet<(String, String)>,
    ) -> SnapshotIndex<'a> {
        let wanted: HashSet<(&str, &str)> = wanted
            .iter()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect();
        Self::filtered(snapshot, deny, |key| wanted.contains(key))
    }

    fn filtered(
        snapshot: &'a Snapshot,
        deny: &'a UpstreamDeny,
        keep: impl Fn(&(&str, &str)) -> bool,
    ) -> SnapshotIndex<'a> {
        let services = snapshot
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    (namespace_of(&s.metadata), s.metadata.name.as_deref()?),
                    &**s,
                ))
            })
            .filter(|(key, _)| keep(key))
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            if let Some(key) = slice_service(slice).filter(|k| keep(k)) {
                slices.entry(key).or_default().push(&**slice);
            }
        }
        let secrets = snapshot
            .secrets
            .iter()
            .filter_map(|s| {
                Some((
                    (namespace_of(&s.metadata), s.metadata.name.as_deref()?),
                    &**s,
                ))
            })
            .collect();
        SnapshotIndex {
            deny,
            secrets,
            services,
            slices,
        }
    }

    /// The certificate in a `kubernetes.io/tls` Secret.
    fn certificate(&self, namespace: &str, name: &str) -> Result<Certificate, String> {
        let secret = self
            .secrets
            .get(&(namespace, name))
            .ok_or("Secret not found")?;
        if secret.type_.as_deref() != Some("kubernetes.io/tls") {
            return Err(format!(
                "type is {:?}, not kubernetes.io/tls",
                secret.type_.as_deref().unwrap_or("")
            ));
        }
        // `data` in a cluster; `stringData` too in a manifests directory.
        let field = |key: &str| -> Option<Vec<u8>> {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()?
                        .get(key)
                        .map(|s| s.as_bytes().to_vec())
                })
        };
        let cert = field("tls.crt").ok_or("no tls.crt")?;
        let key = field("tls.key").ok_or("no tls.key")?;
        let mut certificate = load_certified_key(&cert, &key)?;
        certificate.source = format!("{namespace}/{name}");
        Ok(certificate)
    }

    /// The ready pod addresses behind a Service port, from its EndpointSlices,
    /// and those refused (`UpstreamDeny`) with the reason.
    fn endpoint_addrs(&self, backend: &BackendRef) -> Result<PodAddrs, (&'static str, String)> {
        let key = (backend.namespace.as_str(), backend.service.as_str());
        let service = self
            .services
            .get(&key)
            .ok_or(("service-not-found", "service not found".to_owned()))?;
        let spec = service
            .spec
            .as_ref()
            .ok_or(("invalid-service", "service has no spec".to_owned()))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err((
                "unsupported-backend",
                "ExternalName services are not supported".into(),
            ));
        }
        let service_port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| port_matches(p, &backend.port))
            .ok_or((
                "service-port-not-found",
                format!("service has no port {:?}", backend.port),
            ))?;
        // EndpointSlice ports carry the Service port's name ("" when unnamed) and the
        // resolved target port number.
        let port_name = service_port.name.as_deref().unwrap_or_default();
        let mut addrs = Vec::new();
        let mut refused = Vec::new();
        for slice in self.slices.get(&key).into_iter().flatten() {
            if slice.address_type == "FQDN" {
                continue;
            }
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or_default() == port_name
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(port) = port else { continue };
            for endpoint in slice.endpoints.iter().flatten() {
                // Unset means ready (EndpointSlice API: "should be interpreted as true").
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    match self.deny.refuses(ip) {
                        None => addrs.push(SocketAddr::new(ip, port)),
                        Some(why) => refused.push(format!("{ip} ({why})")),
                    }
                }
            }
        }
        // The same pod may briefly appear in two slices.
        addrs.sort_unstable();
        addrs.dedup();
        refused.sort_unstable();
        refused.dedup();
        Ok(PodAddrs { addrs, refused })
    }
}

/// `(namespace, service)` an EndpointSlice belongs to.
pub fn slice_service(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((namespace_of(&slice.metadata), service.as_str()))
}

fn port_matches(port: &ServicePort, wanted: &str) -> bool {
    match wanted.parse::<i32>() {
        Ok(number) => port.port == number,
        Err(_) => port.name.as_deref() == Some(wanted),
    }
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

#[cfg(test)]
mod tests;
