use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::config::PoolConfig;
use crate::discovery::gateway::gateway_yaml;
use crate::discovery::manifests::snapshot_from_str;
use crate::routing::RequestFilter;

/// A Service `name` (port 80 named `http`, target 8080) and an EndpointSlice with
/// `ready` and `not_ready` addresses.
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

/// An Ingress routing `/` of `host` to `service`, with extra metadata lines.
fn simple(name: &str, host: &str, service: &str, metadata: &str) -> String {
    ingress(
        name,
        "2024-01-01T00:00:00Z",
        &format!(
            "{metadata}spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}"
        ),
    )
}

fn all_classes() -> TranslateOptions {
    let mut options = TranslateOptions::default();
    options.class.watch_without_class = true;
    options
}

/// Translates with every Ingress counted as ours (class selection has its own test).
fn build(yaml: &str) -> (RoutingTable, Vec<Warning>) {
    let (snapshot, parse_warnings) = snapshot_from_str(yaml);
    assert!(parse_warnings.is_empty(), "{parse_warnings:?}");
    let registry = Retained::new(PoolConfig::default());
    let t = translate(&snapshot, &all_classes(), &registry, &LastGood::default());
    (t.table, t.warnings)
}

fn service_of(table: &RoutingTable, host: &str, path: &str) -> Option<String> {
    table
        .route(host, path)
        .map(|r| r.backend.name.service.clone())
}

