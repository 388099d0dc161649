//! The HTTPRoutes an Ingress amounts to, where they exist (what
//! ingress2gateway does), made from sluice's own translation: the hosts,
//! paths and backends the table serves for the Ingress, so the suggestion
//! means what sluice serves today.
//!
//! Only an Ingress whose meaning Gateway API can carry gets one: no
//! annotation sluice acts on (a body limit, a rewrite, an allow-list...
//! would be lost), no wildcard host (an Ingress wildcard covers one label,
//! a Gateway API one any number), backends that are Service ports. Each
//! host becomes one HTTPRoute; a host with TLS is attached to the
//! Gateway's `https` listener, and its plain-HTTP side redirects there
//! with 308, as ingress-nginx's `ssl-redirect` does.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{json, Value};

use crate::discovery::annotations::split_key;
use crate::discovery::Snapshot;
use crate::routing::{BackendRef, PathKind, Route, RoutingTable};

/// One path of a host and its backend; no path for the host's default
/// backend.
type Rule = (Option<(PathKind, String)>, BackendRef);

/// The Gateway the suggested routes attach to: `(namespace, name)`.
pub type GatewayName<'a> = (&'a str, &'a str);

/// The HTTPRoutes of one Ingress, or why it has none.
pub fn suggest(
    ingress: &Ingress,
    table: &RoutingTable,
    snapshot: &Snapshot,
    gateway: GatewayName<'_>,
) -> Result<Vec<Value>, String> {
    let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
    let name = ingress.metadata.name.as_deref().unwrap_or_default();
    let annotations = ingress.metadata.annotations.iter().flatten();
    let acted_on: Vec<&str> = annotations
        .filter(|(key, _)| split_key(key).is_some())
        .map(|(key, _)| key.as_str())
        .collect();
    if !acted_on.is_empty() {
        return Err(format!(
            "{} would be lost: Gateway API has no equivalent sluice serves",
            acted_on.join(", ")
        ));
    }
    let ours = |route: &Route| {
        route.ingress.kind == "Ingress"
            && route.ingress.namespace == namespace
            && route.ingress.name == name
    };
    let mut hosts: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for (host, routes) in table.hosts() {
        for (kind, path, _, route) in routes.iter() {
            if ours(route) {
                let rule = (Some((kind, path.to_owned())), route.backend.name.clone());
                hosts.entry(host.clone()).or_default().push(rule);
            }
        }
        if let Some(route) = routes.default_route().filter(|r| ours(r)) {
            let rule = (None, route.backend.name.clone());
            hosts.entry(host.clone()).or_default().push(rule);
        }
    }
    if hosts.is_empty() {
        return Err("sluice serves no path of it".into());
    }
    let tls_hosts: Vec<&str> = (ingress.spec.iter())
        .flat_map(|s| s.tls.iter().flatten())
        .flat_map(|t| t.hosts.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut routes = Vec::new();
    for (host, rules) in hosts {
        if host.starts_with("*.") {
            return Err(format!(
                "host {host}: an Ingress wildcard covers one label, a Gateway API one any number"
            ));
        }
        let mut http_rules = Vec::new();
        for (path, backend) in rules {
            let port = port_number(&backend, snapshot)?;
            let mut rule = json!({"backendRefs": [{"name": backend.service, "port": port}]});
            if let Some((kind, path)) = path {
                let kind = match kind {
                    PathKind::Exact => "Exact",
                    PathKind::Prefix => "PathPrefix",
                    PathKind::Regex => "RegularExpression",
                };
                rule["matches"] = json!([{"path": {"type": kind, "value": path}}]);
            }
            http_rules.push(rule);
        }
        let tls = tls_hosts.contains(&host.as_str());
        let label = if host == "*" {
            "any-host".to_owned()
        } else {
            host.replace('.', "-")
        };
        let hostnames: Vec<&str> = (host != "*").then_some(host.as_str()).into_iter().collect();
        let route = |suffix: &str, section: &str, rules: Value| {
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": format!("{name}-{label}{suffix}"), "namespace": namespace},
                "spec": {
                    "parentRefs": [{"name": gateway.1, "namespace": gateway.0, "sectionName": section}],
                    "hostnames": hostnames,
                    "rules": rules,
                },
            })
        };
        if tls {
            routes.push(route("", "https", json!(http_rules)));
            let redirect = json!([{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 308}}]}]);
            routes.push(route("-redirect", "http", redirect));
        } else {
            routes.push(route("", "http", json!(http_rules)));
        }
    }
    Ok(routes)
}

/// A backend's port as a number: as written, or its Service's port of that
/// name.
fn port_number(backend: &BackendRef, snapshot: &Snapshot) -> Result<u16, String> {
    if let Ok(number) = backend.port.parse() {
        return Ok(number);
    }
    let service = snapshot.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(backend.namespace.as_str())
            && s.metadata.name.as_deref() == Some(backend.service.as_str())
    });
    let ports = service.and_then(|s| s.spec.as_ref()?.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(backend.port.as_str()))
        .and_then(|p| u16::try_from(p.port).ok())
        .ok_or_else(|| {
            format!(
                "Service {}/{} port {:?}: a named port of a Service sluice cannot see",
                backend.namespace, backend.service, backend.port
            )
        })
}
