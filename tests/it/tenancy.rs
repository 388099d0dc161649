//! A shared gateway is safe from its tenants: each test has a victim namespace
//! (`default`), a hostile tenant (`evil`) or a lying client, and checks through
//! the HTTP port, the admin API and `/metrics` that the victim is still served
//! as it asked. (Certificates: `tls.rs`; strict upstream framing:
//! `upstream_http1.rs`; forwarded headers by default: `proxy.rs`.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::apiserver::FakeApiServer;
use crate::support::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Full;
use sluice::discovery::kube::KubeOptions;
use sluice::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SIGNAL: Duration = Duration::from_secs(10);

/// The same objects in another namespace.
fn in_ns(namespace: &str, yaml: &str) -> String {
    yaml.replace("namespace: default", &format!("namespace: {namespace}"))
}

/// Waits until `/api/warnings` mentions `reason` `count` times.
async fn warned(sluice: &Server, reason: &str, count: usize) -> String {
    let seen = eventually(SIGNAL, || async move {
        admin_text(sluice, "/api/warnings")
            .await
            .matches(reason)
            .count()
            == count
    })
    .await;
    let warnings = admin_text(sluice, "/api/warnings").await;
    assert!(seen.is_some(), "want {count} x {reason}: {warnings}");
    warnings
}

/// Which fake pod answered `path` on `host`.
async fn answered(sluice: &Server, host: &str, path: &str) -> (StatusCode, String) {
    let reply = send(&client(), get(sluice.http_addr, host, path))
        .await
        .unwrap();
    let upstream = if reply.status == StatusCode::OK {
        reply.upstream()
    } else {
        String::new()
    };
    (reply.status, upstream)
}

/// A victim site: Service `web` (pod `victim`) and Ingress `shop` for
/// `shop.example`, in `default`.
async fn victim_site(config: &str) -> (Upstream, Manifests, Server) {
    let victim = start_upstream("victim").await;
    let m = Manifests::new();
    m.write(
        "victim.yaml",
        &(service_yaml("web", &[victim.addr])
            + &ingress_yaml("shop", Some("shop.example"), &[], &[("/", "Prefix", "web")])),
    );
    let sluice = start_sluice(m.path(), config).await;
    assert_eq!(
        answered(&sluice, "shop.example", "/").await,
        (StatusCode::OK, "victim".into())
    );
    (victim, m, sluice)
}

/// The evil tenant's Service `web` (pod `evil`), in namespace `evil`.
async fn evil_service() -> (Upstream, String) {
    let evil = start_upstream("evil").await;
    let yaml = in_ns("evil", &service_yaml("web", &[evil.addr]));
    (evil, yaml)
}

#[tokio::test]
async fn a_hostile_object_breaks_only_itself_and_later_changes_still_apply() {
    let (_victim, m, sluice) = victim_site("").await;
    let (_evil, evil_svc) = evil_service().await;
    let deep = "(".repeat(5000) + "NetworkErrorRatio() > 0.5" + &")".repeat(5000);
    let hostile = [
        ("sluice.io/circuit-breaker", deep.as_str()),
        (
            "sluice.io/circuit-breaker",
            "NetworkErrorRatio()\u{a0}>\u{3000}0.5 && é",
        ),
        ("nginx.ingress.kubernetes.io/canary-by-user-agent", "x"),
        ("sluice.io/upstream-hash-by", "$http_\u{1F600}"),
        (
            "nginx.ingress.kubernetes.io/proxy-body-size",
            "99999999999999999999g",
        ),
    ];
    let mut yaml = evil_svc;
    for (i, (key, value)) in hostile.iter().enumerate() {
        yaml += &in_ns(
            "evil",
            &ingress_yaml(
                &format!("evil-{i}"),
                Some(&format!("evil{i}.example")),
                &[(key, &value.replace('"', "\\\""))],
                &[("/", "Prefix", "web")],
            ),
        );
    }
    m.write("evil.yaml", &yaml);
    // A file built to exhaust the YAML parser is that file's warning.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..20 {
        let prev = if i == 0 {
            "a".to_owned()
        } else {
            format!("a{}", i - 1)
        };
        bomb += &format!("a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n");
    }
    m.write("bomb.yaml", &bomb);
    let warnings = warned(&sluice, "invalid-annotation", 4).await;
    assert!(
        warnings.contains("nested deeper than 16") || warnings.contains("longer than"),
        "{warnings}"
    );
    warned(&sluice, "invalid-file", 1).await;
    // evil-2 is fine (the canary annotation alone is not a canary Ingress).
    assert_eq!(
        answered(&sluice, "evil2.example", "/").await.0,
        StatusCode::OK
    );
    assert_eq!(
        answered(&sluice, "shop.example", "/").await,
        (StatusCode::OK, "victim".into()),
        "the victim is still served"
    );
    // The watcher still works: a later change is served.
    m.write(
        "later.yaml",
        &ingress_yaml(
            "later",
            Some("later.example"),
            &[],
            &[("/", "Prefix", "web")],
        ),
    );
    let served = until_status(
        &client(),
        || get(sluice.http_addr, "later.example", "/"),
        StatusCode::OK,
        SIGNAL,
    )
    .await;
    assert!(
        served.is_some(),
        "a change after the hostile objects was applied"
    );
}