fn addrs(backend: &Backend) -> Vec<String> {
    backend
        .endpoints()
        .iter()
        .map(|e| e.addr().to_string())
        .collect()
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
    assert_eq!(
        addrs(&route.backend),
        ["10.0.0.1:8080", "10.0.0.2:8080"],
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
    assert_eq!(table.endpoint_count(), 4);
}

#[test]
fn several_slices_of_one_service_merge() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-second, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ["10.0.0.2"]
- addresses: ["10.0.0.1"]
"# + &simple("web", "a.example", "web", "");
    let (table, _) = build(&yaml);
    let route = table.route("a.example", "/").unwrap();
    assert_eq!(
        addrs(&route.backend),
        ["10.0.0.1:8080", "10.0.0.2:8080"],
        "merged and deduplicated"
    );
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
fn default_backend_annotation_takes_over_without_endpoints() {
    let yaml = service("web", &[], &["10.0.0.1"])
        + &service("errors", &["10.0.0.9"], &[])
        + &simple(
            "web",
            "a.example",
            "web",
            "  annotations: {nginx.ingress.kubernetes.io/default-backend: errors}\n",
        );
    let (table, warnings) = build(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let route = table.route("a.example", "/").unwrap();
    assert_eq!(addrs(route.active_backend()), ["10.0.0.9:8080"]);
}

#[test]
fn bad_pieces_are_skipped_and_the_rest_serves() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &simple(
            "bad-annotation",
            "a.example",
            "web",
            "  annotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: forever}\n",
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
    assert!(missing.backend.endpoints().is_empty());
}

#[test]
fn a_broken_edit_keeps_the_last_valid_version() {
    let services = service("v1", &["10.0.0.1"], &[]) + &service("v2", &["10.0.0.2"], &[]);
    let registry = Retained::new(PoolConfig::default());
    let translate_yaml = |yaml: &str, last: &HashMap<ObjectRef, Arc<Ingress>>| {
        let (snapshot, _) = snapshot_from_str(&(services.clone() + yaml));
        translate(
            &snapshot,
            &all_classes(),
            &registry,
            &LastGood {
                ingresses: last.clone(),
                ..LastGood::default()
            },
        )
    };
    let good = translate_yaml(&simple("app", "a.example", "v1", ""), &HashMap::new());
    assert_eq!(good.valid.len(), 1);

    // Edited to an invalid annotation (and a new backend): v1 keeps serving.
    let broken = simple(
        "app",
        "a.example",
        "v2",
        "  annotations: {sluice.io/proxy-body-size: huge}\n",
    );
    let t = translate_yaml(&broken, &good.valid);
    assert_eq!(
        service_of(&t.table, "a.example", "/").as_deref(),
        Some("v1")
    );
    assert_eq!(t.warnings.len(), 1);
    assert!(
        t.warnings[0].message.contains("last valid version"),
        "{}",
        t.warnings[0]
    );
    assert_eq!(
        t.valid.len(),
        1,
        "the fallback stays the last valid version"
    );

    // Fixed: the new version serves. Without a known good version, nothing does.
    let fixed = translate_yaml(&simple("app", "a.example", "v2", ""), &t.valid);
    assert_eq!(
        service_of(&fixed.table, "a.example", "/").as_deref(),
        Some("v2")
    );
    let fresh = translate_yaml(&broken, &HashMap::new());
    assert_eq!(service_of(&fresh.table, "a.example", "/"), None);
}

#[test]
fn class_selection() {
    let classes = r#"---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: sluice}
spec: {controller: sluice.io/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: internal, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: sluice.io/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
"#;
    let ingresses = [
        ("by-class", "spec:\n  ingressClassName: sluice\n"),
        (
            "other-name-same-controller",
            "spec:\n  ingressClassName: internal\n",
        ),
        ("other-controller", "spec:\n  ingressClassName: nginx\n"),
        ("unknown-class", "spec:\n  ingressClassName: nope\n"),
        (
            "legacy",
            "  annotations: {kubernetes.io/ingress.class: sluice}\nspec: {}\n",
        ),
        (
            "legacy-other",
            "  annotations: {kubernetes.io/ingress.class: nginx}\nspec: {}\n",
        ),
        ("no-class", "spec: {}\n"),
    ];
    let mut yaml = classes.to_owned() + &service("web", &["10.0.0.1"], &[]);
    for (name, body) in ingresses {
        let body = body.replace("spec:\n", "").replace("spec: {}\n", "");
        let host = format!("{name}.example");
        let spec_class = ingresses
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| {
                b.lines()
                    .find(|l| l.contains("ingressClassName"))
                    .unwrap_or("")
            })
            .unwrap_or("");
        let metadata = if body.contains("annotations") {
            body.clone()
        } else {
            String::new()
        };
        let mut ing = simple(name, &host, "web", &metadata);
        if !spec_class.is_empty() {
            ing = ing.replace("spec:\n", &format!("spec:\n{spec_class}\n"));
        }
        yaml += &ing;
    }
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = Retained::new(PoolConfig::default());
    let served = |options: &TranslateOptions| {
        let t = translate(&snapshot, options, &registry, &LastGood::default());
        assert!(
            t.warnings.is_empty(),
            "ignored Ingresses are not warned about: {:?}",
            t.warnings
        );
        let mut names: Vec<&str> = ingresses
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| t.table.route(&format!("{n}.example"), "/").is_some())
            .collect();
        names.sort();
        (names, t.ignored)
    };
    // `sluice` is not the default class here: Ingresses without one are not ours.
    let (names, ignored) = served(&TranslateOptions::default());
    assert_eq!(names, ["by-class", "legacy", "other-name-same-controller"]);
    assert_eq!(ignored, 4);

    let mut without_class = TranslateOptions::default();
    without_class.class.watch_without_class = true;
    assert_eq!(
        served(&without_class).0,
        [
            "by-class",
            "legacy",
            "no-class",
            "other-name-same-controller"
        ]
    );

    // Our class as the default one takes Ingresses without a class too.
    let mut internal = TranslateOptions::default();
    internal.class.ingress_class = "internal".into();
    assert_eq!(
        served(&internal).0,
        ["by-class", "no-class", "other-name-same-controller"]
    );
}

#[test]
fn endpoint_updates_touch_only_that_service_in_place() {
    let registry = Retained::new(PoolConfig::default());
    let before = service("web", &["10.0.0.1"], &[]) + &service("api", &["10.0.0.5"], &[]);
    let ingresses =
        simple("web", "web.example", "web", "") + &simple("api", "api.example", "api", "");
    let (snapshot, _) = snapshot_from_str(&(before + &ingresses));
    let table = translate(&snapshot, &all_classes(), &registry, &LastGood::default()).table;
    let web = table.route("web.example", "/").unwrap().backend.clone();
    let api_endpoints = table
        .route("api.example", "/")
        .unwrap()
        .backend
        .endpoint_set()
        .clone();

    let after =
        service("web", &["10.0.0.1", "10.0.0.2"], &[]) + &service("api", &["10.0.0.6"], &[]);
    let (snapshot, _) = snapshot_from_str(&(after + &ingresses));
    let changed = BTreeSet::from([("default".to_owned(), "web".to_owned())]);
    assert_eq!(
        update_endpoints(
            &table,
            &snapshot,
            &changed,
            &registry,
            &UpstreamDeny::default()
        ),
        1
    );
    assert_eq!(addrs(&web), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    let api = &table.route("api.example", "/").unwrap().backend;
    assert!(
        Arc::ptr_eq(&api.endpoint_set(), &api_endpoints),
        "api was not touched"
    );
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
    let registry = Retained::new(PoolConfig::default());
    let first = translate(&snapshot, &all_classes(), &registry, &LastGood::default()).table;
    let second = translate(&snapshot, &all_classes(), &registry, &LastGood::default()).table;
    let state = |t: &RoutingTable| {
        t.route("x", "/").unwrap().backend.endpoints()[0]
            .state
            .clone()
    };
    assert!(Arc::ptr_eq(&state(&first), &state(&second)));
    drop((first, second));
    assert_eq!(registry.collect(), 1);
    assert_eq!(registry.endpoint_count(), 0);
}

/// A full rebuild (a config change elsewhere) keeps what balancing and retries
/// learnt about a backend: its typical latency, its round-robin cursor and its
/// retry budget are the same objects in the new table.
#[test]
fn backend_state_survives_a_rebuild() {
    let yaml =
        service("web", &["10.0.0.1", "10.0.0.2"], &[]) + &simple("web", "a.example", "web", "");
    let (snapshot, _) = snapshot_from_str(&yaml);
    let retained = Retained::new(PoolConfig::default());
    let first = translate(&snapshot, &all_classes(), &retained, &LastGood::default()).table;
    let state = |t: &RoutingTable| t.route("a.example", "/").unwrap().backend.state.clone();
    let before = state(&first);
    let second = translate(&snapshot, &all_classes(), &retained, &LastGood::default()).table;
    assert!(Arc::ptr_eq(&before, &state(&second)));
    // Another retry budget is another state; the old one goes once unused.
    let mut options = all_classes();
    options.defaults.retry_budget_ratio = 0.5;
    let third = translate(&snapshot, &options, &retained, &LastGood::default()).table;
    assert!(!Arc::ptr_eq(&before, &state(&third)));
    drop((first, second, before));
    retained.collect();
    let fourth = translate(&snapshot, &options, &retained, &LastGood::default()).table;
    assert!(Arc::ptr_eq(&state(&third), &state(&fourth)));
}

#[test]
fn limits_scale_to_the_cluster_and_survive_rebuilds() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &simple(
            "web",
            "a.example",
            "web",
            "  annotations: {sluice.io/limit-rps: \"100\", sluice.io/limit-scope: cluster}\n",
        );
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = Retained::new(PoolConfig::default());
    let mut options = all_classes();
    options.cluster_instances = 4;
    let first = translate(&snapshot, &options, &registry, &LastGood::default()).table;
    let limiter = first
        .route("a.example", "/")
        .unwrap()
        .filters
        .limiter()
        .cloned()
        .unwrap();
    assert_eq!(
        limiter.spec().per_second,
        25.0,
        "100 rps shared by 4 instances"
    );
    let second = translate(&snapshot, &options, &registry, &LastGood::default()).table;
    let again = second
        .route("a.example", "/")
        .unwrap()
        .filters
        .limiter()
        .cloned()
        .unwrap();
    assert!(
        Arc::ptr_eq(&limiter, &again),
        "an unchanged limit keeps its state"
    );
}

#[test]
fn a_canary_needs_a_main_ingress() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &simple(
            "lonely",
            "b.example",
            "web",
            "  annotations: {nginx.ingress.kubernetes.io/canary: \"true\"}\n",
        );
    let (_, warnings) = build(&yaml);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].reason, "canary-without-main");
}

