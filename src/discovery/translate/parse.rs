//! One Ingress on its own, checked and reduced to what the table needs; no
//! table involved, so a fault here is the Ingress's own.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::headers::ConfigMapHeaders;
use super::index::namespace_of;
use crate::config::ProxyDefaults;
use crate::discovery::annotations::{
    BasicAuthSpec, ClientCertSpec, ExternalAuthSpec, IngressAnnotations, MirrorSpec,
    UpstreamTlsAnnotations,
};
use crate::discovery::{ObjectRef, Warning};
use crate::policy::access::AccessList;
use crate::policy::canary::{CanaryRule, Cidr};
use crate::policy::cors::Cors;
use crate::policy::ratelimit::LimitSpec;
use crate::routing::edits::{Edits, Step};
use crate::routing::regex_paths::Location;
use crate::routing::{BackendRef, HostKey, IngressRef, PathKind, Protocol, RoutePolicy};

pub(super) fn ingress_object(ingress: &Ingress) -> ObjectRef {
    ObjectRef {
        kind: "Ingress",
        namespace: namespace_of(&ingress.metadata).to_owned(),
        name: ingress.metadata.name.clone().unwrap_or_default(),
    }
}

/// An Ingress, checked and reduced to what the table needs.
pub(super) struct ParsedIngress {
    pub(super) object: ObjectRef,
    pub(super) ingress: IngressRef,
    pub(super) policy: RoutePolicy,
    /// How its pods are spoken to.
    pub(super) wire: Wire,
    /// `default-backend` annotation: serves when a rule's Service has no endpoints.
    pub(super) fallback: Option<BackendRef>,
    pub(super) paths: Vec<ParsedPath>,
    /// `spec.defaultBackend`, and the hosts it serves.
    pub(super) default: Option<(BackendTarget, BTreeSet<HostKey>)>,
    /// `spec.tls`: hosts and the Secret holding their certificate.
    pub(super) tls: Vec<(Vec<String>, Option<String>)>,
    /// Plain HTTP for a TLS host gets a redirect (`ssl-redirect`, default true).
    pub(super) ssl_redirect: bool,
    /// Plain HTTP gets a redirect even without TLS (`force-ssl-redirect`).
    pub(super) force_ssl_redirect: bool,
    /// This is a canary Ingress, with these rules.
    pub(super) canary: Option<CanaryRule>,
    /// Its rate limit, and whether it is cluster-wide.
    pub(super) limit: Option<(LimitSpec, bool)>,
    /// Namespaces that may route this Ingress's hosts too (`host-ownership: namespace`).
    pub(super) allow_namespaces: BTreeSet<String>,
    /// Problems of the Ingress itself (not of the Services it names).
    pub(super) faults: Vec<Warning>,
    /// Annotations sluice does not do as ingress-nginx does: warnings, not
    /// faults (the Ingress is served, or fails closed).
    pub(super) notices: Vec<Warning>,
    /// The annotation that makes every rule of this Ingress answer 403.
    pub(super) deny: Option<Arc<str>>,
    /// Its snippets, compiled.
    pub(super) edits: Option<Arc<Edits>>,
    /// `ssl-passthrough`.
    pub(super) ssl_passthrough: bool,
    /// `app-root`: the answer to `/` on its hosts.
    pub(super) app_root: Option<Arc<Edits>>,
    /// `from-to-www-redirect`.
    pub(super) from_to_www: bool,
    /// `custom-http-errors`.
    pub(super) custom_errors: Option<Vec<u16>>,
    /// `preserve-trailing-slash` (for the HTTPS redirect).
    pub(super) preserve_trailing_slash: bool,
    /// `mirror-target`, and the Ingress's UID (its internal mirror path).
    pub(super) mirror: Option<(MirrorSpec, String)>,
    /// `limit-connections`, and the addresses it exempts.
    pub(super) limit_connections: Option<(u32, Vec<Cidr>)>,
    /// Its address list, or the ConfigMap's.
    pub(super) access: Option<Arc<AccessList>>,
    /// `auth-type: basic` (the Secret is read by the builder).
    pub(super) basic_auth: Option<BasicAuthSpec>,
    pub(super) client_certs: Option<ClientCertSpec>,
    /// `enable-global-auth: "false"`.
    pub(super) no_global_auth: bool,
    /// `enable-cors`.
    pub(super) cors: Option<Arc<Cors>>,
    /// `satisfy: any`.
    pub(super) satisfy_any: bool,
    /// `auth-url` (the service's backend is built by the builder).
    pub(super) external_auth: Option<ExternalAuthSpec>,
}

impl ParsedIngress {
    /// Every host this Ingress routes: its rules' and its default backend's.
    pub(super) fn routed_hosts(&self) -> BTreeSet<&HostKey> {
        let mut hosts: BTreeSet<&HostKey> = self.paths.iter().map(|p| &p.host).collect();
        if let Some((_, default_hosts)) = &self.default {
            hosts.extend(default_hosts);
        }
        hosts
    }
}

