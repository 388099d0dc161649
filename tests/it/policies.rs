//! Canary releases and per-Ingress rate limits, end to end.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use sluice::server::Server;

fn request(sluice: &Server, host: &str, headers: &[(&str, &str)]) -> Request<Full<bytes::Bytes>> {
    let mut builder = Request::get(format!("http://{}/", sluice.http_addr)).header("host", host);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::default()).unwrap()
}

async fn answered_by(
    http: &HttpClient,
    sluice: &Server,
    host: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = send(http, request(sluice, host, headers)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.upstream()
}

/// A stable and a canary Service behind `canary.test`, the canary Ingress with
/// these annotations (besides `canary: "true"`).
async fn canary_site(annotations: &[(&str, &str)]) -> (Manifests, Server) {
    let (m, sluice, _) = canary_site_with(annotations, "").await;
    (m, sluice)
}

/// The same, with extra config, and the stable pod's address.
async fn canary_site_with(
    annotations: &[(&str, &str)],
    config: &str,
) -> (Manifests, Server, std::net::SocketAddr) {
    let (stable, canary) = (
        start_upstream("stable").await,
        start_upstream("canary").await,
    );
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &(service_yaml("stable", &[stable.addr]) + &service_yaml("canary", &[canary.addr])),
    );
    m.write(
        "main.yaml",
        &ingress_yaml(
            "app",
            Some("canary.test"),
            &[],
            &[("/", "Prefix", "stable")],
        ),
    );
    write_canary(&m, annotations);
    let sluice = start_sluice(m.path(), config).await;
    (m, sluice, stable.addr)
}

fn write_canary(m: &Manifests, annotations: &[(&str, &str)]) {
    let mut all = vec![("nginx.ingress.kubernetes.io/canary", "true")];
    all.extend_from_slice(annotations);
    m.write(
        "canary.yaml",
        &ingress_yaml(
            "app-canary",
            Some("canary.test"),
            &all,
            &[("/", "Prefix", "canary")],
        ),
    );
}

#[tokio::test]
async fn canary_by_header_cookie_and_weight_with_live_changes() {
    let (m, sluice) = canary_site(&[
        ("nginx.ingress.kubernetes.io/canary-by-header", "x-canary"),
        ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
        ("nginx.ingress.kubernetes.io/canary-weight", "0"),
    ])
    .await;
    let http = client();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[], "stable"),
        (&[("x-canary", "always")], "canary"),
        (
            &[("x-canary", "never"), ("cookie", "canary=always")],
            "stable",
        ),
        (&[("cookie", "canary=always")], "canary"),
        (
            &[("x-canary", "other"), ("cookie", "canary=always")],
            "canary",
        ),
        (&[("cookie", "canary=never")], "stable"),
    ];
    for (headers, want) in cases {
        assert_eq!(
            answered_by(&http, &sluice, "canary.test", headers).await,
            want,
            "{headers:?}"
        );
    }

    // Editing the weight takes effect within a second, with no reload.
    write_canary(&m, &[("nginx.ingress.kubernetes.io/canary-weight", "100")]);
    let moved = eventually(Duration::from_secs(1), || async {
        answered_by(&http, &sluice, "canary.test", &[]).await == "canary"
    })
    .await;
    assert!(moved.is_some(), "weight 100 not applied within 1s");
    for _ in 0..10 {
        assert_eq!(
            answered_by(&http, &sluice, "canary.test", &[]).await,
            "canary"
        );
    }
    let metrics = send(
        &http,
        Request::get(format!("http://{}/metrics", sluice.admin_addr))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap()
    .text();
    assert!(
        metrics
            .contains("sluice_canary_requests_total{namespace=\"default\",ingress=\"app-canary\"}"),
        "canary traffic is counted"
    );
    // Stable and canary side by side, for success rate and latency.
    for canary in ["false", "true"] {
        let series = format!("sluice_requests_total{{namespace=\"default\",ingress=\"app{}\",service=\"{}\",canary=\"{canary}\",method=\"GET\",status=\"200\"}}", if canary == "true" { "-canary" } else { "" }, if canary == "true" { "canary" } else { "stable" });
        assert!(metrics.contains(&series), "missing {series} in\n{metrics}");
        assert!(metrics.contains(&format!(
            "sluice_request_duration_seconds_bucket{{namespace=\"default\",ingress=\"app{}\"",
            if canary == "true" { "-canary" } else { "" }
        )));
    }
}