/// Mutated manifests (any kind, any field) load and translate without a
/// panic: every problem is a warning.
#[test]
fn fuzzed_manifests_translate_without_panicking() {
    let tls = "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: cert, namespace: default}\nstringData: {tls.crt: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\", tls.key: x}\n";
    let rich = simple(
        "rich",
        "a.example",
        "web",
        "  annotations: {sluice.io/circuit-breaker: \"NetworkErrorRatio() > 0.5\", nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-by-source-cidr: \"10.0.0.0/8\", sluice.io/upstream-hash-by: $remote_addr}\n",
    ) + "  tls: [{hosts: [a.example], secretName: cert}]\n"
        + tls;
    let seeds = [
        service("web", &["10.0.0.1", "10.0.0.2"], &["10.0.0.3"]) + &simple("a", "a.example", "web", ""),
        rich,
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: x}, spec: {defaultBackend: {service: {name: web, port: {name: http}}}}}\n".to_owned(),
        // Gateway API: a class, a Gateway with HTTP and HTTPS listeners, and
        // a route with matches, filters and weighted backends.
        service("web", &["10.0.0.1"], &[]) + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: s}\nspec: {controllerName: sluice.io/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: default}\nspec: {gatewayClassName: s, listeners: [{name: h, port: 80, protocol: HTTP, hostname: \"*.example\"}, {name: t, port: 443, protocol: HTTPS, hostname: a.example, tls: {certificateRefs: [{name: cert}]}}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec: {parentRefs: [{name: g}], hostnames: [a.example], rules: [{matches: [{path: {type: PathPrefix, value: /api}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}, {type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}], backendRefs: [{name: web, port: 80, weight: 3}, {name: web, port: 80, weight: 1}]}]}\n" + tls,
    ];
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let registry = Retained::new(PoolConfig::default());
    crate::fuzz::texts(&seeds, crate::fuzz::iterations(3_000), |text| {
        let (snapshot, _) = snapshot_from_str(text);
        let t = translate(&snapshot, &all_classes(), &registry, &LastGood::default());
        assert!(
            t.warnings.iter().all(|w| w.reason != "internal-error"),
            "{:?}",
            t.warnings
        );
    });
}

/// YAML built to exhaust the parser (deep nesting, alias expansion) is one
/// file's warning.
#[test]
fn hostile_yaml_is_a_warning() {
    let deep = "a: ".to_owned() + &"[".repeat(100_000);
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..20 {
        let prev = if i == 0 {
            "a".to_owned()
        } else {
            format!("a{}", i - 1)
        };
        bomb += &format!("a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n");
    }
    for text in [deep, bomb] {
        let (snapshot, warnings) = snapshot_from_str(&text);
        assert!(snapshot.ingresses.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}

/// A failure only one Ingress's content reaches costs that Ingress alone.
#[test]
fn one_failing_ingress_does_not_fail_the_table() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &simple("good", "good.example", "web", "")
        + &simple(PANIC_FOR_TESTS, "bad.example", "web", "");
    let (table, warnings) = build(&yaml);
    assert_eq!(
        service_of(&table, "good.example", "/").as_deref(),
        Some("web")
    );
    assert_eq!(service_of(&table, "bad.example", "/"), None);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].reason, "internal-error");
    assert_eq!(warnings[0].object.as_ref().unwrap().name, PANIC_FOR_TESTS);
}

