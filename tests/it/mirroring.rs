//! `mirror-target`: copies of requests go to another server, fire and
//! forget, as ingress-nginx's mirror (the client's method, headers and
//! body; the target's `Host` or `mirror-host`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// An app pod and a mirror pod, one Ingress mirroring to the second with
/// `annotations` (`TARGET` in a value is the mirror's address).
async fn mirrored(
    annotations: &[(&str, &str)],
) -> (Upstream, Upstream, Manifests, sluice::server::Server) {
    let app = start_upstream("app").await;
    let copy = start_upstream("copy").await;
    let target = copy.addr.to_string();
    let annotations: Vec<(String, String)> = annotations
        .iter()
        .map(|(k, v)| (format!("{NGINX}{k}"), v.replace("TARGET", &target)))
        .collect();
    let pairs: Vec<(&str, &str)> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("app", &[app.addr])
            + &ingress_yaml(
                "app",
                Some("shop.example"),
                &pairs,
                &[("/", "Prefix", "app")],
            )),
    );
    let sluice = start_sluice(m.path(), "").await;
    (app, copy, m, sluice)
}

fn post(sluice: &sluice::server::Server, path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{}{path}", sluice.http_addr))
        .header("host", "shop.example")
        .header("x-client", "yes")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn first_copy(copy: &Upstream) -> serde_json::Value {
    let seen = eventually(Duration::from_secs(10), || async {
        !copy.seen.lock().unwrap().is_empty()
    })
    .await;
    assert!(seen.is_some(), "the mirror got a copy");
    copy.seen.lock().unwrap()[0].clone()
}

#[tokio::test]
async fn a_copy_with_method_uri_headers_and_body_goes_to_the_mirror() {
    let (app, copy, _m, sluice) = mirrored(&[
        ("mirror-target", "http://TARGET$request_uri"),
        ("mirror-host", "test.env.example"),
    ])
    .await;
    let reply = send(&client(), post(&sluice, "/cart?item=7", "hello"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.upstream(), "app", "the client gets the app's answer");
    assert_eq!(reply.json()["body_bytes"], 5);
    let seen = first_copy(&copy).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/cart?item=7");
    assert_eq!(seen["body_bytes"], 5);
    assert_eq!(seen["headers"]["host"][0], "test.env.example");
    assert_eq!(seen["headers"]["x-client"][0], "yes");
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn mirror_request_body_off_sends_the_copy_without_its_body() {
    let (_app, copy, _m, sluice) = mirrored(&[
        ("mirror-target", "http://TARGET/shadow$request_uri"),
        ("mirror-request-body", "off"),
    ])
    .await;
    let reply = send(&client(), post(&sluice, "/pay", "secret"))
        .await
        .unwrap();
    assert_eq!(reply.json()["body_bytes"], 6, "the app still gets it");
    let seen = first_copy(&copy).await;
    assert_eq!(seen["uri"], "/shadow/pay");
    assert_eq!(seen["body_bytes"], 0);
    let target = copy.addr.to_string();
    assert_eq!(
        seen["headers"]["host"][0],
        target.split(':').next().unwrap(),
        "the target's host"
    );
}

/// A slow mirror does not hold the client's answer, and a dead one is only
/// counted.
#[tokio::test]
async fn a_slow_or_dead_mirror_never_touches_the_request() {
    let (_app, copy, _m, sluice) =
        mirrored(&[("mirror-target", "http://TARGET$request_uri")]).await;
    copy.set_delay(60_000);
    let answered = tokio::time::timeout(
        Duration::from_secs(20),
        send(&client(), post(&sluice, "/", "x")),
    )
    .await
    .expect("the answer does not wait for the mirror")
    .unwrap();
    assert_eq!(answered.status, StatusCode::OK);
    assert_eq!(answered.upstream(), "app");

    copy.stop();
    let reply = send(&client(), post(&sluice, "/again", "x")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let failed = eventually(Duration::from_secs(10), || async {
        admin_text(&sluice, "/metrics")
            .await
            .lines()
            .any(|l| l.starts_with("sluice_mirror_requests_total{result=\"failed\"}"))
    })
    .await;
    assert!(failed.is_some(), "the failed copy is counted");
}
