//! End-to-end: requests through an in-process sluice to fake upstreams.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn routes_by_host_and_path() {
    let (a, b, c) = (
        start_upstream("a").await,
        start_upstream("b").await,
        start_upstream("c").await,
    );
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &(service_yaml("a", &[a.addr])
            + &service_yaml("b", &[b.addr])
            + &service_yaml("c", &[c.addr])),
    );
    m.write(
        "shop.yaml",
        &ingress_yaml(
            "shop",
            Some("shop.example"),
            &[],
            &[
                ("/", "Prefix", "a"),
                ("/api", "Prefix", "b"),
                ("/api/health", "Exact", "c"),
            ],
        ),
    );
    m.write(
        "wild.yaml",
        &ingress_yaml(
            "wild",
            Some("*.tenants.example"),
            &[],
            &[("/", "Prefix", "c")],
        ),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let cases = [
        ("shop.example", "/", Some("a")),
        ("SHOP.example:8080", "/cart", Some("a")),
        ("shop.example", "/api", Some("b")),
        ("shop.example", "/api/orders?x=1", Some("b")),
        ("shop.example", "/apix", Some("a")),
        ("shop.example", "/api/health", Some("c")),
        ("shop.example", "/api/health/", Some("b")),
        ("one.tenants.example", "/", Some("c")),
        ("two.one.tenants.example", "/", None),
        ("other.example", "/", None),
    ];
    for (host, path, want) in cases {
        let reply = send(&http, get(sluice.http_addr, host, path))
            .await
            .unwrap();
        match want {
            Some(upstream) => {
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "{host}{path}: {}",
                    reply.text()
                );
                assert_eq!(reply.upstream(), upstream, "{host}{path}");
                assert_eq!(
                    reply.json()["uri"],
                    path,
                    "the pod sees the original path and query"
                );
            }
            None => {
                assert_eq!(reply.status, StatusCode::NOT_FOUND, "{host}{path}");
                assert!(
                    reply.text().starts_with("404 Not Found"),
                    "{}",
                    reply.text()
                );
            }
        }
    }
}

#[tokio::test]
async fn forwarding_headers() {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("a", &[a.addr])
            + &ingress_yaml("app", Some("app.example"), &[], &[("/", "Prefix", "a")])),
    );
    let sluice = start_sluice(m.path(), "").await;
    let request = Request::get(format!("http://{}/x", sluice.http_addr))
        .header("host", "app.example")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("connection", "x-client-hop")
        .header("x-client-hop", "secret")
        .header("x-request-id", "req-123")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    let seen = &reply.json()["headers"];
    assert_eq!(
        seen["host"][0], "app.example",
        "the original Host reaches the pod"
    );
    assert_eq!(
        seen["x-forwarded-for"][0], "127.0.0.1",
        "the client's own X-Forwarded-For is replaced: it cannot choose its address"
    );
    assert_eq!(seen["x-real-ip"][0], "127.0.0.1");
    assert_eq!(
        seen["x-forwarded-proto"][0], "http",
        "not trusted by default"
    );
    assert_eq!(seen["x-forwarded-host"][0], "app.example");
    assert_eq!(
        seen["x-forwarded-port"][0],
        sluice.http_addr.port().to_string()
    );
    assert_eq!(seen["x-request-id"][0], "req-123");
    assert!(
        seen.get("x-client-hop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(
        reply.headers["x-request-id"], "req-123",
        "echoed on the response"
    );
    assert!(
        !reply.headers.contains_key("x-upstream-hop"),
        "hop-by-hop on the response too"
    );

    // Without an incoming id, one is generated and matches on both sides.
    let reply = send(&client(), get(sluice.http_addr, "app.example", "/"))
        .await
        .unwrap();
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(reply.json()["headers"]["x-request-id"][0], id.as_str());
}

#[tokio::test]
async fn trusted_forwarded_headers_are_kept() {
    let config = "use-forwarded-headers: true\nproxy-real-ip-cidr: 127.0.0.1/32";
    let OneApp { sluice, .. } = one_app(config, &[]).await;
    let request = Request::get(format!("http://{}/", sluice.http_addr))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
        .body(Full::default())
        .unwrap();
    let seen = send(&client(), request).await.unwrap().json()["headers"].clone();
    assert_eq!(seen["x-forwarded-proto"][0], "https");
    assert_eq!(seen["x-forwarded-port"][0], "443");
    assert_eq!(
        seen["x-forwarded-for"][0], "203.0.113.7",
        "the right-most untrusted hop"
    );
    assert_eq!(seen["x-real-ip"][0], "203.0.113.7");

    // `use-forwarded-headers` alone trusts nobody: the edge tier must be listed.
    let OneApp { sluice, .. } = one_app("use-forwarded-headers: true", &[]).await;
    let request = Request::get(format!("http://{}/", sluice.http_addr))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::default())
        .unwrap();
    let seen = send(&client(), request).await.unwrap().json()["headers"].clone();
    assert_eq!(seen["x-forwarded-proto"][0], "http");
    assert_eq!(seen["x-forwarded-for"][0], "127.0.0.1");
}

