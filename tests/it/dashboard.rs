//! The dashboard at `/` on the admin listener, driven by headless Chromium (the
//! Debian `chromium` package, installed by `scripts/test`) while traffic flows.
//! The page's script fills the DOM from `/api/*` and `/metrics`; the DOM
//! Chromium dumps after it ran is what is checked, and a screenshot is kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;

#[tokio::test]
async fn the_dashboard_shows_ingresses_endpoints_and_warnings_in_chromium() {
    let fast = start_upstream("fast").await;
    let slow = start_upstream("slow").await;
    slow.delay_ms.store(40, Ordering::Relaxed);
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("shop", &[fast.addr, slow.addr]));
    m.write(
        "shop.yaml",
        &ingress_yaml("shop", Some("shop.test"), &[], &[("/", "Prefix", "shop")]),
    );
    m.write(
        "broken.yaml",
        &invalid_ingress_yaml("broken", "broken.test", "shop"),
    );
    // A Gateway API route beside the Ingress, with its status.
    let gateway = gateway_yaml(
        "default",
        "edge",
        &["{name: http, port: 80, protocol: HTTP}"],
    );
    m.write(
        "gateway.yaml",
        &(gateway
            + r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop-route, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [route.test]
  rules: [{backendRefs: [{name: shop, port: 80}]}]
"#),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    for _ in 0..20 {
        assert_eq!(
            status_of(&http, get(sluice.http_addr, "shop.test", "/")).await,
            StatusCode::OK
        );
    }
    // Traffic keeps flowing while the page polls.
    let addr = sluice.http_addr;
    let traffic = tokio::spawn(async move {
        loop {
            let _ = send(&http, get(addr, "shop.test", "/")).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let url = format!("http://{}/", sluice.admin_addr);
    let dom = chromium(&url, &["--dump-dom"]).await;
    let dom = String::from_utf8_lossy(&dom);
    for expected in [
        r#"data-host="shop.test""#.to_owned(),
        format!(r#"data-address="{}""#, fast.addr),
        format!(r#"data-address="{}""#, slow.addr),
        r#"data-ingress="default/shop""#.to_owned(),
        r#"class="badge closed""#.to_owned(),
        "invalid-annotation".to_owned(),
        "default/broken".to_owned(),
        r#"data-host="route.test""#.to_owned(),
        "HTTPRoute default/shop-route".to_owned(),
        r#"data-object="Gateway default/edge""#.to_owned(),
        r#"data-object="HTTPRoute default/shop-route""#.to_owned(),
        "Programmed: Programmed".to_owned(),
        "http (1 route)".to_owned(),
    ] {
        assert!(dom.contains(&expected), "{expected} missing from:\n{dom}");
    }
    // The second poll turned counter differences into a rate.
    let rps = dom
        .split(r#"<td class="num rps">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default();
    assert!(rps.parse::<f64>().is_ok(), "req/s is {rps:?} in:\n{dom}");

    let screenshot = artifact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let arg = format!("--screenshot={}", screenshot.display());
    chromium(&url, &[&arg, "--window-size=1280,1100"]).await;
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("dashboard screenshot: {}", screenshot.display());
    traffic.abort();
}

/// Runs headless Chromium on `url` (after its scripts had a few seconds of
/// virtual time) and returns its standard output.
async fn chromium(url: &str, args: &[&str]) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("chromium finished within a minute")
        .expect("chromium is installed by scripts/test");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Kept after the run: `target/tmp/artifacts`.
fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
