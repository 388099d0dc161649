//! Gateway API listeners: which serve (the published ports, protocols,
//! HTTPS certificates), the status each gets, which routes they admit
//! (`allowedRoutes`), and the spec's hostname intersection.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::reference_grants::{From, Grants};
use super::Builder;
use crate::discovery::gateway::{self, Gateway, GatewayOptions, Listener};
use crate::discovery::ObjectRef;
use crate::routing::certs::Certificate;
use crate::routing::gateway_status::{Condition, ObjectStatus, PartStatus};
use crate::routing::HostKey;

/// The listener ports sluice publishes, whatever address it binds: 80 for
/// HTTP, 443 for HTTPS, unless `gateway-http-port` and `gateway-https-port`
/// say otherwise.
pub(super) fn published_port(listener: &Listener, options: &GatewayOptions) -> Option<u16> {
    match listener.protocol.as_str() {
        "HTTP" => Some(options.http_port),
        "HTTPS" => Some(options.https_port),
        _ => None,
    }
}

/// The certificates of HTTPS listeners without a hostname, by (Gateway
/// namespace, Gateway, listener): each serves the hosts of the routes
/// attached to it (`gateway::attached_hosts`).
pub(super) type ListenerCerts = BTreeMap<(String, String, String), Certificate>;

/// Why a listener is not served: its condition's type, reason and text.
type Problem = (&'static str, &'static str, String);