#[tokio::test]
async fn canary_by_device_and_source_range() {
    let (m, sluice) = canary_site(&[
        (
            "sluice.io/canary-by-source-cidr",
            "127.0.0.0/8, 192.168.3.0/24",
        ),
        ("sluice.io/canary-by-user-agent", "iPhone|iPad"),
    ])
    .await;
    let http = client();
    let iphone = [(
        "user-agent",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
    )];
    assert_eq!(
        answered_by(&http, &sluice, "canary.test", &iphone).await,
        "canary"
    );
    assert_eq!(
        answered_by(&http, &sluice, "canary.test", &[("user-agent", "curl/8.5")]).await,
        "stable"
    );
    // A range the client is not in: both conditions must hold.
    write_canary(
        &m,
        &[
            ("sluice.io/canary-by-source-cidr", "10.0.0.0/8"),
            ("sluice.io/canary-by-user-agent", "iPhone"),
        ],
    );
    let moved = eventually(Duration::from_secs(1), || async {
        answered_by(&http, &sluice, "canary.test", &iphone).await == "stable"
    })
    .await;
    assert!(moved.is_some());
}

#[tokio::test]
async fn sticky_weight_keeps_each_user_on_one_side() {
    let (_m, sluice) = canary_site(&[
        ("nginx.ingress.kubernetes.io/canary-weight", "30"),
        ("sluice.io/canary-sticky-by", "header:x-user-id"),
    ])
    .await;
    let http = client();
    let mut sides = BTreeMap::new();
    for i in 0..200 {
        let user = format!("user-{i}");
        let first = answered_by(&http, &sluice, "canary.test", &[("x-user-id", &user)]).await;
        for _ in 0..2 {
            assert_eq!(
                answered_by(&http, &sluice, "canary.test", &[("x-user-id", &user)]).await,
                first,
                "{user} flipped"
            );
        }
        *sides.entry(first).or_insert(0) += 1;
    }
    let canary = sides.get("canary").copied().unwrap_or(0);
    assert!((30..=90).contains(&canary), "about 30% of users: {sides:?}");
}