#[tokio::test]
async fn upstream_failures_map_to_502_503_504() {
    let a = start_upstream("a").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &(service_yaml("a", &[a.addr])
            + &service_yaml("dead", &[closed])
            + &service_yaml("empty", &[])),
    );
    m.write(
        "app.yaml",
        &ingress_yaml(
            "app",
            None,
            &[("sluice.io/proxy-read-timeout", "300ms")],
            &[
                ("/", "Prefix", "a"),
                ("/dead", "Prefix", "dead"),
                ("/empty", "Prefix", "empty"),
                ("/missing", "Prefix", "missing"),
            ],
        ),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let status = |path: &'static str, header: Option<(&'static str, &'static str)>| {
        let http = http.clone();
        let addr = sluice.http_addr;
        async move {
            let mut request = Request::get(format!("http://{addr}{path}"));
            if let Some((k, v)) = header {
                request = request.header(k, v);
            }
            let reply = send(&http, request.body(Full::default()).unwrap())
                .await
                .unwrap();
            (reply.status, reply.text())
        }
    };
    let (s, body) = status("/dead", None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.starts_with("502 Bad Gateway: connecting to the upstream failed"),
        "{body}"
    );
    assert_eq!(
        status("/empty", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status("/missing", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (s, body) = status("/", Some(("x-fake-delay-ms", "3000"))).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(
        status("/", Some(("x-fake-drop", "1"))).await.0,
        StatusCode::BAD_GATEWAY
    );
    // Upstream statuses pass through untouched.
    assert_eq!(
        status("/", Some(("x-fake-status", "503"))).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // And the proxy is fine afterwards.
    assert_eq!(status("/", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn body_size_limit() {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("a", &[a.addr]));
    m.write(
        "default.yaml",
        &ingress_yaml(
            "default-limit",
            Some("small.example"),
            &[],
            &[("/", "Prefix", "a")],
        ),
    );
    m.write(
        "big.yaml",
        &ingress_yaml(
            "big",
            Some("big.example"),
            &[("nginx.ingress.kubernetes.io/proxy-body-size", "8m")],
            &[("/", "Prefix", "a")],
        ),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let two_mb = Bytes::from(vec![b'x'; 2 << 20]);
    let post = |host: &str, body: Bytes| {
        Request::post(format!("http://{}/upload", sluice.http_addr))
            .header("host", host)
            .body(Full::new(body))
            .unwrap()
    };
    // Known length over the 1m default: refused before the upstream is contacted.
    let before = a.requests.load(std::sync::atomic::Ordering::SeqCst);
    let reply = send(&http, post("small.example", two_mb.clone()))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst), before);
    // Under an annotation's larger limit it streams through whole.
    let reply = send(&http, post("big.example", two_mb.clone()))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_bytes"], 2 << 20);
    // Chunked (no length): counted while streaming, still a 413.
    let mut curl = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: small.example",
            "-H",
            "Transfer-Encoding: chunked",
        ])
        .args([
            "--data-binary",
            "@-",
            &format!("http://{}/upload", sluice.http_addr),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = curl.stdin.take().unwrap();
    let _ = stdin.write_all(&two_mb).await;
    drop(stdin);
    let output = curl.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "413");
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let OneApp { sluice, .. } = one_app("", &[]).await;
    for raw in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],                     // no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n", // not a header line
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello on the plaintext port
    ] {
        let mut stream = TcpStream::connect(sluice.http_addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut response = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{raw:?} -> {response:?}"
        );
    }
    // The listener is unharmed.
    let reply = send(&client(), get(sluice.http_addr, "a", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let OneApp {
        upstream: a,
        sluice,
        ..
    } = one_app("", &[]).await;
    for _ in 0..20 {
        // A fresh client connection each time: only the upstream side is pooled.
        let reply = send(&client(), get(sluice.http_addr, "a", "/"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_keepalive_requests_recycles_connections() {
    let OneApp {
        upstream: a,
        sluice,
        ..
    } = one_app("upstream-keepalive-requests: 5", &[]).await;
    let http = client();
    for _ in 0..20 {
        assert_eq!(
            status_of(&http, get(sluice.http_addr, "a", "/")).await,
            StatusCode::OK
        );
    }
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test]
async fn client_keep_alive_requests_closes_after_n() {
    let OneApp { sluice, .. } = one_app("keep-alive-requests: 3", &[]).await;
    let http = client();
    let mut closes = Vec::new();
    for _ in 0..3 {
        let reply = send(&http, get(sluice.http_addr, "a", "/")).await.unwrap();
        closes.push(
            reply
                .headers
                .get("connection")
                .is_some_and(|v| v == "close"),
        );
    }
    assert_eq!(closes, [false, false, true]);
}

#[tokio::test]
async fn curl_http1_and_h2c_on_one_port() {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("a", &[a.addr])
            + &ingress_yaml("app", Some("curl.example"), &[], &[("/", "Prefix", "a")])),
    );
    let sluice = start_sluice(m.path(), "").await;
    let url = format!("http://{}/hello", sluice.http_addr);
    for (flag, want_version) in [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")] {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                flag,
                "-H",
                "Host: curl.example",
                "-w",
                "\n%{http_version} %{http_code}",
                &url,
            ])
            .output()
            .await
            .expect("curl is installed by scripts/test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, status_line) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(
            status_line,
            format!("{want_version} 200"),
            "{flag}: {stdout}"
        );
        let echo: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["upstream"], "a");
        // HTTP/1.1 to the pod either way; the Host comes from :authority for h2.
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["headers"]["host"][0], "curl.example");
    }
}

#[tokio::test]
async fn h2c_backend_protocol() {
    let OneApp {
        upstream: a,
        sluice,
        ..
    } = one_app("", &[("sluice.io/backend-protocol", "H2C")]).await;
    // From HTTP/1 the pod's :authority is the Host header; from HTTP/2 it is the
    // client's :authority (here the address it connected to).
    let h2_authority = sluice.http_addr.to_string();
    for (http, authority) in [
        (client(), "h2.example"),
        (h2c_client(), h2_authority.as_str()),
    ] {
        let request = Request::get(format!("http://{}/q?x=1", sluice.http_addr))
            .header("host", authority)
            .body(Full::default())
            .unwrap();
        let reply = send(&http, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let echo = reply.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["uri"], format!("http://{authority}/q?x=1"));
    }
    // One multiplexed connection to the pod.
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn health_endpoints() {
    let m = Manifests::new();
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let admin = |path: &str| {
        Request::get(format!("http://{}{path}", sluice.admin_addr))
            .body(Full::default())
            .unwrap()
    };
    // An empty directory is still a loaded (empty) table: healthy.
    assert_eq!(status_of(&http, admin("/healthz")).await, StatusCode::OK);
    assert_eq!(status_of(&http, admin("/readyz")).await, StatusCode::OK);
    assert_eq!(
        status_of(&http, admin("/nope")).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn send_timeout_when_the_upstream_stops_reading() {
    // Accepts connections and never reads: our writes stall once buffers fill.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("stuck", &[stuck])
            + &ingress_yaml(
                "app",
                None,
                &[
                    ("sluice.io/proxy-send-timeout", "300ms"),
                    ("sluice.io/proxy-body-size", "0"),
                ],
                &[("/", "Prefix", "stuck")],
            )),
    );
    let sluice = start_sluice(m.path(), "").await;
    let body = Bytes::from(vec![b'x'; 64 << 20]);
    let request = Request::post(format!("http://{}/upload", sluice.http_addr))
        .body(Full::new(body))
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("did not accept data in time"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn connect_timeout_when_the_upstream_never_accepts() {
    // A listener with a backlog of one that never accepts: once its queue is full
    // the kernel drops further SYNs, so connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let full_addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(full_addr)).await
        {
            fillers.push(stream);
        }
    }
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("full", &[full_addr])
            + &ingress_yaml(
                "app",
                None,
                &[("nginx.ingress.kubernetes.io/proxy-connect-timeout", "300ms")],
                &[("/", "Prefix", "full")],
            )),
    );
    let sluice = start_sluice(m.path(), "").await;
    let reply = send(&client(), get(sluice.http_addr, "x", "/"))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(
        reply
            .text()
            .contains("connecting to the upstream timed out"),
        "{}",
        reply.text()
    );
    drop(full);
}

#[tokio::test]
async fn global_default_backend() {
    let (a, fallback) = (start_upstream("a").await, start_upstream("fallback").await);
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &(service_yaml("a", &[a.addr]) + &service_yaml("fallback", &[fallback.addr])),
    );
    m.write(
        "app.yaml",
        &ingress_yaml("app", Some("app.example"), &[], &[("/app", "Prefix", "a")]),
    );
    let sluice = start_sluice(m.path(), "default-backend: default/fallback:80").await;
    let http = client();
    for (host, path, want) in [
        ("app.example", "/app", "a"),
        ("unknown.example", "/", "fallback"),
        ("app.example", "/else", "fallback"),
    ] {
        let reply = send(&http, get(sluice.http_addr, host, path))
            .await
            .unwrap();
        assert_eq!(reply.upstream(), want, "{host}{path}");
    }
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let OneApp { sluice, .. } = one_app("max-header-size: 16k", &[]).await;
    let mut stream = TcpStream::connect(sluice.http_addr).await.unwrap();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 << 10)
    );
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response:?}");
    // A normal request is fine.
    assert_eq!(
        send(&client(), get(sluice.http_addr, "a", "/"))
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
}