#[derive(Clone)]
pub(super) struct ParsedPath {
    pub(super) host: HostKey,
    pub(super) kind: PathKind,
    pub(super) path: String,
    pub(super) target: BackendTarget,
    /// How ingress-nginx's regex mode sees it (`routing::regex_paths`).
    pub(super) location: Location,
    /// The Ingress's edits, and this path's `rewrite-target`.
    pub(super) edits: Option<Arc<Edits>>,
    /// Copied for a `server-alias` (no `from-to-www-redirect` of its own).
    pub(super) alias: bool,
}

/// How an Ingress's pods are spoken to: a plain protocol, or TLS, whose
/// settings become a `Protocol::Tls` once its Secret is read (`translate`).
#[derive(Debug, Clone)]
pub(super) enum Wire {
    Plain(Protocol),
    Tls(UpstreamTlsAnnotations),
}

/// A backend reference and the field it came from, for warnings.
#[derive(Clone)]
pub(super) struct BackendTarget {
    pub(super) backend: BackendRef,
    pub(super) field: Field,
}

/// Where in an Ingress a warning points. Formatted only when a warning is made:
/// building 10,000 Ingresses must not format 10,000 field paths for nothing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    Annotations,
    Path {
        rule: usize,
        path: usize,
    },
    PathBackend {
        rule: usize,
        path: usize,
    },
    DefaultBackend,
    Tls(usize),
    /// An HTTPRoute's rule.
    Rule(usize),
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
            Field::Rule(i) => write!(f, "spec.rules[{i}]"),
        }
    }
}

/// An Ingress name that makes `parse_ingress` fail, to test that one object's
/// failure stays its own.
#[cfg(test)]
pub(super) const PANIC_FOR_TESTS: &str = "panic-for-tests";

