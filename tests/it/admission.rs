//! The validating admission webhook (issue #23): AdmissionReview v1 sent
//! over TLS as the apiserver sends it (here by curl, trusting the test CA),
//! answered from the proxy's own translation.

use std::time::Duration;

use serde_json::{json, Value};
use sluice::admin::webhook::WebhookOptions;
use sluice::server::Server;

use crate::support::apiserver::FakeApiServer;
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

/// sluice serving `manifests`, with the webhook on the certificate files.
async fn serve(
    manifests: &Manifests,
    certificate: &std::path::Path,
    key: &std::path::Path,
) -> Server {
    let mut options = sluice_options(manifests.path(), "");
    let files = WebhookOptions {
        certificate: certificate.to_owned(),
        key: key.to_owned(),
    };
    options.webhook = Some(("127.0.0.1:0".parse().unwrap(), files));
    Server::start(options).await.unwrap()
}

#[tokio::test]
async fn the_webhook_judges_ingresses_as_the_proxy_would_serve_them() {
    let pod = start_upstream("web").await;
    let m = Manifests::new();
    m.write(
        "all.yaml",
        &(service_yaml("web", &[pod.addr])
            + &ingress_yaml("shop", Some("shop.example"), &[], &[("/", "Prefix", "web")])
            + &gateway_yaml(
                "default",
                "edge",
                &["{name: http, port: 80, protocol: HTTP}"],
            )),
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
    let sluice = serve(&m, &cert_file, &key_file).await;
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
    // Whatever its name sorts as: a new object is the newer one.
    let early = post(
        &sluice,
        &ca,
        &review("b2", "aaa", "sluice", "shop.example", json!({})),
    )
    .await;
    assert_eq!(early["allowed"], false, "{early}");
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
    // An HTTPRoute of our Gateway: a plain one is allowed; one whose rule
    // sluice would answer 500 for (a filter it does not know) is denied.
    let plain_route = post(&sluice, &ca, &route_review("f", json!([]))).await;
    assert_eq!(plain_route["allowed"], true, "{plain_route}");
    let extension = json!([{"type": "ExtensionRef",
        "extensionRef": {"group": "example.com", "kind": "Filter", "name": "f"}}]);
    let refused = post(&sluice, &ca, &route_review("g", extension)).await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unsupported-filter"),
        "{refused}"
    );
}

/// A review of an HTTPRoute of the Gateway `edge`, with `filters`.
fn route_review(uid: &str, filters: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "gateway.networking.k8s.io", "version": "v1", "kind": "HTTPRoute"},
            "resource": {"group": "gateway.networking.k8s.io", "version": "v1", "resource": "httproutes"},
            "operation": "CREATE",
            "namespace": "default",
            "name": "route",
            "object": {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "route", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["route.example"],
                    "rules": [{"filters": filters, "backendRefs": [{"name": "web", "port": 80}]}]},
            },
        },
    })
}

