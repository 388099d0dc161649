//! /metrics on the admin listener. Its own test binary: the recorder is
//! process-wide, and other tests' tables would change the gauges under us.

use std::time::Duration;

use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;

#[tokio::test]
async fn a_scrape_after_traffic_counts_requests_connections_endpoints_and_warnings() {
    // The table gauges and connection counts are process-wide.
    if !alone_in_process(
        "metrics::a_scrape_after_traffic_counts_requests_connections_endpoints_and_warnings",
    ) {
        return;
    }
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("a", &[a.addr]));
    m.write(
        "good.yaml",
        &ingress_yaml("good", Some("good.test"), &[], &[("/", "Prefix", "a")]),
    );
    m.write("bad.yaml", &invalid_ingress_yaml("bad", "bad.test", "a"));
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let traffic = client();
    let scrape = || async {
        let request = Request::get(format!("http://{}/metrics", sluice.admin_addr))
            .body(Full::default())
            .unwrap();
        let reply = send(&http, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        reply.text()
    };
    let text = scrape().await;
    for line in [
        "sluice_config_warnings{reason=\"invalid-annotation\"} 1",
        "sluice_table_routes 1",
        "sluice_table_endpoints 1",
        "sluice_config_last_swap_success 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("# TYPE sluice_config_swaps_total counter"));

    // Prometheus' own linter accepts the exposition, after real traffic.
    for _ in 0..3 {
        assert_eq!(
            status_of(&traffic, get(sluice.http_addr, "good.test", "/")).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status_of(&traffic, get(sluice.http_addr, "nowhere.test", "/")).await,
        StatusCode::NOT_FOUND
    );
    let text = scrape().await;
    assert!(
        text.contains("sluice_requests_total{namespace=\"default\",ingress=\"good\""),
        "{text}"
    );
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    let output = promtool.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("sluice_config_build_duration_seconds_bucket"));
    // Dashboards and alerts are checked against this list: it must hold
    // every family a scrape shows.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            sluice::telemetry::FAMILIES.contains(&name),
            "{name} is exported but not in telemetry::FAMILIES"
        );
    }

    // Per request: the code, and no route under empty labels.
    let good = r#"namespace="default",ingress="good",service="a",canary="false""#;
    let expected = [
        (format!(r#"sluice_requests_total{{{good},method="GET",status="200"}}"#), 3.0),
        (
            r#"sluice_requests_total{namespace="",ingress="",service="",canary="false",method="GET",status="404"}"#.to_owned(),
            1.0,
        ),
        (format!("sluice_request_duration_seconds_count{{{good}}}"), 3.0),
        (format!("sluice_upstream_response_duration_seconds_count{{{good}}}"), 3.0),
        (format!("sluice_response_size_bytes_count{{{good}}}"), 3.0),
        (format!("sluice_request_size_bytes_count{{{good}}}"), 3.0),
        (format!("sluice_request_size_bytes_sum{{{good}}}"), 0.0),
        // Open while the client keeps its connection alive; the scrapes go to
        // the admin port, which is not counted.
        (r#"sluice_downstream_connections{protocol="http1"}"#.to_owned(), 1.0),
    ];
    let settled = eventually(Duration::from_secs(2), || async {
        let text = scrape().await;
        expected
            .iter()
            .all(|(series, want)| value(&text, series) == Some(*want))
    })
    .await;
    let text = scrape().await;
    assert!(settled.is_some(), "expected {expected:?} in:\n{text}");
    let body_bytes = value(&text, &format!("sluice_response_size_bytes_sum{{{good}}}")).unwrap();
    assert!(
        body_bytes > 3.0 * 50.0,
        "the fake pod answers JSON of its request: {text}"
    );

    // Upstream connections: every new one was timed; new and reused add up to
    // the requests (the split depends on when the first returned to the pool).
    let new = value(
        &text,
        r#"sluice_upstream_connection_uses_total{connection="new"}"#,
    )
    .unwrap();
    let reused = value(
        &text,
        r#"sluice_upstream_connection_uses_total{connection="reused"}"#,
    )
    .unwrap_or(0.0);
    assert_eq!(new + reused, 3.0, "{text}");
    assert_eq!(
        value(
            &text,
            &format!("sluice_upstream_connect_duration_seconds_count{{{good}}}")
        ),
        Some(new)
    );
    assert!(
        value(
            &text,
            r#"sluice_upstream_connections_open{protocol="http1"}"#
        )
        .unwrap()
            >= 1.0
    );

    // Per endpoint, read from the live table at scrape time.
    let endpoint = format!(
        r#"namespace="default",service="a",port="80",endpoint="{}""#,
        a.addr
    );
    assert_eq!(
        value(
            &text,
            &format!("sluice_endpoint_breaker_state{{{endpoint}}}")
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("sluice_endpoint_in_flight{{{endpoint}}}")),
        Some(0.0)
    );
    let ewma = value(
        &text,
        &format!("sluice_endpoint_latency_ewma_seconds{{{endpoint}}}"),
    )
    .unwrap();
    assert!(ewma > 0.0 && ewma < 1.0, "{ewma}");
    assert!(
        value(
            &text,
            &format!("sluice_upstream_connections_idle{{{endpoint}}}")
        )
        .unwrap()
            >= 1.0
    );

    // A closed client connection leaves the gauge.
    drop(traffic);
    let closed = eventually(Duration::from_secs(2), || async {
        value(
            &scrape().await,
            r#"sluice_downstream_connections{protocol="http1"}"#,
        ) == Some(0.0)
    })
    .await;
    assert!(closed.is_some(), "{}", scrape().await);

    // Fixed: the warning count drops to zero.
    m.write(
        "bad.yaml",
        &ingress_yaml("bad", Some("bad.test"), &[], &[("/", "Prefix", "a")]),
    );
    let fixed = eventually(Duration::from_secs(2), || async {
        scrape()
            .await
            .lines()
            .any(|l| l == "sluice_config_warnings{reason=\"invalid-annotation\"} 0")
    })
    .await;
    assert!(fixed.is_some());
    drop(sluice);

    // The flag for classes, and metrics off. (Same test: the recorder is
    // process-wide and the table gauges above must not see other instances.)
    for (name, config) in [
        ("classes", "request-metrics-status: class"),
        ("quiet", "request-metrics: false"),
    ] {
        let m = Manifests::new();
        m.write("svc.yaml", &service_yaml("a", &[a.addr]));
        let host = format!("{name}.test");
        m.write(
            "ing.yaml",
            &ingress_yaml(name, Some(&host), &[], &[("/", "Prefix", "a")]),
        );
        let sluice = start_sluice(m.path(), config).await;
        assert_eq!(
            status_of(&http, get(sluice.http_addr, &host, "/")).await,
            StatusCode::OK
        );
        let request = Request::get(format!("http://{}/metrics", sluice.admin_addr))
            .body(Full::default())
            .unwrap();
        let text = send(&http, request).await.unwrap().text();
        let series = format!(
            r#"sluice_requests_total{{namespace="default",ingress="{name}",service="a",canary="false",method="GET",status="2xx"}}"#
        );
        match name {
            "classes" => assert_eq!(value(&text, &series), Some(1.0), "{text}"),
            _ => assert!(!text.contains(&format!("ingress=\"{name}\"")), "{text}"),
        }
    }
}

/// The value of one series in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}