pub(super) fn parse_ingress(
    ingress: &Ingress,
    object: &ObjectRef,
    defaults: &ProxyDefaults,
    headers: &ConfigMapHeaders<'_>,
) -> ParsedIngress {
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
            kind: "Ingress",
        },
        policy: IngressAnnotations::default().policy(defaults),
        wire: Wire::Plain(Protocol::default()),
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
        notices: Vec::new(),
        deny: None,
        edits: None,
        ssl_passthrough: false,
        app_root: None,
        from_to_www: false,
        custom_errors: None,
        preserve_trailing_slash: false,
        mirror: None,
        limit_connections: None,
        access: None,
        basic_auth: None,
        client_certs: None,
        no_global_auth: false,
        cors: None,
        satisfy_any: false,
        external_auth: None,
    };
    let fault = |field: String, reason: &'static str, message: String| Warning {
        file: None,
        object: Some(object.clone()),
        field: Some(field),
        reason,
        message,
    };
    let mut annotations = match IngressAnnotations::parse(ingress.metadata.annotations.as_ref()) {
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
    // The config's headers (`hide-headers`, `add-headers`,
    // `proxy-set-headers`), then `custom-headers`, before the Ingress's own
    // edits.
    let mut before = headers.global.clone();
    let mut denied = None;
    if let Some(custom) = &annotations.custom_headers {
        match headers.custom(namespace, custom, &defaults.allowed_response_headers) {
            Ok(steps) => before.extend(steps),
            Err(message) => denied = Some(("custom-headers", "custom-headers-denied", message)),
        }
    }
    if let Some(auth) = &mut annotations.external_auth {
        if let Some(map) = &auth.set_headers_map {
            match headers.for_auth(namespace, map) {
                Ok(mut set) => {
                    set.append(&mut auth.set_headers);
                    auth.set_headers = set;
                }
                Err(message) => {
                    let why = ("auth-proxy-set-headers", "invalid-config-map", message);
                    denied = denied.or(Some(why));
                }
            }
        }
    }
    if denied.is_some() {
        // As ingress-nginx's denied location.
        before = vec![Step::Return {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            text: None,
        }];
    }
    annotations.edits = Edits::around(&annotations.edits, before, Vec::new());
    parsed.notices = annotations
        .notices
        .iter()
        .map(|n| {
            fault(
                format!("metadata.annotations[{:?}]", n.key),
                n.reason,
                n.message.clone(),
            )
        })
        .collect();
    if let Some((key, reason, message)) = denied {
        parsed.notices.push(fault(
            format!("metadata.annotations[{key:?}]"),
            reason,
            format!("{key}: {message}; its routes answer 503, as in ingress-nginx"),
        ));
    }
    parsed.deny = annotations.fail_closed.as_deref().map(|key| {
        format!("403 Forbidden: this Ingress uses {key}, which sluice does not support and which grants or restricts access; denied\n").into()
    });
    parsed.edits = annotations.edits.clone();
    parsed.ssl_passthrough = annotations.ssl_passthrough;
    parsed.app_root = annotations.app_root.clone();
    parsed.from_to_www = annotations.from_to_www;
    parsed.custom_errors = annotations.custom_errors.clone();
    parsed.preserve_trailing_slash = annotations.preserve_trailing_slash;
    parsed.limit_connections = annotations.limit_connections.clone();
    parsed.access = annotations.access.list(&defaults.access);
    parsed.basic_auth = annotations.basic_auth.clone();
    parsed.client_certs = annotations.client_certs.clone();
    parsed.no_global_auth = annotations.no_global_auth;
    parsed.cors = annotations.cors.clone();
    parsed.satisfy_any = annotations.satisfy_any;
    parsed.external_auth = annotations.external_auth.clone();
    parsed.mirror = annotations.mirror.clone().map(|spec| {
        let uid = ingress.metadata.uid.clone().unwrap_or_default();
        (spec, uid)
    });
    parsed.policy = annotations.policy(defaults);
    if annotations.request_buffering.memory.is_some() && parsed.policy.request_buffering.is_none() {
        parsed.notices.push(fault(
            "metadata.annotations[\"client-body-buffer-size\"]".into(),
            "annotation-differs",
            "client-body-buffer-size has no effect while proxy-request-buffering is off: the body streams to the pod as it comes".into(),
        ));
    }
    parsed.ssl_redirect = annotations.ssl_redirect.unwrap_or(defaults.ssl_redirect);
    parsed.canary = annotations.canary.clone();
    parsed.limit = annotations
        .limit
        .clone()
        .map(|spec| (spec, annotations.limit_cluster));
    parsed.force_ssl_redirect = annotations
        .force_ssl_redirect
        .unwrap_or(defaults.force_ssl_redirect);
    parsed.allow_namespaces = annotations.allow_namespaces.iter().cloned().collect();
    parsed.wire = match annotations.upstream_tls.clone() {
        // A Secret of another namespace would lend this tenant someone
        // else's client certificate: refused, as ingress-nginx refuses
        // cross-namespace resources by default.
        Some(tls) if tls.secret.as_ref().is_some_and(|(ns, _)| ns != namespace) => {
            let message =
                "proxy-ssl-secret names a Secret of another namespace; refused, Ingress skipped"
                    .to_owned();
            parsed.faults.push(fault(
                "metadata.annotations".into(),
                "invalid-annotation",
                message,
            ));
            return parsed;
        }
        Some(tls) => Wire::Tls(tls),
        None => Wire::Plain(annotations.backend_protocol.clone().unwrap_or_default()),
    };
    parsed.fallback = annotations
        .default_backend
        .as_ref()
        .map(|(service, port)| BackendRef {
            namespace: namespace.to_owned(),
            service: service.clone(),
            port: port.clone(),
            via_service_ip: false,
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
            let edits = match annotations.rewrite.edits_for(value, &annotations.edits) {
                Ok(edits) => edits,
                Err(message) => {
                    let message = format!("{message}; path skipped");
                    parsed.faults.push(fault(field(), "invalid-path", message));
                    continue;
                }
            };
            let location = Location {
                kind,
                path: value.to_owned(),
                prefix_type: path.path_type == "Prefix",
                regex: annotations.rewrite.regex_for(value),
            };
            let field = Field::PathBackend { rule: ri, path: pi };
            match backend_ref(&path.backend, namespace) {
                Ok(mut backend) => {
                    backend.via_service_ip = annotations.service_upstream;
                    parsed.paths.push(ParsedPath {
                        host: host.clone(),
                        kind,
                        path: value.to_owned(),
                        target: BackendTarget { backend, field },
                        location,
                        edits,
                        alias: false,
                    })
                }
                Err(message) => {
                    parsed
                        .faults
                        .push(fault(field.to_string(), "invalid-backend", message))
                }
            }
        }
    }
    // `server-alias`: the first rule's host answers to these names too
    // (ingress-nginx gives each alias to the first server that takes it).
    if let Some(first) = parsed.paths.first().map(|p| p.host.clone()) {
        for alias in &annotations.aliases {
            let Some(alias) = HostKey::parse(Some(alias)).filter(|h| *h != first) else {
                let message = format!("server-alias {alias:?} is not a host name; ignored");
                parsed.notices.push(fault(
                    "metadata.annotations".into(),
                    "invalid-alias",
                    message,
                ));
                continue;
            };
            let copies: Vec<ParsedPath> = parsed
                .paths
                .iter()
                .filter(|p| p.host == first)
                .map(|p| ParsedPath {
                    host: alias.clone(),
                    alias: true,
                    ..p.clone()
                })
                .collect();
            parsed.paths.extend(copies);
        }
    }
    if let Some(default_backend) = &spec.default_backend {
        let field = Field::DefaultBackend;
        match backend_ref(default_backend, namespace) {
            Ok(mut backend) => {
                backend.via_service_ip = annotations.service_upstream;
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

pub(super) fn backend_ref(backend: &IngressBackend, namespace: &str) -> Result<BackendRef, String> {
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
        via_service_ip: false,
    })
}