#[tokio::test]
async fn a_canary_from_another_namespace_takes_no_traffic() {
    let (_victim, m, sluice) = victim_site("").await;
    let (evil, evil_svc) = evil_service().await;
    m.write(
        "evil.yaml",
        &(evil_svc
            + &in_ns(
                "evil",
                &ingress_yaml(
                    "steal",
                    Some("shop.example"),
                    &[
                        ("nginx.ingress.kubernetes.io/canary", "true"),
                        ("nginx.ingress.kubernetes.io/canary-weight", "100"),
                    ],
                    &[("/", "Prefix", "web")],
                ),
            )),
    );
    let warnings = warned(&sluice, "canary-cross-namespace", 1).await;
    assert!(
        warnings.contains("default/shop") && warnings.contains("evil"),
        "{warnings}"
    );
    for _ in 0..20 {
        assert_eq!(
            answered(&sluice, "shop.example", "/").await,
            (StatusCode::OK, "victim".into())
        );
    }
    assert_eq!(evil.requests(), 0);
}

#[tokio::test]
async fn with_host_ownership_by_namespace_only_invited_namespaces_add_paths() {
    let (_victim, m, sluice) = victim_site("host-ownership: namespace").await;
    let (_evil, evil_svc) = evil_service().await;
    let evil_paths = in_ns(
        "evil",
        &ingress_yaml(
            "admin",
            Some("shop.example"),
            &[],
            &[("/admin", "Prefix", "web")],
        ),
    );
    m.write("evil.yaml", &(evil_svc.clone() + &evil_paths));
    warned(&sluice, "host-owned", 1).await;
    assert_eq!(
        answered(&sluice, "shop.example", "/admin").await,
        (StatusCode::OK, "victim".into()),
        "the owner's / still serves /admin"
    );
    // The owner invites the namespace: its path is served.
    let victim_yaml = std::fs::read_to_string(m.path().join("victim.yaml")).unwrap();
    m.write(
        "victim.yaml",
        &victim_yaml.replace(
            "  namespace: default\nspec:",
            "  namespace: default\n  annotations:\n    sluice.io/allow-namespaces: \"evil\"\nspec:",
        ),
    );
    let invited = eventually(SIGNAL, || async {
        answered(&sluice, "shop.example", "/admin").await.1 == "evil"
    })
    .await;
    assert!(invited.is_some());
    assert_eq!(answered(&sluice, "shop.example", "/").await.1, "victim");
}

/// The evil tenant points a Service of its own at the victim's pod and sends
/// requests that fail: its breaker opens, the victim's does not.
#[tokio::test]
async fn another_tenants_failures_do_not_trip_the_owners_breaker() {
    // A single pod may be ejected, so that an open breaker shows.
    let (victim, m, sluice) = victim_site("max-ejection-percent: 100").await;
    m.write(
        "evil.yaml",
        &(in_ns("evil", &service_yaml("web", &[victim.addr]))
            + &in_ns(
                "evil",
                &ingress_yaml(
                    "trip",
                    Some("evil.example"),
                    &[(
                        "sluice.io/circuit-breaker",
                        "ResponseCodeRatio(500, 600, 0, 600) > 0.5 && RequestThreshold() >= 3",
                    )],
                    &[("/", "Prefix", "web")],
                ),
            )),
    );
    let http = client();
    let routed = until_status(
        &http,
        || get(sluice.http_addr, "evil.example", "/"),
        StatusCode::OK,
        SIGNAL,
    )
    .await;
    assert!(routed.is_some());
    let breaker = |namespace: &str| {
        format!(
            "sluice_endpoint_breaker_state{{namespace=\"{namespace}\",service=\"web\",port=\"80\",endpoint=\"{}\"}}",
            victim.addr
        )
    };
    let (evil_open, victim_closed) = (breaker("evil") + " 2", breaker("default") + " 0");
    let sluice = &sluice;
    let tripped = eventually(SIGNAL, || {
        let http = http.clone();
        let (evil_open, addr) = (evil_open.clone(), sluice.http_addr);
        async move {
            let failing = Request::get(format!("http://{addr}/"))
                .header("host", "evil.example")
                .header("x-fake-status", "500")
                .body(Full::default())
                .unwrap();
            let _ = send(&http, failing).await;
            admin_text(sluice, "/metrics").await.contains(&evil_open)
        }
    })
    .await;
    let metrics = admin_text(sluice, "/metrics").await;
    assert!(tripped.is_some(), "{metrics}");
    assert!(metrics.contains(&victim_closed), "{metrics}");
    assert_eq!(
        answered(sluice, "shop.example", "/").await,
        (StatusCode::OK, "victim".into())
    );
}