/// `simple` in another namespace.
fn in_namespace(namespace: &str, yaml: String) -> String {
    yaml.replace("namespace: default", &format!("namespace: {namespace}"))
}

#[test]
fn tenants_keep_their_hosts_canaries_and_certificates() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &in_namespace("evil", service("web", &["10.0.0.9"], &[]))
        + &simple("victim", "shop.example", "web", "")
        // Another namespace's canary for the victim's host and path.
        + &in_namespace(
            "evil",
            simple(
                "steal",
                "shop.example",
                "web",
                "  annotations: {nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"100\"}\n",
            ),
        );
    let (table, warnings) = build(&yaml);
    let route = table.route("shop.example", "/").unwrap();
    assert!(route.filters.canary().is_none());
    assert_eq!(route.ingress.namespace, "default");
    let reasons: Vec<_> = warnings.iter().map(|w| w.reason).collect();
    assert_eq!(reasons, ["canary-cross-namespace"], "{warnings:?}");
    assert!(
        warnings[0].message.contains("default/victim"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].message.contains("evil"), "{}", warnings[0]);
}

#[test]
fn host_ownership_by_namespace_refuses_other_namespaces() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &in_namespace("b", service("web", &["10.0.0.2"], &[]))
        + &in_namespace("c", service("web", &["10.0.0.3"], &[]))
        + &ingress(
            "owner",
            "2024-01-01T00:00:00Z",
            "  annotations: {sluice.io/allow-namespaces: c}\nspec:\n  rules:\n  - host: shop.example\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}",
        )
        + &in_namespace(
            "b",
            ingress(
                "intruder",
                "2024-02-01T00:00:00Z",
                "spec:\n  rules:\n  - host: shop.example\n    http:\n      paths:\n      - {path: /admin, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}",
            ),
        )
        + &in_namespace(
            "c",
            ingress(
                "invited",
                "2024-03-01T00:00:00Z",
                "spec:\n  rules:\n  - host: shop.example\n    http:\n      paths:\n      - {path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}",
            ),
        );
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = Retained::new(PoolConfig::default());
    // Shared (the default): paths merge across namespaces, as ingress-nginx.
    let shared = translate(&snapshot, &all_classes(), &registry, &LastGood::default());
    assert!(shared.warnings.is_empty(), "{:?}", shared.warnings);
    let ns_of = |t: &RoutingTable, path| {
        t.route("shop.example", path)
            .unwrap()
            .ingress
            .namespace
            .clone()
    };
    assert_eq!(ns_of(&shared.table, "/admin"), "b");
    let mut options = all_classes();
    options.host_ownership = HostOwnership::Namespace;
    let owned = translate(&snapshot, &options, &registry, &LastGood::default());
    assert_eq!(
        ns_of(&owned.table, "/admin"),
        "default",
        "refused: the owner's / serves it"
    );
    assert_eq!(
        ns_of(&owned.table, "/api"),
        "c",
        "listed in allow-namespaces"
    );
    let reasons: Vec<_> = owned.warnings.iter().map(|w| w.reason).collect();
    assert_eq!(reasons, ["host-owned"], "{:?}", owned.warnings);
    assert_eq!(owned.warnings[0].object.as_ref().unwrap().namespace, "b");
}

