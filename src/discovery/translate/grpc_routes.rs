//! A GRPCRoute is served as the HTTPRoute it amounts to: a gRPC call is an
//! HTTP/2 POST to `/SERVICE/METHOD`, so a method match is a path match
//! (`Exact` for service and method, `PathPrefix` for a service), header
//! matches and filters carry over as they are, and the backends are spoken
//! to over HTTP/2 (`gateway::add_rule`).
//!
//! A method without its service, and a `RegularExpression` method match,
//! are `RegularExpression` paths. A name the spec does not allow is kept as
//! a field sluice does not act on, so its rule is skipped with a warning,
//! never routed more broadly.

use serde_json::Value;

use crate::discovery::gateway::{
    GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, HttpRoute, HttpRouteMatch, HttpRouteRule,
    HttpRouteSpec, PathMatch,
};

pub(super) fn as_http_route(route: &GrpcRoute) -> HttpRoute {
    let rules = route
        .spec
        .rules
        .iter()
        .map(|rule| HttpRouteRule {
            matches: rule.matches.iter().map(as_http_match).collect(),
            filters: rule.filters.clone(),
            backend_refs: rule.backend_refs.clone(),
            other: rule.other.clone(),
            ..HttpRouteRule::default()
        })
        .collect();
    HttpRoute {
        metadata: route.metadata.clone(),
        spec: HttpRouteSpec {
            parent_refs: route.spec.parent_refs.clone(),
            hostnames: route.spec.hostnames.clone(),
            rules,
            other: route.spec.other.clone(),
        },
    }
}

fn as_http_match(matched: &GrpcRouteMatch) -> HttpRouteMatch {
    let mut other = matched.other.clone();
    let path = match &matched.method {
        None => None,
        Some(method) => match method_path(method) {
            Ok(path) => Some(path),
            Err(why) => {
                other.insert(format!("method ({why})"), Value::Null);
                None
            }
        },
    };
    HttpRouteMatch {
        path,
        headers: matched.headers.clone(),
        other,
        ..HttpRouteMatch::default()
    }
}

/// The path of a method match, or why it has none.
fn method_path(method: &GrpcMethodMatch) -> Result<PathMatch, &'static str> {
    let service = method.service.as_deref().filter(|s| !s.is_empty());
    let name = method.method.as_deref().filter(|m| !m.is_empty());
    if method.kind.as_deref().is_some_and(|k| k != "Exact") {
        if method.kind.as_deref() != Some("RegularExpression") {
            return Err("a method match type the spec does not define");
        }
        // Each part a pattern of its own, any one where it is left out.
        let part = |p: Option<&str>| p.map_or("[^/]+".to_owned(), |p| format!("(?:{p})"));
        return Ok(PathMatch {
            kind: Some("RegularExpression".into()),
            value: Some(format!("/{}/{}", part(service), part(name))),
        });
    }
    let (kind, value) = match (service, name) {
        (Some(service), Some(name)) if valid_service(service) && valid_method(name) => {
            ("Exact", format!("/{service}/{name}"))
        }
        (Some(service), None) if valid_service(service) => ("PathPrefix", format!("/{service}")),
        (None, Some(name)) if valid_method(name) => ("RegularExpression", format!("/[^/]+/{name}")),
        (None, None) => return Err("neither service nor method"),
        _ => return Err("a service or method name the spec does not allow"),
    };
    Ok(PathMatch {
        kind: Some(kind.into()),
        value: Some(value),
    })
}

/// The spec's service pattern: dot-separated identifiers, an optional
/// leading dot.
fn valid_service(service: &str) -> bool {
    let service = service.strip_prefix('.').unwrap_or(service);
    service.len() <= 1024 && !service.is_empty() && service.split('.').all(identifier)
}

fn valid_method(method: &str) -> bool {
    method.len() <= 1024 && identifier(method)
}

fn identifier(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::discovery::manifests::snapshot_from_str;

    /// The fields of each match sluice does not act on.
    fn unserved(route: &HttpRoute) -> Vec<BTreeMap<String, Value>> {
        let rules = route.spec.rules.iter();
        rules
            .flat_map(|r| r.matches.iter().map(|m| m.other.clone()))
            .collect()
    }

    #[test]
    fn method_matches_become_paths_and_the_rest_is_named() {
        let (snapshot, warnings) = snapshot_from_str(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  rules:
  - matches:
    - method: {service: grpc.health.v1.Health, method: Check}
      headers: [{name: x-route, value: b}]
    - method: {service: grpc.health.v1.Health}
    - method: {method: Check}
    - method: {type: RegularExpression, service: "grpc.*"}
    - method: {service: "a/../b", method: Check}
    - {}
"#,
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let route = as_http_route(&snapshot.grpc_routes[0]);
        let paths: Vec<Option<(String, String)>> = route.spec.rules[0]
            .matches
            .iter()
            .map(|m| {
                m.path
                    .as_ref()
                    .map(|p| (p.kind.clone().unwrap(), p.value.clone().unwrap()))
            })
            .collect();
        let path = |kind: &str, value: &str| Some((kind.to_owned(), value.to_owned()));
        assert_eq!(
            paths,
            [
                path("Exact", "/grpc.health.v1.Health/Check"),
                path("PathPrefix", "/grpc.health.v1.Health"),
                path("RegularExpression", "/[^/]+/Check"),
                path("RegularExpression", "/(?:grpc.*)/[^/]+"),
                None,
                None,
            ]
        );
        assert_eq!(route.spec.rules[0].matches[0].headers.len(), 1);
        let unserved: Vec<usize> = unserved(&route).iter().map(BTreeMap::len).collect();
        assert_eq!(unserved, [0, 0, 0, 0, 1, 0]);
    }
}