/// Whoever reaches the webhook's port holds nothing for long: a client
/// that starts a request and never finishes its head is closed (the admin
/// listener's bounds: 10 s for a head, 256 connections).
#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = Manifests::new();
    m.write("all.yaml", &service_yaml("web", &[]));
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf(&["sluice-webhook.sluice.svc"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let sluice = serve(&m, &cert_file, &key_file).await;
    let tcp = tokio::net::TcpStream::connect(sluice.webhook_addr.unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("sluice-webhook.sluice.svc").unwrap();
    let mut tls = pki
        .connector(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"POST /networking/v1/ingresses HTTP/1.1\r\nhost: sluice\r\n")
        .await
        .unwrap();
    // The bound is generous; the server closes at its 10 s head timeout.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half-sent request was held open");
}

/// `sluice webhook-certificate` with the arguments of deploy/'s Job.
async fn certificate_job(kubeconfig: &std::path::Path) -> (bool, String) {
    let text = std::fs::read_to_string("deploy/admission-webhook/certificate-job.yaml").unwrap();
    let job = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "Job")
        .unwrap();
    let args: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

/// One key of a Secret in the fake apiserver, decoded.
fn secret_key(api: &FakeApiServer, key: &str) -> Vec<u8> {
    use base64::Engine;
    let secret = api
        .object("Secret", "sluice", "sluice-webhook-cert")
        .expect("the Secret");
    let encoded = secret["data"][key].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap()
}

fn ca_bundle(api: &FakeApiServer) -> Vec<u8> {
    use base64::Engine;
    let configuration = api
        .object("ValidatingWebhookConfiguration", "", "sluice")
        .unwrap();
    let bundle = configuration["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .unwrap()
}

fn webhook_writes(api: &FakeApiServer) -> usize {
    api.writes()
        .iter()
        .filter(|w| w.path.contains("validatingwebhookconfigurations"))
        .count()
}

/// The certificate without cert-manager: deploy/'s Job makes the Secret and
/// fills the webhook's caBundle; curl, trusting only that caBundle as the
/// apiserver does, reaches sluice serving the Secret's certificate under
/// the Service's name. Run again, the Job changes nothing; a Secret whose
/// certificate is no good is replaced, and the caBundle follows.
#[tokio::test]
async fn the_certificate_job_makes_what_the_apiserver_trusts() {
    let api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    // The Job may start before the webhook configuration is applied: it
    // fails, saying so, and its Secret is kept for the next run.
    let (ok, said) = certificate_job(&kubeconfig).await;
    assert!(!ok && said.contains("run again"), "{said}");
    let first_key = secret_key(&api, "tls.key");
    let webhook =
        std::fs::read_to_string("deploy/admission-webhook/common/validatingwebhook.yaml").unwrap();
    api.apply_yaml(&webhook);
    let (ok, said) = certificate_job(&kubeconfig).await;
    assert!(
        ok && said.contains("kept") && said.contains("caBundle set on 1"),
        "{said}"
    );
    assert_eq!(secret_key(&api, "tls.key"), first_key);
    assert_eq!(ca_bundle(&api), secret_key(&api, "ca.crt"));
    let secret = api
        .object("Secret", "sluice", "sluice-webhook-cert")
        .unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");

    // sluice serves the Secret's certificate, as the DaemonSet mounts it.
    let pod = start_upstream("web").await;
    let m = Manifests::new();
    m.write(
        "all.yaml",
        &(service_yaml("web", &[pod.addr])
            + &ingress_yaml("shop", Some("shop.example"), &[], &[("/", "Prefix", "web")])),
    );
    let mounted = tempfile::tempdir().unwrap();
    let (cert_file, key_file, ca) = (
        mounted.path().join("tls.crt"),
        mounted.path().join("tls.key"),
        mounted.path().join("ca-bundle.crt"),
    );
    std::fs::write(&cert_file, secret_key(&api, "tls.crt")).unwrap();
    std::fs::write(&key_file, secret_key(&api, "tls.key")).unwrap();
    std::fs::write(&ca, ca_bundle(&api)).unwrap();
    let sluice = serve(&m, &cert_file, &key_file).await;
    let plain = review("a", "blog", "sluice", "blog.example", json!({}));
    let answering = eventually(Duration::from_secs(10), || async {
        try_post(&sluice, &ca, &plain).await.is_ok()
    })
    .await;
    assert!(
        answering.is_some(),
        "curl trusting the caBundle never got an answer"
    );
    let answered = post(&sluice, &ca, &plain).await;
    assert_eq!(answered["allowed"], true, "{answered}");

    // Again: nothing to do, nothing written.
    let writes = webhook_writes(&api);
    let (ok, said) = certificate_job(&kubeconfig).await;
    assert!(
        ok && said.contains("kept") && said.contains("already trusts"),
        "{said}"
    );
    assert_eq!(webhook_writes(&api), writes);

    // A Secret whose certificate another CA signed: replaced, and trusted.
    let stranger = Pki::new();
    let (cert, key, _) = stranger.leaf(&["sluice-webhook.sluice.svc"]);
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "sluice-webhook-cert", "namespace": "sluice"},
        "data": {
            "ca.crt": b64(&secret_key(&api, "ca.crt")),
            "tls.crt": b64(cert.as_bytes()),
            "tls.key": b64(key.as_bytes()),
        },
    }));
    let (ok, said) = certificate_job(&kubeconfig).await;
    assert!(
        ok && said.contains("replaced") && said.contains("not signed by ca.crt"),
        "{said}"
    );
    assert_ne!(secret_key(&api, "tls.key"), first_key);
    assert_eq!(ca_bundle(&api), secret_key(&api, "ca.crt"));
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