#[test]
fn pod_addresses_on_the_node_are_refused_in_a_cluster() {
    let yaml = service(
        "web",
        &["10.0.0.1", "127.0.0.1", "169.254.169.254", "::1"],
        &[],
    ) + &simple("a", "a.example", "web", "");
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = Retained::new(PoolConfig::default());
    let mut options = all_classes();
    options.upstream_deny.special = true;
    let t = translate(&snapshot, &options, &registry, &LastGood::default());
    let route = t.table.route("a.example", "/").unwrap();
    assert_eq!(addrs(&route.backend), ["10.0.0.1:8080"]);
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert_eq!(t.warnings[0].reason, "endpoint-refused");
    assert!(t.warnings[0]
        .message
        .contains("169.254.169.254 (link-local)"));
    // A manifests directory is the operator's: loopback is allowed there.
    let (table, warnings) = build(&yaml);
    assert_eq!(
        addrs(&table.route("a.example", "/").unwrap().backend).len(),
        4
    );
    assert!(warnings.is_empty());
}

/// A tenant's mirror reaches no more than its Services could: the admin
/// port or the metadata service of the node are refused in a cluster.
#[test]
fn a_mirror_on_the_node_is_refused_in_a_cluster() {
    let mirrored = |target: &str| {
        service("web", &["10.0.0.1"], &[])
            + &simple(
                "a",
                "a.example",
                "web",
                &format!(
                    "  annotations: {{nginx.ingress.kubernetes.io/mirror-target: \"{target}\"}}\n"
                ),
            )
    };
    let mut options = all_classes();
    options.upstream_deny.special = true;
    let registry = Retained::new(PoolConfig::default());
    for target in [
        "http://127.0.0.1:10254$request_uri",
        "http://169.254.169.254/",
    ] {
        let (snapshot, _) = snapshot_from_str(&mirrored(target));
        let t = translate(&snapshot, &options, &registry, &LastGood::default());
        let route = t.table.route("a.example", "/").unwrap();
        let mirror = route.policy.mirror.as_ref().unwrap();
        assert!(mirror.backend.endpoints().is_empty(), "{target}");
        assert_eq!(t.warnings[0].reason, "endpoint-refused", "{:?}", t.warnings);
        assert_eq!(
            addrs(&route.backend),
            ["10.0.0.1:8080"],
            "the route itself serves"
        );
    }
    // A name is only what the background resolver found for it.
    let (table, warnings) = build(&mirrored("https://shadow.example:8443$request_uri"));
    let mirror = table
        .route("a.example", "/")
        .unwrap()
        .policy
        .mirror
        .clone()
        .unwrap();
    assert!(mirror.backend.endpoints().is_empty());
    assert_eq!(warnings[0].reason, "external-name-unresolved");
    assert_eq!(mirror.backend.name.service, "mirror shadow.example");
    assert!(matches!(mirror.backend.protocol, Protocol::Tls(_)));
}