/// Sends at `rate` per second for `seconds`, from `concurrency` paced clients.
async fn paced(
    sluice: &Server,
    host: &'static str,
    rate: u64,
    seconds: u64,
) -> BTreeMap<u16, usize> {
    let clients = 4;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = sluice.http_addr;
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut ticker =
                tokio::time::interval(Duration::from_micros(1_000_000 * clients / rate));
            let mut seen = BTreeMap::new();
            for _ in 0..rate * seconds / clients {
                ticker.tick().await;
                let reply = send(&http, get(addr, host, "/")).await.unwrap();
                *seen.entry(reply.status.as_u16()).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut total = BTreeMap::new();
    for task in tasks {
        for (k, v) in task.await.unwrap() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_limited_to_50_rps_passes_about_50_rps() {
    let (limited, free) = (
        start_upstream("limited").await,
        start_upstream("free").await,
    );
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &(service_yaml("limited", &[limited.addr]) + &service_yaml("free", &[free.addr])),
    );
    m.write(
        "limited.yaml",
        &ingress_yaml(
            "limited",
            Some("limited.test"),
            &[
                ("sluice.io/limit-rps", "50"),
                ("sluice.io/limit-burst", "5"),
            ],
            &[("/", "Prefix", "limited")],
        ),
    );
    m.write(
        "free.yaml",
        &ingress_yaml("free", Some("free.test"), &[], &[("/", "Prefix", "free")]),
    );
    let sluice = start_sluice(m.path(), "").await;

    let (limited_run, free_run) = tokio::join!(
        paced(&sluice, "limited.test", 200, 4),
        paced(&sluice, "free.test", 100, 4)
    );
    let passed = limited_run.get(&200).copied().unwrap_or(0);
    eprintln!("limited: {limited_run:?}, free: {free_run:?}");
    // 4 s at 50 rps, plus the burst: about 205.
    assert!(
        (185..=225).contains(&passed),
        "{passed} passed of {limited_run:?}"
    );
    assert_eq!(
        limited.requests(),
        passed,
        "refused requests never reach the pod"
    );
    assert_eq!(
        free_run.get(&200).copied(),
        Some(400),
        "another Ingress is unaffected"
    );

    let reply = send(&client(), get(sluice.http_addr, "limited.test", "/"))
        .await
        .unwrap();
    if reply.status == StatusCode::SERVICE_UNAVAILABLE {
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
    }
}

#[tokio::test]
async fn per_client_keys_and_ingress_nginx_semantics() {
    let app = start_upstream("app").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("app", &[app.addr]));
    m.write(
        "keyed.yaml",
        &ingress_yaml(
            "keyed",
            Some("keyed.test"),
            &[
                ("sluice.io/limit-rpm", "1"),
                ("sluice.io/limit-burst", "0"),
                ("sluice.io/limit-key", "header:x-api-key"),
            ],
            &[("/", "Prefix", "app")],
        ),
    );
    m.write(
        "nginx.yaml",
        &ingress_yaml(
            "nginx",
            Some("nginx.test"),
            &[
                ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
                ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "1"),
            ],
            &[("/", "Prefix", "app")],
        ),
    );
    m.write(
        "trusted.yaml",
        &ingress_yaml(
            "trusted",
            Some("trusted.test"),
            &[
                ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
                ("nginx.ingress.kubernetes.io/limit-whitelist", "127.0.0.0/8"),
            ],
            &[("/", "Prefix", "app")],
        ),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let status = |host: &'static str, key: &'static str| {
        let http = http.clone();
        let request = request(&sluice, host, &[("x-api-key", key)]);
        async move { status_of(&http, request).await }
    };
    assert_eq!(status("keyed.test", "alice").await, StatusCode::OK);
    let refused = send(
        &http,
        request(&sluice, "keyed.test", &[("x-api-key", "alice")]),
    )
    .await
    .unwrap();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        status("keyed.test", "bob").await,
        StatusCode::OK,
        "each key has its own budget"
    );

    // ingress-nginx's limit-rpm: per client address (burst = rate x multiplier).
    assert_eq!(status("nginx.test", "").await, StatusCode::OK);
    assert_eq!(status("nginx.test", "").await, StatusCode::OK);
    assert_eq!(
        status("nginx.test", "").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Whitelisted clients are never limited.
    for _ in 0..10 {
        assert_eq!(status("trusted.test", "").await, StatusCode::OK);
    }
}

#[tokio::test]
async fn access_log_lines_carry_the_canary_flag_and_follow_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = format!("access-log: {}\naccess-log-format: json\n", log.display());
    let canary = [("nginx.ingress.kubernetes.io/canary-by-header", "x-canary")];
    let (m, sluice, stable) = canary_site_with(&canary, &config).await;
    m.write(
        "quiet.yaml",
        &ingress_yaml(
            "quiet",
            Some("quiet.test"),
            &[("nginx.ingress.kubernetes.io/enable-access-log", "false")],
            &[("/", "Prefix", "stable")],
        ),
    );
    // The new file must be served before the requests below count on it.
    let http = client();
    assert!(until_status(
        &http,
        || request(&sluice, "quiet.test", &[]),
        StatusCode::OK,
        Duration::from_secs(2)
    )
    .await
    .is_some());
    assert_eq!(
        answered_by(&http, &sluice, "canary.test", &[]).await,
        "stable"
    );
    assert_eq!(
        answered_by(&http, &sluice, "canary.test", &[("x-canary", "always")]).await,
        "canary"
    );
    assert_eq!(
        answered_by(&http, &sluice, "quiet.test", &[]).await,
        "stable"
    );
    let _ = send(&http, request(&sluice, "nowhere.test", &[]))
        .await
        .unwrap();

    // The last request's line is there once the 404 for nowhere.test is.
    let written = eventually(Duration::from_secs(3), || {
        let done = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("nowhere.test");
        async move { done }
    })
    .await;
    assert!(
        written.is_some(),
        "no access log lines in {}",
        log.display()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The 404s of waiting for quiet.test to be served are logged too; skip them.
    lines.retain(|l| !(l["host"] == "quiet.test" && l["status"] == 404));
    assert_eq!(lines.len(), 3, "the quiet Ingress is not logged: {lines:?}");
    let (plain, canaried, missing) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(plain["canary"], false);
    assert_eq!(plain["ingress"], "app");
    assert_eq!(plain["status"], 200);
    assert_eq!(plain["upstream_status"], 200);
    assert!(plain["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(plain["upstream"], stable.to_string());
    assert_eq!(canaried["canary"], true);
    assert_eq!(canaried["ingress"], "app-canary");
    assert_eq!(canaried["service"], "canary");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["host"], "nowhere.test");

    // logrotate: move the file away, signal, and new lines land in a new file.
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    sluice.reopen_access_log();
    let reopened = eventually(Duration::from_secs(3), || {
        let http = http.clone();
        let request = request(&sluice, "canary.test", &[]);
        let log = log.clone();
        async move {
            let _ = send(&http, request).await;
            log.exists()
        }
    })
    .await;
    assert!(reopened.is_some(), "the access log was not reopened");
}

#[tokio::test]
async fn the_admin_api_shows_routes_canaries_endpoints_and_warnings() {
    let (m, sluice) =
        canary_site(&[("nginx.ingress.kubernetes.io/canary-by-header", "x-canary")]).await;
    m.write(
        "lonely.yaml",
        &ingress_yaml(
            "lonely",
            Some("lonely.test"),
            &[("nginx.ingress.kubernetes.io/canary", "true")],
            &[("/", "Prefix", "stable")],
        ),
    );
    let http = client();
    for _ in 0..5 {
        answered_by(&http, &sluice, "canary.test", &[]).await;
    }
    let api = |path: &str| {
        let http = http.clone();
        let request = Request::get(format!("http://{}{path}", sluice.admin_addr))
            .body(Full::default())
            .unwrap();
        async move { send(&http, request).await.unwrap().json() }
    };
    let warned = eventually(Duration::from_secs(2), || async {
        api("/api/warnings").await["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["reason"] == "canary-without-main")
    })
    .await;
    assert!(warned.is_some(), "the lonely canary is reported");

    let routes = api("/api/routes").await;
    let route = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "canary.test")
        .unwrap()
        .clone();
    assert_eq!(route["ingress"], "app");
    assert_eq!(route["path_type"], "Prefix");
    assert_eq!(route["canary"]["ingress"], "app-canary");
    assert_eq!(route["canary"]["backend"]["service"], "canary");
    let endpoint = &route["backend"]["endpoints"][0];
    assert_eq!(endpoint["breaker"], "closed");
    assert!(endpoint["ewma_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        endpoint["share"], 1.0,
        "the only stable pod took all recent traffic"
    );
    assert_eq!(routes["stats"]["endpoints"], 2);

    let config = api("/api/config").await;
    assert_eq!(config["running"]["load-balance"], "ewma");
    assert_eq!(config["running"]["proxy-body-size"], 1 << 20);
}

/// `limit-connections: 1`: while one answer is still being sent to a client
/// address, its next request is refused (`limit-conn-status-code`, here
/// 429); once that answer is gone, it is served again. Other routes and
/// Ingresses are not limited.
#[tokio::test]
async fn limit_connections_counts_requests_until_their_answer_is_sent() {
    let app = one_app(
        "limit-conn-status-code: 429\n",
        &[("nginx.ingress.kubernetes.io/limit-connections", "1")],
    )
    .await;
    let addr = app.sluice.http_addr;
    // A large answer the client does not read: the request stays in progress.
    let held = client()
        .request(
            Request::get(format!("http://{addr}/big"))
                .header("host", "a")
                .header("x-fake-body-bytes", "20000000")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let refused = send(&client(), get(addr, "a", "/small")).await.unwrap();
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text()
    );
    assert_eq!(app.upstream.requests(), 1, "the refused one reached no pod");
    drop(held);
    let served = until_status(
        &client(),
        || get(addr, "a", "/small"),
        StatusCode::OK,
        Duration::from_secs(10),
    )
    .await;
    assert!(served.is_some(), "the slot came back with the answer");
}
