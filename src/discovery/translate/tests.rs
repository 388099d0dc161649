use std::net::SocketAddr;

use super::*;
use crate::config::PoolConfig;
use crate::discovery::manifests::snapshot_from_str;

/// A Service `name` with port 80 (named `http`) and 8080 (unnamed... in a second
/// Service) plus an EndpointSlice listing `ready` and `not_ready` addresses.
fn service(name: &str, ready: &[&str], not_ready: &[&str]) -> String {
    let endpoints = |addrs: &[&str], ready: bool| {
        addrs
            .iter()
            .map(|a| format!("  - addresses: [\"{a}\"]\n    conditions: {{ready: {ready}}}\n"))
            .collect::<String>()
    };
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{}{}"#,
        endpoints(ready, true),
        endpoints(not_ready, false)
    )
}

fn ingress(name: &str, created: &str, body: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  creationTimestamp: \"{created}\"\n{body}\n"
    )
}

fn build(yaml: &str) -> (RoutingTable, Vec<Warning>) {
    let (snapshot, parse_warnings) = snapshot_from_str(yaml);
    assert!(parse_warnings.is_empty(), "{parse_warnings:?}");
    let registry = EndpointRegistry::new(PoolConfig::default());
    translate(&snapshot, &TranslateOptions::default(), &registry)
}

fn service_of(table: &RoutingTable, host: &str, path: &str) -> Option<String> {
    table
        .route(host, path)
        .map(|r| r.backend.name.service.clone())
}

#[test]
fn rules_resolve_to_ready_endpoints_by_port_name() {
    let yaml = service("web", &["10.0.0.1", "10.0.0.2"], &["10.0.0.3"])
        + &ingress(
            "web",
            "2024-01-01T00:00:00Z",
            r#"spec:
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /by-number, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}"#,
        );
    let (table, warnings) = build(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let route = table.route("shop.example", "/cart").unwrap();
    let addrs: Vec<SocketAddr> = route.backend.endpoints.iter().map(|e| e.addr()).collect();
    let want: Vec<SocketAddr> = vec![
        "10.0.0.1:8080".parse().unwrap(),
        "10.0.0.2:8080".parse().unwrap(),
    ];
    assert_eq!(
        addrs, want,
        "targetPort from the slice, only ready endpoints"
    );
    assert_eq!(
        service_of(&table, "shop.example", "/by-number").as_deref(),
        Some("web")
    );
    assert_eq!(table.stats.routes, 2);
    assert_eq!(
        table.stats.backends, 2,
        "port by name and by number are two backends"
    );
    assert_eq!(table.stats.endpoints, 4);
}

#[test]
fn merged_hosts_and_conflicts_oldest_wins() {
    let yaml = service("a", &["10.0.0.1"], &[])
        + &service("b", &["10.0.0.2"], &[])
        + &ingress(
            "newer",
            "2024-06-01T00:00:00Z",
            r#"spec:
  rules:
  - host: shared.example
    http:
      paths:
      - {path: /x, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}
      - {path: /only-b, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}"#,
        )
        + &ingress(
            "older",
            "2024-01-01T00:00:00Z",
            r#"spec:
  rules:
  - host: shared.example
    http:
      paths:
      - {path: /x, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}"#,
        );
    let (table, warnings) = build(&yaml);
    assert_eq!(
        service_of(&table, "shared.example", "/x/1").as_deref(),
        Some("a")
    );
    assert_eq!(
        service_of(&table, "shared.example", "/only-b").as_deref(),
        Some("b")
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!(w.reason, "conflict");
    assert_eq!(w.object.as_ref().unwrap().name, "newer");
    assert!(w.to_string().contains("default/older"), "{w}");
}

#[test]
fn default_backend_serves_unmatched_paths_of_its_hosts() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &service("fallback", &["10.0.0.9"], &[])
        + &ingress(
            "web",
            "2024-01-01T00:00:00Z",
            r#"spec:
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - host: a.example
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"#,
        );
    let (table, warnings) = build(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        service_of(&table, "a.example", "/app").as_deref(),
        Some("web")
    );
    assert_eq!(
        service_of(&table, "a.example", "/other").as_deref(),
        Some("fallback")
    );
    assert_eq!(
        service_of(&table, "b.example", "/app"),
        None,
        "other hosts are not served"
    );
}

#[test]
fn bad_pieces_are_skipped_and_the_rest_serves() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &ingress(
            "bad-annotation",
            "2024-01-01T00:00:00Z",
            r#"  annotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: forever}
spec:
  rules:
  - host: a.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"#,
        )
        + &ingress(
            "mixed",
            "2024-01-02T00:00:00Z",
            r#"spec:
  rules:
  - host: "bad_host!"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: b.example
    http:
      paths:
      - {path: relative, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /weird, pathType: Regex, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
      - {path: /wrong-port, pathType: Prefix, backend: {service: {name: web, port: {number: 81}}}}
      - {path: /ok, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"#,
        );
    let (table, warnings) = build(&yaml);
    let reasons: Vec<&str> = warnings.iter().map(|w| w.reason).collect();
    assert_eq!(
        reasons,
        [
            "invalid-annotation",
            "invalid-host",
            "invalid-path",
            "invalid-path",
            "service-not-found",
            "service-port-not-found"
        ]
    );
    assert!(warnings[0]
        .to_string()
        .contains("nginx.ingress.kubernetes.io/proxy-read-timeout"));
    assert!(
        warnings[2]
            .to_string()
            .contains("spec.rules[1].http.paths[0]"),
        "{}",
        warnings[2]
    );
    assert_eq!(
        service_of(&table, "a.example", "/"),
        None,
        "the whole Ingress was skipped"
    );
    assert_eq!(
        service_of(&table, "b.example", "/ok").as_deref(),
        Some("web")
    );
    // A missing Service keeps the route, with no endpoints: 503, not 404.
    let missing = table.route("b.example", "/missing").unwrap();
    assert!(missing.backend.endpoints.is_empty());
}

#[test]
fn annotations_set_policy_and_protocol() {
    let yaml = service("grpc", &["10.0.0.5"], &[])
        + &ingress(
            "grpc",
            "2024-01-01T00:00:00Z",
            r#"  annotations:
    nginx.ingress.kubernetes.io/backend-protocol: GRPC
    sluice.io/proxy-read-timeout: "7"
    sluice.io/proxy-body-size: "0"
spec:
  rules:
  - http:
      paths:
      - {path: /, pathType: ImplementationSpecific, backend: {service: {name: grpc, port: {number: 80}}}}"#,
        );
    let (table, warnings) = build(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let route = table.route("anything", "/pkg.Service/Method").unwrap();
    assert_eq!(route.backend.protocol, Protocol::H2c);
    assert_eq!(route.policy.read_timeout, std::time::Duration::from_secs(7));
    assert_eq!(route.policy.body_limit, None);
}

#[test]
fn endpoint_state_survives_a_rebuild() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &ingress(
            "web",
            "2024-01-01T00:00:00Z",
            "spec:\n  defaultBackend: {service: {name: web, port: {number: 80}}}",
        );
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = EndpointRegistry::new(PoolConfig::default());
    let (first, _) = translate(&snapshot, &TranslateOptions::default(), &registry);
    let (second, _) = translate(&snapshot, &TranslateOptions::default(), &registry);
    let state = |t: &RoutingTable| {
        t.route("x", "/").unwrap().backend.endpoints[0]
            .state
            .clone()
    };
    assert!(Arc::ptr_eq(&state(&first), &state(&second)));
    drop((first, second));
    assert_eq!(registry.collect_unused(), 1);
    assert!(registry.is_empty());
}
