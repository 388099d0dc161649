//! Gateway API from a manifests directory (issue #22, first step):
//! HTTPRoutes attached to a Gateway of sluice's class are served beside
//! Ingresses; another controller's are not; what is not served yet is a
//! warning, never a silent change of meaning.

use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// Our Gateway `edge` (every kind of listener), and another controller's.
fn classes() -> String {
    let ours = gateway_yaml(
        "default",
        "edge",
        &[
            "{name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}",
            "{name: odd, port: 8080, protocol: HTTP}",
            "{name: https, port: 443, protocol: HTTPS, hostname: secure.example.com, tls: {certificateRefs: [{name: secure-cert}]}}",
            "{name: bare, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: secure-cert}]}}",
        ],
    );
    ours + r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/another-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: default}
spec:
  gatewayClassName: other
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"#
}

fn route(name: &str, parent: &str, host: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: {parent}}}]\n  hostnames: [\"{host}\"]\n  rules:\n{rules}"
    )
}

#[tokio::test]
async fn http_routes_of_our_gateways_are_served_beside_ingresses() {
    let web = start_upstream("web").await;
    let blue = start_upstream("blue").await;
    let green = start_upstream("green").await;
    let m = Manifests::new();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: web, port: 80}]\n  - matches: [{path: {type: Exact, value: /}}]\n    backendRefs: [{name: web, port: 80}]\n";
    let pki = crate::support::pki::Pki::new();
    let (cert, key, _) = pki.leaf(&["secure.example.com", "bare.example.org"]);
    let secure = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: secure, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: https}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bare, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: bare}]\n  hostnames: [bare.example.org]\n  rules:\n  - backendRefs: [{name: green, port: 80}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: stranded, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: odd}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n";
    let yaml = crate::support::pki::secret_yaml("secure-cert", &cert, &key)
        + secure
        + &service_yaml("web", &[web.addr])
        + &service_yaml("blue", &[blue.addr])
        + &route(
            "borrowing",
            "edge",
            "borrowing.example.com",
            "  - backendRefs: [{name: web, namespace: other, port: 80}]\n",
        )
        + &service_yaml("green", &[green.addr])
        + &route(
            "split",
            "edge",
            "split.example.com",
            "  - backendRefs: [{name: blue, port: 80, weight: 1}, {name: green, port: 80, weight: 1}, {name: web, port: 80, weight: 0}]\n",
        )
        + &classes()
        + &route("shop", "edge", "shop.example.com", rules)
        + &route("foreign", "theirs", "foreign.example.com", rules)
        + &route("elsewhere", "edge", "shop.example.org", rules)
        + &route(
            "headers",
            "edge",
            "headers.example.com",
            "  - matches: [{headers: [{name: x-canary, value: \"1\"}]}]\n    backendRefs: [{name: web, port: 80}]\n  - matches: [{path: {type: RegularExpression, value: \"/v[0-9]+/.*\"}}]\n    backendRefs: [{name: blue, port: 80}]\n  - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n    backendRefs: [{name: blue, port: 80}]\n",
        )
        + &route(
            "mirrored",
            "edge",
            "mirrored.example.com",
            "  - matches: [{path: {value: /copied}}]\n    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: blue, port: 80}}}]\n    backendRefs: [{name: web, port: 80}]\n  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Filter, name: f}}]\n    backendRefs: [{name: web, port: 80}]\n",
        )
        + &route(
            "filters",
            "edge",
            "filters.example.com",
            concat!(
                "  - matches: [{path: {type: PathPrefix, value: /api}}]\n",
                "    filters:\n",
                "    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: \"$b\"}], add: [{name: x-b, value: c}], remove: [x-drop]}}\n",
                "    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-resp, value: \"1\"}]}}\n",
                "    - {type: URLRewrite, urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}\n",
                "    backendRefs: [{name: web, port: 80}]\n",
                "  - matches: [{path: {type: PathPrefix, value: /old}}]\n",
                "    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}}]\n",
                "    backendRefs: [{name: web, port: 80}]\n",
            ),
        )
        + &ingress_yaml("plain", Some("plain.example.com"), &[], &[("/", "Prefix", "web")]);
    m.write("all.yaml", &yaml);
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let status = |host: &'static str, path: &'static str| {
        let http = http.clone();
        let addr = sluice.http_addr;
        async move { send(&http, get(addr, host, path)).await.unwrap().status }
    };
    let served = eventually(Duration::from_secs(10), || async {
        status("shop.example.com", "/api/cart").await == StatusCode::OK
    })
    .await;
    assert!(
        served.is_some(),
        "{}",
        admin_text(&sluice, "/api/warnings").await
    );
    let reply = send(
        &http,
        get(sluice.http_addr, "shop.example.com", "/api/cart"),
    )
    .await
    .unwrap();
    assert_eq!(reply.upstream(), "web");
    assert_eq!(status("shop.example.com", "/").await, StatusCode::OK);
    assert_eq!(
        status("shop.example.com", "/apix").await,
        StatusCode::NOT_FOUND,
        "PathPrefix is element-wise"
    );
    assert_eq!(
        status("shop.example.com", "/other").await,
        StatusCode::NOT_FOUND,
        "Exact is exact"
    );
    // The plain Ingress beside them.
    assert_eq!(status("plain.example.com", "/").await, StatusCode::OK);
    // Another controller's Gateway, and a hostname the listener does not take.
    assert_eq!(
        status("foreign.example.com", "/api").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status("shop.example.org", "/api").await,
        StatusCode::NOT_FOUND
    );
    // A header match routes only what has the header; a regular
    // expression the whole path; a pattern that does not compile skips its
    // rule, never routing more broadly.
    assert_eq!(
        status("headers.example.com", "/").await,
        StatusCode::NOT_FOUND
    );
    let mut canary = get(sluice.http_addr, "headers.example.com", "/");
    canary
        .headers_mut()
        .insert("x-canary", "1".parse().unwrap());
    assert_eq!(send(&http, canary).await.unwrap().upstream(), "web");
    let versioned = send(
        &http,
        get(sluice.http_addr, "headers.example.com", "/v2/items"),
    )
    .await
    .unwrap();
    assert_eq!(versioned.upstream(), "blue");
    assert_eq!(
        status("headers.example.com", "/v2").await,
        StatusCode::NOT_FOUND,
        "the whole path must match"
    );
    // A filter it cannot honour: 500, as the spec asks.
    let requests = web.requests();
    assert_eq!(
        status("mirrored.example.com", "/").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(web.requests(), requests);
    // RequestMirror: the pod answers, and the mirror gets a copy.
    let copies = blue.requests();
    let reply = send(
        &http,
        get(sluice.http_addr, "mirrored.example.com", "/copied?x=1"),
    )
    .await
    .unwrap();
    assert_eq!(reply.upstream(), "web");
    let copied = eventually(Duration::from_secs(5), || async {
        blue.requests() > copies
    })
    .await;
    assert!(copied.is_some(), "the mirror got no copy");

    // Header modifiers, URLRewrite and RequestRedirect.
    let mut request = get(sluice.http_addr, "filters.example.com", "/api/items?x=1");
    request
        .headers_mut()
        .insert("x-drop", "secret".parse().unwrap());
    request.headers_mut().insert("x-b", "mine".parse().unwrap());
    let reply = send(&http, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["x-resp"], "1");
    let seen = reply.json();
    assert_eq!(seen["uri"], "/v2/items?x=1");
    assert_eq!(seen["headers"]["x-a"][0], "$b", "values are literal");
    assert_eq!(seen["headers"]["x-b"], serde_json::json!(["mine", "c"]));
    assert!(seen["headers"].get("x-drop").is_none());
    assert_eq!(seen["headers"]["host"][0], "internal.example");
    let bare = send(&http, get(sluice.http_addr, "filters.example.com", "/api"))
        .await
        .unwrap();
    assert_eq!(bare.json()["uri"], "/v2");
    let moved = send(
        &http,
        get(sluice.http_addr, "filters.example.com", "/old/page?q=1"),
    )
    .await
    .unwrap();
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        moved.headers["location"],
        "https://filters.example.com/new?q=1"
    );

    // An HTTPS listener: its certificate, its routes, over TLS only; one
    // without a hostname gives its certificate to its routes' hosts.
    let ca = m.path().join(".ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let port = sluice.https_addr.port();
    for (host, pod) in [("secure.example.com", "web"), ("bare.example.org", "green")] {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--resolve",
                &format!("{host}:{port}:127.0.0.1"),
                "--cacert",
            ])
            .arg(&ca)
            .arg(format!("https://{host}:{port}/"))
            .output()
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&output.stdout);
        assert!(
            body.contains(&format!("\"upstream\":\"{pod}\"")),
            "{host}: {body} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        status("secure.example.com", "/").await,
        StatusCode::NOT_FOUND,
        "not on the HTTP listener"
    );

    // Weighted backends: each request to one, by weight (1:1 here; a
    // backend of weight 0 gets none). Bounds are generous: 200 fair coin
    // flips fall outside 40..160 with a chance below 1e-17.
    let before = (blue.requests(), green.requests());
    for _ in 0..200 {
        assert_eq!(status("split.example.com", "/").await, StatusCode::OK);
    }
    let (b, g) = (blue.requests() - before.0, green.requests() - before.1);
    assert_eq!(b + g, 200);
    assert!((40..=160).contains(&b), "blue {b}, green {g}");
    let metrics = admin_text(&sluice, "/metrics").await;
    for service in ["blue", "green"] {
        assert!(
            metrics.contains(&format!("service=\"{service}\"")),
            "{service}"
        );
    }

    // The status sluice would write, in /api/routes.
    let api = admin_json(&sluice, "/api/routes").await;
    let objects = api["gateway_api"].as_array().unwrap().clone();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}: {objects:?}"))
            .clone()
    };
    let condition = |part: &serde_json::Value, kind: &str| {
        let found = part["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .cloned();
        found.map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
    };
    let edge = find("Gateway", "edge");
    assert_eq!(
        condition(&edge, "Programmed"),
        Some(("True".into(), "Programmed".into()))
    );
    let listener = |name: &str| {
        edge["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        condition(&listener("http"), "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        condition(&listener("https"), "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into()))
    );
    assert_eq!(
        condition(&listener("odd"), "Accepted"),
        Some(("False".into(), "PortUnavailable".into()))
    );
    assert_eq!(
        condition(&listener("bare"), "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    let parent = |name: &str| find("HTTPRoute", name)["parts"][0].clone();
    assert_eq!(
        condition(&parent("shop"), "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        condition(&parent("shop"), "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into()))
    );
    // Only the HTTPS listener without a hostname takes it (so plain HTTP
    // does not: a 404 above).
    assert_eq!(
        condition(&parent("elsewhere"), "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        condition(&parent("borrowing"), "ResolvedRefs"),
        Some(("False".into(), "RefNotPermitted".into()))
    );
    assert!(
        objects
            .iter()
            .all(|o| o["name"] != "foreign" && o["name"] != "theirs"),
        "not ours"
    );

    let warnings = admin_text(&sluice, "/api/warnings").await;
    for reason in [
        "invalid-match",
        "unsupported-filter",
        "gateway-listener",
        "route-not-attached",
    ] {
        assert!(warnings.contains(reason), "{reason}: {warnings}");
    }
    assert!(
        !warnings.contains("foreign"),
        "another controller's route is not ours to judge: {warnings}"
    );
}

/// A GRPCRoute picks backends by service, method and headers, over h2c and
/// over TLS, with tonic as the client and tonic servers as the pods (two
/// health services that answer differently, so each answer names its pod).
#[tokio::test]
async fn grpc_routes_pick_backends_by_method_and_headers_over_h2c_and_tls() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (a, a_addr) = start_grpc_health().await;
    a.set_service_status("probe", tonic_health::ServingStatus::Serving)
        .await;
    let (b, b_addr) = start_grpc_health().await;
    b.set_service_status("probe", tonic_health::ServingStatus::NotServing)
        .await;
    let pki = crate::support::pki::Pki::new();
    let (cert, key, _) = pki.leaf(&["grpc.example.com"]);
    let m = Manifests::new();
    m.write(
        "grpc.yaml",
        &(crate::support::pki::secret_yaml("grpc-cert", &cert, &key)
            + &service_yaml("grpc-a", &[a_addr])
            + &service_yaml("grpc-b", &[b_addr])
            + &classes()
            + r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grpc, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: h2c, port: 80, protocol: HTTP}
  - {name: tls, port: 443, protocol: HTTPS, hostname: grpc.example.com, tls: {certificateRefs: [{name: grpc-cert}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: default}
spec:
  parentRefs: [{name: grpc}]
  rules:
  - matches:
    - method: {service: grpc.health.v1.Health, method: Check}
      headers: [{name: x-route, value: b}]
    backendRefs: [{name: grpc-b, port: 80}]
  - matches: [{method: {service: grpc.health.v1.Health, method: Check}}]
    backendRefs: [{name: grpc-a, port: 80}]
  - matches: [{method: {service: grpc.health.v1.Health}}]
    backendRefs: [{name: grpc-b, port: 80}]
  - matches: [{method: {method: Check}}]
    backendRefs: [{name: grpc-a, port: 80}]
"#),
    );
    let sluice = start_sluice(m.path(), "").await;
    let accepted = eventually(Duration::from_secs(10), || async {
        let routes = admin_json(&sluice, "/api/routes").await;
        routes["gateway_api"].as_array().is_some_and(|all| {
            all.iter().any(|o| {
                o["kind"] == "GRPCRoute" && o["parts"][0]["conditions"][0]["status"] == "True"
            })
        })
    })
    .await;
    assert!(
        accepted.is_some(),
        "{}",
        admin_text(&sluice, "/api/warnings").await
    );
    let check = |mut client: HealthClient<tonic::transport::Channel>,
                 route: Option<&'static str>| async move {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: "probe".into(),
        });
        if let Some(route) = route {
            request
                .metadata_mut()
                .insert("x-route", route.parse().unwrap());
        }
        client.check(request).await.unwrap().into_inner().status()
    };
    let h2c = tonic::transport::Endpoint::try_from(format!("http://{}", sluice.http_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let tls = tonic::transport::Endpoint::try_from(format!("https://{}", sluice.https_addr))
        .unwrap()
        .origin("https://grpc.example.com".parse().unwrap())
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
                .domain_name("grpc.example.com"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    for channel in [h2c, tls] {
        let client = HealthClient::new(channel);
        // Service and method: pod A; with the header: pod B.
        assert_eq!(check(client.clone(), None).await, ServingStatus::Serving);
        assert_eq!(
            check(client.clone(), Some("b")).await,
            ServingStatus::NotServing
        );
        // The service alone takes its other methods: pod B.
        let mut watch = client
            .clone()
            .watch(HealthCheckRequest {
                service: "probe".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::NotServing);
    }
    // A method without its service is a pattern over the path.
    let routes = admin_json(&sluice, "/api/routes").await;
    let pattern = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path_type"] == "Regex")
        .unwrap();
    assert_eq!(pattern["path"], "/[^/]+/Check");
    assert_eq!(pattern["kind"], "GRPCRoute");
}

/// `sessionPersistence` keeps a client on one pod with a cookie, as
/// `affinity: cookie` does: the cookie is named `sessionName`, lives for
/// `absoluteTimeout` when `Permanent`, and is sent back to the same pod.
#[tokio::test]
async fn session_persistence_keeps_a_client_on_one_pod() {
    let one = start_upstream("one").await;
    let two = start_upstream("two").await;
    let m = Manifests::new();
    m.write(
        "all.yaml",
        &(service_yaml("shop", &[one.addr, two.addr])
            + &classes()
            + &route(
                "sticky",
                "edge",
                "sticky.example.com",
                "  - matches: [{path: {value: /cart}}]\n    backendRefs: [{name: shop, port: 80}]\n    sessionPersistence: {sessionName: shop-session, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}, idleTimeout: 5m}\n",
            )),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let ready = eventually(Duration::from_secs(10), || async {
        status_of(&http, get(sluice.http_addr, "sticky.example.com", "/cart")).await
            == StatusCode::OK
    })
    .await;
    assert!(
        ready.is_some(),
        "{}",
        admin_text(&sluice, "/api/warnings").await
    );
    let first = send(
        &http,
        get(sluice.http_addr, "sticky.example.com", "/cart/items"),
    )
    .await
    .unwrap();
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("shop-session="), "{cookie}");
    assert!(cookie.contains("Max-Age=3600"), "{cookie}");
    assert!(cookie.contains("Path=/cart"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        let mut request = get(sluice.http_addr, "sticky.example.com", "/cart");
        request
            .headers_mut()
            .insert("cookie", pair.parse().unwrap());
        let reply = send(&http, request).await.unwrap();
        assert_eq!(reply.upstream(), first.upstream(), "kept on one pod");
    }
    // What it cannot honour is named.
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert!(warnings.contains("idleTimeout is not served"), "{warnings}");
}