#[test]
fn the_same_pod_behind_two_namespaces_has_two_states() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &in_namespace("evil", service("web", &["10.0.0.1"], &[]))
        + &simple("a", "a.example", "web", "")
        + &in_namespace("evil", simple("b", "b.example", "web", ""));
    let (table, _) = build(&yaml);
    let state = |host| {
        table.route(host, "/").unwrap().backend.endpoints()[0]
            .state
            .clone()
    };
    let (owner, other) = (state("a.example"), state("b.example"));
    assert_eq!(owner.addr, other.addr);
    assert!(
        !Arc::ptr_eq(&owner, &other),
        "breakers, estimates and pools are not shared"
    );
}

/// Client certificates are a host's, set by its owner's oldest Ingress that
/// asks; every route of the host checks them, and no other namespace can
/// change them or get a route that skips them.
#[test]
fn client_certificates_are_the_hosts_and_its_owners() {
    let ca = |cn: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ca, namespace: default}}\nstringData:\n  ca.crt: |\n{indented}")
    };
    let mtls = "  annotations: {nginx.ingress.kubernetes.io/auth-tls-secret: ca}\n";
    let at = |name: &str, created: &str, host: &str, path: &str, metadata: &str| {
        simple(name, host, "web", metadata)
            .replace("2024-01-01T00:00:00Z", created)
            .replace("{path: /,", &format!("{{path: {path},"))
    };
    let yaml = service("web", &["10.0.0.1"], &[])
        + &in_namespace("evil", service("web", &["10.0.0.9"], &[]))
        + &ca("Owner CA")
        + &in_namespace("evil", ca("Evil CA"))
        + &at("owner", "2024-01-01T00:00:00Z", "shop.example", "/", mtls)
        + &at("plain", "2024-02-01T00:00:00Z", "shop.example", "/docs", "")
        + &in_namespace(
            "evil",
            at("other", "2024-03-01T00:00:00Z", "shop.example", "/x", mtls),
        )
        + &at("open", "2024-01-01T00:00:00Z", "open.example", "/", "")
        + &in_namespace(
            "evil",
            at("guest", "2024-03-01T00:00:00Z", "open.example", "/y", mtls),
        );
    let (table, warnings) = build(&yaml);
    let client_cert = |host: &str, path: &str| {
        let route = table.route(host, path).unwrap();
        route.filters.iter().find_map(|f| match f {
            RequestFilter::ClientCert(settings) => Some(settings.clone()),
            _ => None,
        })
    };
    let host_settings = table.client_cas.get("shop.example").unwrap().clone();
    for path in ["/", "/docs", "/x"] {
        let settings = client_cert("shop.example", path).unwrap().unwrap();
        assert!(settings.same(&host_settings), "{path}");
    }
    assert!(client_cert("open.example", "/").is_none());
    assert!(matches!(client_cert("open.example", "/y"), Some(Err(()))));
    assert!(table.client_cas.get("open.example").is_none());
    let reasons: Vec<_> = warnings
        .iter()
        .map(|w| (w.reason, w.object.as_ref().unwrap().name.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [("fail-closed", "guest"), ("conflict", "other")],
        "{warnings:?}"
    );
}

