//! /metrics on the admin listener. Its own test binary: the recorder is
//! process-wide, and other tests' tables would change the gauges under us.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn control_plane_metrics_count_rejected_ingresses() {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("a", &[a.addr]));
    m.write(
        "good.yaml",
        &ingress_yaml("good", Some("good.test"), &[], &[("/", "Prefix", "a")]),
    );
    m.write(
        "bad.yaml",
        &ingress_yaml(
            "bad",
            Some("bad.test"),
            &[("sluice.io/proxy-read-timeout", "never")],
            &[("/", "Prefix", "a")],
        ),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
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
            status_of(&http, get(sluice.http_addr, "good.test", "/")).await,
            StatusCode::OK
        );
    }
    let _ = send(&http, get(sluice.http_addr, "nowhere.test", "/"))
        .await
        .unwrap();
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
}