impl Builder<'_> {
    /// Listeners sluice cannot serve say so (the spec's `Accepted: False`);
    /// an HTTPS listener's certificate joins the table's.
    pub(super) fn check_listeners(
        &mut self,
        gateway: &Gateway,
        (grants, options): (&Grants<'_>, &GatewayOptions),
        certs: &mut ListenerCerts,
    ) -> ObjectStatus {
        let object = gateway_object(gateway);
        let mut parts = Vec::new();
        self.ignored(&object, "spec", &gateway.spec.other);
        // Listeners that are not distinct (one port, one hostname) are all
        // `Conflicted`, and none of them is served, as the spec says.
        let mut seen: BTreeMap<(u16, String), usize> = BTreeMap::new();
        for listener in &gateway.spec.listeners {
            let hostname = listener
                .hostname
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase();
            *seen.entry((listener.port, hostname)).or_default() += 1;
        }
        for (i, listener) in gateway.spec.listeners.iter().enumerate() {
            let field = format!("spec.listeners[{i}]");
            self.ignored(&object, &field, &listener.other);
            let hostname = listener
                .hostname
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if seen.get(&(listener.port, hostname)).is_some_and(|n| *n > 1) {
                let message = format!(
                    "listener {:?}: another listener has its port and hostname; neither is served",
                    listener.name
                );
                self.warn_at(&object, field, "gateway-listener", message.clone());
                let conditions = vec![
                    Condition::holds("Conflicted", "HostnameConflict"),
                    Condition::fails("Accepted", "HostnameConflict", message),
                    Condition::fails("Programmed", "Invalid", String::new()),
                ];
                parts.push(PartStatus::new(listener.name.clone(), conditions));
                continue;
            }
            let problem = match (listener.protocol.as_str(), published_port(listener, options)) {
                ("HTTP" | "HTTPS", Some(port)) if listener.port != port => Some(("Accepted", "PortUnavailable", format!("listener {:?}: port {} is not one sluice publishes; {} listeners use {port}", listener.name, listener.port, listener.protocol))),
                ("HTTPS", _) => {
                    let found = self.listener_certificate(listener, &object, grants);
                    match found {
                        Ok(Some(certificate)) => {
                            let key = (object.namespace.clone(), object.name.clone(), listener.name.clone());
                            certs.insert(key, certificate);
                            None
                        }
                        Ok(None) => None,
                        Err(problem) => Some(problem),
                    }
                }
                ("HTTP", _) => None,
                (other, _) => Some(("Accepted", "UnsupportedProtocol", format!("listener {:?}: protocol {other} is not served yet (HTTP and HTTPS)", listener.name))),
            };
            let conditions = match problem {
                Some((kind, reason, message)) => {
                    self.warn_at(&object, field, "gateway-listener", message.clone());
                    vec![
                        Condition::fails(kind, reason, message),
                        Condition::fails("Programmed", "Invalid", String::new()),
                    ]
                }
                None => vec![
                    Condition::holds("Accepted", "Accepted"),
                    Condition::holds("ResolvedRefs", "ResolvedRefs"),
                    Condition::holds("Programmed", "Programmed"),
                    Condition {
                        status: "False",
                        ..Condition::holds("Conflicted", "NoConflicts")
                    },
                ],
            };
            parts.push(PartStatus {
                attached_routes: Some(0),
                ..PartStatus::new(listener.name.clone(), conditions)
            });
        }
        let programmed = parts.iter().any(PartStatus::programmed);
        let conditions = vec![
            Condition::holds("Accepted", "Accepted"),
            if programmed {
                Condition::holds("Programmed", "Programmed")
            } else {
                Condition::fails("Programmed", "Invalid", "no listener is served".into())
            },
        ];
        ObjectStatus {
            kind: "Gateway",
            namespace: object.namespace,
            name: object.name,
            generation: gateway.metadata.generation,
            conditions,
            parts,
        }
    }

    /// An HTTPS listener's certificate, for its hostname, from a Secret of
    /// the Gateway's own namespace, or of one whose ReferenceGrant allows it.
    fn listener_certificate(
        &mut self,
        listener: &Listener,
        gateway: &ObjectRef,
        grants: &Grants<'_>,
    ) -> Result<Option<Certificate>, Problem> {
        let name = &listener.name;
        let unsupported = |what: String| {
            (
                "Accepted",
                "UnsupportedValue",
                format!("listener {name:?}: {what}"),
            )
        };
        let invalid = |what: String| {
            (
                "ResolvedRefs",
                "InvalidCertificateRef",
                format!("listener {name:?}: {what}"),
            )
        };
        let tls = listener.tls.clone().unwrap_or_default();
        // A TLS setting sluice does not act on (client validation among
        // them) could be access control: the listener is not served.
        if let Some(name) = tls.other.keys().next() {
            return Err(unsupported(format!("tls.{name} is not served yet")));
        }
        if tls.mode.as_deref().is_some_and(|m| m != "Terminate") {
            return Err(unsupported(format!(
                "TLS mode {:?} is not served yet",
                tls.mode
            )));
        }
        let [secret] = tls.certificate_refs.as_slice() else {
            return Err(unsupported("exactly one certificateRef is served".into()));
        };
        let kind_ok = secret.group.as_deref().unwrap_or("").is_empty()
            && secret.kind.as_deref().unwrap_or("Secret") == "Secret";
        if !kind_ok {
            return Err(invalid("the certificate must be a Secret".into()));
        }
        let namespace = secret.namespace.as_deref().unwrap_or(&gateway.namespace);
        let from = From {
            kind: "Gateway",
            namespace: &gateway.namespace,
        };
        if !grants.permit(&from, "Secret", namespace, &secret.name) {
            return Err((
                "ResolvedRefs",
                "RefNotPermitted",
                format!("listener {name:?}: Secret {namespace}/{} is in another namespace, and no ReferenceGrant there lets this Gateway refer to it", secret.name),
            ));
        }
        let Some(host) = listener.hostname.as_deref().map(str::to_ascii_lowercase) else {
            // Without a hostname: the certificate of its routes' hosts.
            let certificate = self
                .certificate(namespace, &secret.name)
                .map_err(|e| invalid(format!("Secret {namespace}/{}: {e}", secret.name)))?;
            return Ok(Some(certificate));
        };
        let key = HostKey::parse(Some(&host))
            .ok_or_else(|| unsupported(format!("{host:?} is not a host name")))?;
        // Another namespace's host keeps its own certificate.
        if let Some(owner) = self
            .owners
            .get(&key)
            .filter(|o| o.namespace != gateway.namespace)
        {
            let what = format!(
                "host {host} was routed first by namespace {}, which provides its certificate",
                owner.namespace
            );
            return Err(invalid(what));
        }
        let certificate = self
            .certificate(namespace, &secret.name)
            .map_err(|e| invalid(format!("Secret {namespace}/{}: {e}", secret.name)))?;
        if !self.certs.insert(&host, certificate) {
            return Err(invalid(format!(
                "host {host} already has a certificate (from an Ingress or an older listener)"
            )));
        }
        Ok(None)
    }
}

pub(super) fn gateway_object(gateway: &Gateway) -> ObjectRef {
    ObjectRef {
        kind: "Gateway",
        namespace: gateway.metadata.namespace.clone().unwrap_or_default(),
        name: gateway.metadata.name.clone().unwrap_or_default(),
    }
}

/// `allowedRoutes`: by namespace (`from`: `Same`, the default; `All`; or
/// `Selector`, over the route namespace's `labels`) and by kind.
pub(super) fn allows(
    listener: &Listener,
    gateway_namespace: &str,
    (route_namespace, labels): (&str, &BTreeMap<String, String>),
    route_kind: &str,
) -> bool {
    // `kinds`: a listener that lists them takes only the kinds named;
    // HTTP and HTTPS listeners take HTTPRoutes and GRPCRoutes otherwise.
    let kinds = listener
        .allowed_routes
        .as_ref()
        .map_or(&[][..], |a| &a.kinds[..]);
    let kind_allowed = kinds.is_empty()
        || kinds.iter().any(|k| {
            k.kind == route_kind && k.group.as_deref().unwrap_or(gateway::GROUP) == gateway::GROUP
        });
    if !kind_allowed {
        return false;
    }
    let namespaces = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => gateway_namespace == route_namespace,
        "Selector" => namespaces
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|s| selects(s, labels)),
        _ => false,
    }
}

