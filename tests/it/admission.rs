//! The validating admission webhook (issue #23): AdmissionReview v1 sent
//! over TLS as the apiserver sends it (here by curl, trusting the test CA),
//! answered from the proxy's own translation.

use std::time::Duration;

use serde_json::{json, Value};
use sluice::admin::webhook::WebhookOptions;
use sluice::config::Config;
use sluice::server::{Options, Server, Source};

use crate::support::pki::Pki;
use crate::support::*;

fn review(uid: &str, name: &str, class: &str, host: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "operation": "CREATE",
            "namespace": "default",
            "name": name,
            "object": {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
                ]}}]},
            },
        },
    })
}

/// POSTs a review to the webhook as the apiserver does; the answer's
/// `response`.
async fn post(sluice: &Server, ca: &std::path::Path, review: &Value) -> Value {
    try_post(sluice, ca, review)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The same, or why curl got no answer (a certificate it does not trust).
async fn try_post(sluice: &Server, ca: &std::path::Path, review: &Value) -> Result<Value, String> {
    let port = sluice.webhook_addr.unwrap().port();
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("sluice-webhook.sluice.svc:{port}:127.0.0.1"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &review.to_string(),
            &format!("https://sluice-webhook.sluice.svc:{port}/networking/v1/ingresses"),
        ])
        .output()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "{e}: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    assert_eq!(body["kind"], "AdmissionReview");
    Ok(body["response"].clone())
}

#[tokio::test]
async fn the_webhook_judges_ingresses_as_the_proxy_would_serve_them() {
    let pod = start_upstream("web").await;
    let m = Manifests::new();
    m.write(
        "all.yaml",
        &(service_yaml("web", &[pod.addr])
            + &ingress_yaml("shop", Some("shop.example"), &[], &[("/", "Prefix", "web")])),
    );
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf(&["sluice-webhook.sluice.svc"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file, ca) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut config = Config::from_yaml("access-log: \"off\"\n").unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.https_addr = "127.0.0.1:0".parse().unwrap();
    let sluice = Server::start(Options {
        config,
        config_source: None,
        source: Source::Manifests(m.path().to_owned()),
        class: Default::default(),
        webhook: Some((
            "127.0.0.1:0".parse().unwrap(),
            WebhookOptions {
                certificate: cert_file.clone(),
                key: key_file.clone(),
            },
        )),
    })
    .await
    .unwrap();
    // The certificate's Secret does not exist yet (a Job makes it): sluice
    // starts, and the webhook answers once the files are there.
    let first = review("0", "blog", "sluice", "blog.example", json!({}));
    assert!(try_post(&sluice, &ca, &first).await.is_err());
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&cert_file, &cert).unwrap();
    let answering = eventually(Duration::from_secs(10), || async {
        try_post(&sluice, &ca, &first).await.is_ok()
    })
    .await;
    assert!(
        answering.is_some(),
        "the webhook never took its certificate"
    );
    let http = client();
    let served = eventually(Duration::from_secs(10), || async {
        status_of(&http, get(sluice.http_addr, "shop.example", "/")).await == http::StatusCode::OK
    })
    .await;
    assert!(served.is_some());

    // A plain Ingress of our class: allowed, with nothing to say.
    let plain = post(
        &sluice,
        &ca,
        &review("a", "blog", "sluice", "blog.example", json!({})),
    )
    .await;
    assert_eq!(plain["uid"], "a");
    assert_eq!(plain["allowed"], true, "{plain}");
    assert!(plain.get("warnings").is_none(), "{plain}");
    // A path an older Ingress holds: denied, saying whose.
    let taken = post(
        &sluice,
        &ca,
        &review("b", "thief", "sluice", "shop.example", json!({})),
    )
    .await;
    assert_eq!(taken["allowed"], false, "{taken}");
    assert_eq!(taken["status"]["code"], 403);
    let message = taken["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("conflict") && message.contains("default/shop"),
        "{message}"
    );
    // An annotation that would skip it: denied with the proxy's words.
    let broken = post(
        &sluice,
        &ca,
        &review(
            "c",
            "blog",
            "sluice",
            "blog.example",
            json!({"nginx.ingress.kubernetes.io/proxy-read-timeout": "never"}),
        ),
    )
    .await;
    assert_eq!(broken["allowed"], false);
    assert!(broken["status"]["message"]
        .as_str()
        .unwrap()
        .contains("proxy-read-timeout"));
    // One sluice would only warn about: allowed, and kubectl prints why.
    let warned = post(
        &sluice,
        &ca,
        &review(
            "d",
            "blog",
            "sluice",
            "blog.example",
            json!({"nginx.ingress.kubernetes.io/use-gzip": "true"}),
        ),
    )
    .await;
    assert_eq!(warned["allowed"], true);
    assert!(
        warned["warnings"][0].as_str().unwrap().contains("use-gzip"),
        "{warned}"
    );
    // Another class's Ingress: untouched, whatever it asks.
    let theirs = post(
        &sluice,
        &ca,
        &review("e", "thief", "nginx", "shop.example", json!({})),
    )
    .await;
    assert_eq!(theirs["allowed"], true);
}