/// A buffer size for a body that is not buffered says so.
#[test]
fn a_buffer_size_without_buffering_warns() {
    let with = |buffering: &str| {
        service("web", &["10.0.0.1"], &[])
            + &simple(
                "app",
                "shop.example",
                "web",
                &format!("  annotations: {{nginx.ingress.kubernetes.io/client-body-buffer-size: 16k, nginx.ingress.kubernetes.io/proxy-request-buffering: \"{buffering}\"}}\n"),
            )
    };
    let (_, warnings) = build(&with("off"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0]
        .message
        .contains("client-body-buffer-size has no effect"));
    let (_, warnings) = build(&with("on"));
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// An HTTPRoute is held to the same tenancy as an Ingress: the host's
/// client certificates guard its routes, and under `host-ownership:
/// namespace` another namespace's route for an owned host is refused.
#[test]
fn http_routes_keep_the_hosts_rules() {
    let gateway = gateway_yaml(
        "sluice",
        "default",
        "edge",
        &["{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}"],
    );
    let route = |namespace: &str, path: &str| {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: {namespace}}}\nspec:\n  parentRefs: [{{name: edge, namespace: default}}]\n  hostnames: [shop.example]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n")
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = service("web", &["10.0.0.1"], &[])
        + &in_namespace("b", service("web", &["10.0.0.2"], &[]))
        + &format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ca, namespace: default}}\nstringData:\n  ca.crt: |\n{indented}")
        + &simple("owner", "shop.example", "web", "  annotations: {nginx.ingress.kubernetes.io/auth-tls-secret: ca}\n")
        + &gateway
        + &route("default", "/api")
        + &route("b", "/b");
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = Retained::new(PoolConfig::default());
    let mut options = all_classes();
    options.host_ownership = HostOwnership::Namespace;
    let t = translate(&snapshot, &options, &registry, &LastGood::default());
    let route = t.table.route("shop.example", "/api").unwrap();
    assert_eq!(route.ingress.name, "r");
    assert!(
        route
            .filters
            .iter()
            .any(|f| matches!(f, RequestFilter::ClientCert(Ok(_)))),
        "the host's client certificates guard the HTTPRoute's path"
    );
    assert_eq!(
        t.table.route("shop.example", "/b").unwrap().ingress.name,
        "owner"
    );
    let reasons: Vec<_> = t.warnings.iter().map(|w| w.reason).collect();
    assert_eq!(reasons, ["host-owned"], "{:?}", t.warnings);
}

/// Gateway API fields sluice does not act on are never dropped silently:
/// a listener that takes only other route kinds attaches no HTTPRoute, a
/// TLS setting it cannot honour closes the listener, and any other field
/// is a warning naming it.
#[test]
fn gateway_fields_sluice_does_not_act_on_are_named() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: s}\nspec: {controllerName: sluice.io/gateway-controller}\n"
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: default}\nspec:\n  gatewayClassName: s\n  addresses: [{value: 10.0.0.9}]\n  listeners:\n  - {name: grpc-only, port: 80, protocol: HTTP, hostname: grpc.example, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}\n  - {name: mtls, port: 443, protocol: HTTPS, hostname: mtls.example, tls: {certificateRefs: [{name: cert}], frontendValidation: {caCertificateRefs: [{name: ca}]}}}\n  - {name: http, port: 80, protocol: HTTP, hostname: web.example}\n"
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: g}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n    retry: {attempts: 3}\n";
    let (table, warnings) = build(&yaml);
    assert!(table.route("web.example", "/").is_some());
    assert!(
        table.route("grpc.example", "/").is_none(),
        "kinds: GRPCRoute only"
    );
    assert!(
        table.route("mtls.example", "/").is_none(),
        "frontendValidation is not served"
    );
    let said = |needle: &str| warnings.iter().any(|w| w.message.contains(needle));
    assert!(said("addresses not served yet"), "{warnings:?}");
    assert!(
        said("tls.frontendValidation is not served yet"),
        "{warnings:?}"
    );
    assert!(said("retry not served yet"), "{warnings:?}");
}