/// In a cluster, an EndpointSlice naming the node itself (loopback, the cloud
/// metadata address) gets no traffic; the operator's exceptions do.
#[tokio::test]
async fn pod_addresses_on_the_node_are_refused_in_a_cluster() {
    let api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pod = start_upstream("pod").await;
    let sluice = start_sluice_kube(&api.kubeconfig(dir.path()), KubeOptions::default()).await;
    // The test's pods are on 127.0.0.0/8, which `start_sluice_kube` allows:
    // 127.0.0.1 stands for a real pod, the others for the node.
    let slice = |addresses: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [{addresses}]\n",
            pod.addr.port()
        )
    };
    api.apply_yaml(&INGRESS_CLASS.replace("---\n", ""));
    api.apply_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  ports: [{name: http, port: 80}]\n");
    api.apply_yaml(&slice(
        "\"169.254.169.254\", \"0.0.0.0\", \"224.0.0.1\", \"127.0.0.1\"",
    ));
    api.apply_yaml(&ingress_yaml(
        "web",
        Some("web.example"),
        &[],
        &[("/", "Prefix", "web")],
    ));
    let warnings = warned(&sluice, "endpoint-refused", 1).await;
    for refused in [
        "169.254.169.254 (link-local)",
        "0.0.0.0 (unspecified)",
        "224.0.0.1 (multicast)",
    ] {
        assert!(warnings.contains(refused), "{warnings}");
    }
    assert!(!warnings.contains("127.0.0.1 ("), "{warnings}");
    for _ in 0..10 {
        assert_eq!(
            answered(&sluice, "web.example", "/").await,
            (StatusCode::OK, "pod".into())
        );
    }
}