/// A namespace's labels, as the apiserver gives every namespace its name
/// label (`kubernetes.io/metadata.name`) even where sluice sees no
/// Namespace object.
pub(super) fn namespace_labels(
    namespaces: &[Arc<Namespace>],
    name: &str,
) -> BTreeMap<String, String> {
    let mut labels = namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), name.to_owned());
    labels
}

/// A label selector's verdict: every `matchLabels` pair and every
/// `matchExpressions` term must hold; an unknown operator selects nothing.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten();
    let by_labels = pairs.into_iter().all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The spec's hostname intersection of a listener and a route: a route
/// without hostnames takes the listener's; a listener without one takes
/// the route's; a wildcard on either side admits the names under it, at
/// any depth (`*.example.com` covers `a.b.example.com`, unlike Ingress).
pub(super) fn intersect(listener: Option<&str>, route: &[String]) -> Vec<HostKey> {
    let parse = |h: &str| HostKey::parse(Some(&h.to_ascii_lowercase())).map(deep);
    let listener = listener.and_then(parse);
    let route: Vec<HostKey> = route.iter().filter_map(|h| parse(h)).collect();
    // Whether wildcard `suffix` covers `name` (a host or another suffix).
    let under = |suffix: &str, name: &str| name.ends_with(&format!(".{suffix}"));
    match (listener, route.is_empty()) {
        (None, true) => vec![HostKey::Any],
        (None, false) => route,
        (Some(l), true) => vec![l],
        (Some(l), false) => route
            .into_iter()
            .filter_map(|r| match (&l, &r) {
                _ if l == r => Some(r),
                (HostKey::DeepWildcard(ls), HostKey::Exact(rh)) if under(ls, rh) => Some(r),
                (HostKey::Exact(lh), HostKey::DeepWildcard(rs)) if under(rs, lh) => Some(l.clone()),
                (HostKey::DeepWildcard(ls), HostKey::DeepWildcard(rs)) if under(ls, rs) => Some(r),
                (HostKey::DeepWildcard(ls), HostKey::DeepWildcard(rs)) if under(rs, ls) => {
                    Some(l.clone())
                }
                _ => None,
            })
            .collect(),
    }
}

/// A Gateway API wildcard covers any number of labels.
fn deep(key: HostKey) -> HostKey {
    match key {
        HostKey::Wildcard(suffix) => HostKey::DeepWildcard(suffix),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_judge_a_namespace_by_its_labels() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"team": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "frozen", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        let namespace = |labels: &[(&str, &str)]| -> Arc<Namespace> {
            let labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut n = Namespace::default();
            n.metadata.name = Some("apps".into());
            n.metadata.labels = Some(labels);
            Arc::new(n)
        };
        let judge = |labels: &[(&str, &str)]| {
            selects(&selector, &namespace_labels(&[namespace(labels)], "apps"))
        };
        assert!(judge(&[("team", "shop"), ("env", "prod")]));
        assert!(!judge(&[("team", "shop"), ("env", "dev")]));
        assert!(!judge(&[
            ("team", "shop"),
            ("env", "prod"),
            ("frozen", "yes")
        ]));
        assert!(!judge(&[("env", "prod")]));
        // Every namespace has its name label, declared or not.
        let by_name: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"kubernetes.io/metadata.name": "other"}}))
        .unwrap();
        assert!(selects(&by_name, &namespace_labels(&[], "other")));
        let odd: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}))
        .unwrap();
        assert!(!selects(&odd, &namespace_labels(&[], "other")));
    }

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let names = |hosts: Vec<HostKey>| hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let route = |hs: &[&str]| hs.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        assert_eq!(names(intersect(None, &[])), ["*"]);
        assert_eq!(names(intersect(Some("a.example"), &[])), ["a.example"]);
        assert_eq!(
            names(intersect(None, &route(&["b.example"]))),
            ["b.example"]
        );
        assert_eq!(
            names(intersect(
                Some("*.example"),
                &route(&["b.example", "c.other"])
            )),
            ["b.example"]
        );
        assert_eq!(
            names(intersect(Some("b.example"), &route(&["*.example"]))),
            ["b.example"]
        );
        // Any depth, unlike an Ingress wildcard.
        assert_eq!(
            names(intersect(Some("*.example"), &route(&["a.b.example"]))),
            ["a.b.example"]
        );
        assert!(matches!(
            intersect(Some("*.example"), &[])[..],
            [HostKey::DeepWildcard(_)]
        ));
        assert_eq!(
            names(intersect(Some("a.example"), &route(&["b.example"]))),
            Vec::<String>::new()
        );
        assert_eq!(
            names(intersect(Some("*.example"), &route(&["*.a.example"]))),
            ["*.a.example"]
        );
    }
}