/// A listener's certificate from another namespace is used only where that
/// namespace's ReferenceGrant lets the Gateway refer to it.
#[test]
fn a_listener_certificate_elsewhere_needs_a_reference_grant() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["secure.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let indent = |pem: String| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: cert, namespace: certs}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    );
    let base = secret
        + &gateway_yaml("s", "edge", "g", &["{name: https, port: 443, protocol: HTTPS, hostname: secure.example, tls: {certificateRefs: [{name: cert, namespace: certs}]}}"]);
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: edge}]\n  to: [{group: \"\", kind: Secret, name: cert}]\n";
    let listener = |yaml: &str| {
        let (table, _) = build(yaml);
        let gateway = table
            .gateway_api
            .iter()
            .find(|o| o.kind == "Gateway")
            .unwrap();
        let resolved = gateway.parts[0]
            .conditions
            .iter()
            .find(|c| c.kind == "ResolvedRefs")
            .map(|c| (c.status, c.reason));
        (resolved, table.tls.has_host("secure.example"))
    };
    assert_eq!(listener(&base), (Some(("False", "RefNotPermitted")), false));
    assert_eq!(
        listener(&(base.clone() + grant)),
        (Some(("True", "ResolvedRefs")), true)
    );
}

/// Listeners that are not distinct are all `Conflicted` and serve nothing;
/// the distinct one beside them serves, and says it has no conflict.
#[test]
fn listeners_with_one_port_and_hostname_conflict() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + &gateway_yaml("s", "default", "g", &[
            "{name: a, port: 80, protocol: HTTP, hostname: a.example}",
            "{name: again, port: 80, protocol: HTTP, hostname: A.example}",
            "{name: b, port: 80, protocol: HTTP, hostname: b.example}",
        ])
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: g}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n";
    let (table, warnings) = build(&yaml);
    let gateway = table
        .gateway_api
        .iter()
        .find(|o| o.kind == "Gateway")
        .unwrap();
    let conflicted = |listener: &str| {
        let part = gateway.parts.iter().find(|p| p.name == listener).unwrap();
        let c = part
            .conditions
            .iter()
            .find(|c| c.kind == "Conflicted")
            .unwrap();
        (c.status, c.reason, part.programmed())
    };
    assert_eq!(conflicted("a"), ("True", "HostnameConflict", false));
    assert_eq!(conflicted("again"), ("True", "HostnameConflict", false));
    assert_eq!(conflicted("b"), ("False", "NoConflicts", true));
    assert!(table.route("a.example", "/").is_none());
    assert!(table.route("b.example", "/").is_some());
    assert!(warnings
        .iter()
        .any(|w| w.message.contains("neither is served")));
}

/// The config file's `gateway-*` keys: another controller name, and other
/// published ports, decide which classes and listeners are sluice's.
#[test]
fn gateway_keys_choose_the_controller_and_the_published_ports() {
    let yaml = service("web", &["10.0.0.1"], &[])
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: s}\nspec: {controllerName: example.com/edge}\n"
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: default}\nspec:\n  gatewayClassName: s\n  listeners:\n  - {name: alt, port: 8080, protocol: HTTP, hostname: alt.example}\n  - {name: std, port: 80, protocol: HTTP, hostname: std.example}\n"
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: g}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n";
    let (snapshot, _) = snapshot_from_str(&yaml);
    let registry = Retained::new(PoolConfig::default());
    let served = |options: &TranslateOptions| {
        let t = translate(&snapshot, options, &registry, &LastGood::default());
        let hosts = ["alt.example", "std.example"];
        hosts.map(|h| t.table.route(h, "/").is_some())
    };
    let mut options = all_classes();
    assert_eq!(served(&options), [false, false], "not our controller");
    options.gateway.controller_name = "example.com/edge".into();
    assert_eq!(served(&options), [false, true]);
    options.gateway.http_port = 8080;
    assert_eq!(served(&options), [true, false]);
}