#[tokio::test]
async fn silent_and_surplus_connections_are_closed_and_counted() {
    let OneApp { sluice, .. } =
        one_app("max-worker-connections: 2\nclient-header-timeout: 2s", &[]).await;
    let addr = sluice.http_addr;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Both slots are taken by clients that send nothing: the third is closed.
    let refused = eventually(SIGNAL, || async move {
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
        let mut buf = [0u8; 64];
        matches!(third.read(&mut buf).await, Ok(0) | Err(_))
    })
    .await;
    assert!(refused.is_some());
    // The silent ones are closed once client-header-timeout passes...
    for mut stream in silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(SIGNAL, stream.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
    // ...which frees their slots for clients that talk.
    let served = until_status(&client(), || get(addr, "a", "/"), StatusCode::OK, SIGNAL).await;
    assert!(served.is_some());
    let metrics = admin_text(&sluice, "/metrics").await;
    for reason in ["max-worker-connections", "no-first-bytes"] {
        let series = format!("sluice_downstream_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&series), "{reason}: {metrics}");
    }
}

#[tokio::test]
async fn a_quiet_websocket_is_closed_after_the_tunnel_idle_timeout() {
    let ws_addr = start_websocket_echo().await;
    let m = Manifests::new();
    m.write(
        "ws.yaml",
        &(service_yaml("ws", &[ws_addr])
            + &ingress_yaml("ws", None, &[], &[("/", "Prefix", "ws")])),
    );
    let sluice = start_sluice(m.path(), "tunnel-idle-timeout: 1s").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", sluice.http_addr))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // Then silence: sluice closes the tunnel, which the client sees as the end.
    let ended = tokio::time::timeout(SIGNAL, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle tunnel was not closed");
}

/// Pods `main` and `canary` behind Ingresses `site` and `site-canary` (a
/// canary by header `x-canary`) for `site.example`, with extra annotations.
async fn canary_pair(
    main_annotations: &[(&str, &str)],
    canary_annotations: &[(&str, &str)],
    config: &str,
) -> (Upstream, Upstream, Manifests, Server) {
    let main = start_upstream("main").await;
    let canary = start_upstream("canary").await;
    let mut canary_all = vec![
        ("nginx.ingress.kubernetes.io/canary", "true"),
        ("nginx.ingress.kubernetes.io/canary-by-header", "x-canary"),
    ];
    canary_all.extend_from_slice(canary_annotations);
    let m = Manifests::new();
    m.write(
        "site.yaml",
        &(service_yaml("main", &[main.addr])
            + &service_yaml("canary", &[canary.addr])
            + &ingress_yaml(
                "site",
                Some("site.example"),
                main_annotations,
                &[("/", "Prefix", "main")],
            )
            + &ingress_yaml(
                "site-canary",
                Some("site.example"),
                &canary_all,
                &[("/", "Prefix", "canary")],
            )),
    );
    let sluice = start_sluice(m.path(), config).await;
    (main, canary, m, sluice)
}

/// A canary for clients of 203.0.113.0/24, and a per-client rate limit.
async fn identity_site(config: &str) -> (Upstream, Upstream, Manifests, Server) {
    canary_pair(
        // 1 a minute: nothing refills while the test runs.
        &[
            ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "1"),
        ],
        &[("sluice.io/canary-by-source-cidr", "203.0.113.0/24")],
        config,
    )
    .await
}

async fn as_client(sluice: &Server, forwarded_for: &str, canary: bool) -> Reply {
    let mut request = Request::get(format!("http://{}/", sluice.http_addr))
        .header("host", "site.example")
        .header("x-forwarded-for", forwarded_for);
    if canary {
        request = request.header("x-canary", "always");
    }
    send(&client(), request.body(Full::default()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_cannot_choose_the_address_every_decision_uses() {
    // Nobody trusted (the default): headers claim 203.0.113.7, the peer is 127.0.0.1.
    let (_main, canary, _m, sluice) = identity_site("").await;
    let reply = as_client(&sluice, "203.0.113.7", true).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.upstream(),
        "main",
        "`always` does not override the source range"
    );
    assert_eq!(reply.json()["headers"]["x-real-ip"][0], "127.0.0.1");
    // 1 r/min with a burst of 1 lets two through; claiming other addresses does
    // not get a third one through: there is one bucket, the peer's.
    assert_eq!(
        as_client(&sluice, "203.0.113.8", false).await.status,
        StatusCode::OK
    );
    let limited = as_client(&sluice, "203.0.113.9", false).await;
    assert_eq!(
        limited.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "one bucket: the peer's"
    );
    assert_eq!(canary.requests(), 0);

    // The edge tier is trusted: its X-Forwarded-For names the client.
    let edge = "use-forwarded-headers: true\nproxy-real-ip-cidr: 127.0.0.1/32";
    let (_main, canary, _m, sluice) = identity_site(edge).await;
    let reply = as_client(&sluice, "198.51.100.1, 203.0.113.7", true).await;
    assert_eq!(reply.upstream(), "canary");
    assert_eq!(reply.json()["headers"]["x-forwarded-for"][0], "203.0.113.7");
    // Each client has a bucket of its own: the third from one is limited.
    assert_eq!(
        as_client(&sluice, "203.0.113.7", true).await.status,
        StatusCode::OK
    );
    assert_eq!(
        as_client(&sluice, "198.51.100.2", false).await.status,
        StatusCode::OK
    );
    assert_eq!(
        as_client(&sluice, "203.0.113.7", true).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(canary.requests(), 2);
}

async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(SIGNAL, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn proxy_protocol_from_the_edge_names_the_client() {
    let config = "use-proxy-protocol: true\nproxy-real-ip-cidr: 127.0.0.1/32";
    let OneApp {
        sluice, upstream, ..
    } = one_app(config, &[]).await;
    let addr = sluice.http_addr;
    let request = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let v1 = [
        &b"PROXY TCP4 198.51.100.9 127.0.0.1 5000 80\r\n"[..],
        request,
    ]
    .concat();
    let answer = raw_exchange(addr, &v1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"x-real-ip\":[\"198.51.100.9\"]"),
        "{answer}"
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend([203, 0, 113, 5, 127, 0, 0, 1, 0x13, 0x88, 0, 80]);
    v2.extend(request);
    let answer = raw_exchange(addr, &v2).await;
    assert!(
        answer.contains("\"x-real-ip\":[\"203.0.113.5\"]"),
        "{answer}"
    );
    // Without the header, nothing is served.
    let before = upstream.requests();
    assert_eq!(raw_exchange(addr, request).await, "");
    assert_eq!(upstream.requests(), before);
}

#[tokio::test]
async fn a_request_means_one_thing_to_sluice_and_to_the_pod() {
    let public = start_upstream("public").await;
    let admin = start_upstream("admin").await;
    let m = Manifests::new();
    m.write(
        "site.yaml",
        &(service_yaml("public", &[public.addr])
            + &service_yaml("admin", &[admin.addr])
            + &ingress_yaml(
                "public",
                Some("shop.example"),
                &[],
                &[("/public", "Prefix", "public")],
            )
            + &ingress_yaml(
                "admin",
                Some("admin.example"),
                &[],
                &[("/", "Prefix", "admin")],
            )
            + &ingress_yaml(
                "admin-path",
                Some("shop.example"),
                &[],
                &[("/admin", "Prefix", "admin")],
            )),
    );
    let sluice = start_sluice(m.path(), "").await;
    let addr = sluice.http_addr;
    // Routed by the normalized path; the pod gets the URI as sent.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "//admin",
        "/%61dmin",
    ] {
        let reply = send(&client(), get(addr, "shop.example", path))
            .await
            .unwrap();
        assert_eq!(reply.upstream(), "admin", "{path}");
        assert_eq!(reply.json()["uri"], path);
    }
    let reply = send(&client(), get(addr, "shop.example", "/public/x"))
        .await
        .unwrap();
    assert_eq!(reply.upstream(), "public");
    let reply = send(&client(), get(addr, "shop.example", "/public/../../etc"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // An absolute-form target wins over Host, for routing and for the pod alike.
    let answer = raw_exchange(
        addr,
        b"GET http://admin.example/x HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"upstream\":\"admin\""), "{answer}");
    assert!(answer.contains("\"host\":[\"admin.example\"]"), "{answer}");

    // Only WebSocket upgrades reach a pod; another Upgrade is removed.
    let reply = send(
        &client(),
        Request::get(format!("http://{addr}/public/u"))
            .header("host", "shop.example")
            .header("connection", "upgrade")
            .header("upgrade", "h2c")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.json()["headers"].get("upgrade").is_none(),
        "{}",
        reply.text()
    );
    assert_eq!(public.requests.load(Ordering::SeqCst), 2);
}

/// A canary that speaks HTTP/1.1 behind a main backend that speaks h2c gets an
/// HTTP/1.1 request of its own, with its Host.
#[tokio::test]
async fn a_canary_gets_a_request_in_its_own_protocol() {
    let grpc = [("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")];
    let (_main, _canary, _m, sluice) = canary_pair(&grpc, &[], "").await;
    let reply = send(&client(), get(sluice.http_addr, "site.example", "/"))
        .await
        .unwrap();
    assert_eq!(
        (reply.upstream(), reply.json()["version"].clone()),
        ("main".into(), "HTTP/2.0".into())
    );
    let request = Request::get(format!("http://{}/", sluice.http_addr))
        .header("host", "site.example")
        .header("x-canary", "always")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    let seen = reply.json();
    assert_eq!(reply.upstream(), "canary");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["headers"]["host"][0], "site.example");
}

/// An HTTP/2 client that stops sending requests is let go after `keep-alive`:
/// a GOAWAY, then the connection closes.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_keep_alive() {
    let OneApp { sluice, .. } = one_app("keep-alive: 1s", &[]).await;
    let tcp = TcpStream::connect(sluice.http_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get("http://a/")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let ended = tokio::time::timeout(SIGNAL, conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
}

/// The access log names the real client and cannot be forged: a Host that is no
/// host name is refused (and logged escaped), and a `$variable` inside a
/// client's value stays text.
#[tokio::test]
async fn access_log_lines_name_the_real_client_and_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = format!(
        "access-log: {}\naccess-log-format: '$client \"$host\" $status'\nuse-forwarded-headers: true\nproxy-real-ip-cidr: 127.0.0.1/32\n",
        log.display()
    );
    let OneApp { sluice, .. } = one_app(&config, &[]).await;
    let request = Request::get(format!("http://{}/", sluice.http_addr))
        .header("host", "a\" 200\\n$status")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let written = eventually(SIGNAL, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.lines().count() == 1 }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(written.is_some(), "{text}");
    assert_eq!(text, "203.0.113.7 \"a\\x22 200\\x5Cn$status\" 400\n");
}

/// An HTTP/1.1 client that sends nothing after its answer is let go after
/// `keep-alive`, though a request head would get far longer.
#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_keep_alive() {
    let OneApp { sluice, .. } = one_app("keep-alive: 1s\nclient-header-timeout: 60s", &[]).await;
    let mut stream = TcpStream::connect(sluice.http_addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(SIGNAL, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle HTTP/1.1 connection was not closed"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
