//! TLS from sluice to pods, with real TLS on both sides: `backend-protocol:
//! HTTPS` to a pod with a certificate nobody trusts (no verification, as
//! ingress-nginx), verification against a CA from a Secret (and a wrong CA
//! failing with 502), a client certificate the pod requires, and `GRPCS`
//! (HTTP/2 over TLS).

use std::sync::Arc;

use crate::support::pki::Pki;
use crate::support::*;
use http::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// A pod's TLS: its certificate for `web.default.svc`, and the CA whose
/// client certificates it requires, if any.
fn pod_tls(pki: &Pki, client_ca: Option<&Pki>) -> rustls::ServerConfig {
    pod_tls_for(pki, &["web.default.svc"], client_ca)
}

fn pod_tls_for(pki: &Pki, names: &[&str], client_ca: Option<&Pki>) -> rustls::ServerConfig {
    let (cert, key, _) = pki.leaf(names);
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).unwrap()
}

/// A `kubernetes.io/tls` Secret with `ca.crt` (and a client certificate).
fn proxy_ssl_secret(name: &str, ca: &str, client: Option<(&str, &str)>) -> String {
    typed_secret(name, "kubernetes.io/tls", ca, client)
}

fn typed_secret(name: &str, kind: &str, ca: &str, client: Option<(&str, &str)>) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let mut yaml = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: {kind}\nstringData:\n  ca.crt: |\n{}",
        indent(ca)
    );
    if let Some((cert, key)) = client {
        yaml += &format!(
            "  tls.crt: |\n{}  tls.key: |\n{}",
            indent(cert),
            indent(key)
        );
    }
    yaml
}

/// Service `web` on `pod`, and one Ingress per (host, annotations).
async fn serve(
    pod: &Upstream,
    extra: &str,
    ingresses: &[(&str, Vec<(String, String)>)],
) -> (Manifests, sluice::server::Server) {
    let manifests = Manifests::new();
    let mut yaml = service_yaml("web", &[pod.addr]) + extra;
    for (i, (host, annotations)) in ingresses.iter().enumerate() {
        let annotations: Vec<(&str, &str)> = annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        yaml += &ingress_yaml(
            &format!("app{i}"),
            Some(host),
            &annotations,
            &[("/", "Prefix", "web")],
        );
    }
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(manifests.path(), "").await;
    (manifests, sluice)
}

fn key(name: &str, value: &str) -> (String, String) {
    (format!("{NGINX}{name}"), value.to_owned())
}

#[tokio::test]
async fn an_https_pod_is_reached_without_verification_by_default() {
    let pki = Pki::new();
    // A pod that speaks only HTTP/1.1 (another, below, offers HTTP/2 too).
    let mut h1_only = pod_tls(&pki, None);
    h1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
    let pod = start_tls_upstream("tls-pod", h1_only).await;
    let (_m, sluice) = serve(
        &pod,
        "",
        &[
            ("https.example", vec![key("backend-protocol", "HTTPS")]),
            ("legacy.example", vec![key("secure-backends", "true")]),
            ("plain.example", vec![]),
        ],
    )
    .await;
    let http = client();
    for host in ["https.example", "legacy.example"] {
        let reply = send(&http, get(sluice.http_addr, host, "/a?b=c"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["upstream"], "tls-pod");
        assert_eq!(seen["version"], "HTTP/1.1", "the pod offers only HTTP/1.1");
        assert_eq!(seen["uri"], "/a?b=c");
        assert_eq!(seen["headers"]["host"][0], host);
    }
    // Plain HTTP to a TLS pod is refused by the pod: TLS was really spoken above.
    let reply = send(&http, get(sluice.http_addr, "plain.example", "/"))
        .await
        .unwrap();
    assert_ne!(reply.status, StatusCode::OK);
    // The pooled TLS connection is reused.
    let before = pod.connections.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let reply = send(&http, get(sluice.http_addr, "https.example", "/"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let after = pod.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after - before <= 1,
        "{before} -> {after} connections for 5 requests"
    );
}

#[tokio::test]
async fn verification_against_a_ca_from_a_secret_and_a_wrong_ca_fails_with_502() {
    let pki = Pki::new();
    let other = Pki::new();
    let pod = start_tls_upstream("tls-pod", pod_tls(&pki, None)).await;
    let secrets = proxy_ssl_secret("pod-ca", &pki.ca_pem, None)
        + &proxy_ssl_secret("wrong-ca", &other.ca_pem, None);
    let verify = |secret: &str| {
        vec![
            key("backend-protocol", "HTTPS"),
            key("proxy-ssl-verify", "on"),
            key("proxy-ssl-secret", &format!("default/{secret}")),
        ]
    };
    let (_m, sluice) = serve(
        &pod,
        &secrets,
        &[
            ("good.example", verify("pod-ca")),
            ("bad.example", verify("wrong-ca")),
        ],
    )
    .await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "good.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = send(&http, get(sluice.http_addr, "bad.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let metrics = admin_text(&sluice, "/metrics").await;
    assert!(
        metrics.contains("sluice_upstream_tls_handshake_failures_total{reason=\"certificate\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_certificate_the_pod_requires_comes_from_the_secret() {
    let pki = Pki::new();
    let clients = Pki::new();
    let pod = start_tls_upstream("mtls-pod", pod_tls(&pki, Some(&clients))).await;
    let (cert, key_pem, _) = clients.leaf(&["sluice"]);
    let secrets = proxy_ssl_secret("client", &pki.ca_pem, Some((&cert, &key_pem)));
    let (_m, sluice) = serve(
        &pod,
        &secrets,
        &[
            (
                "with.example",
                vec![
                    key("backend-protocol", "HTTPS"),
                    key("proxy-ssl-secret", "default/client"),
                ],
            ),
            ("without.example", vec![key("backend-protocol", "HTTPS")]),
        ],
    )
    .await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "with.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = send(&http, get(sluice.http_addr, "without.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
}

/// `GRPCS`: HTTP/2 over TLS to the pod; a Secret of another namespace is refused.
#[tokio::test]
async fn grpcs_speaks_http2_over_tls() {
    let pki = Pki::new();
    let pod = start_tls_upstream("h2-pod", pod_tls(&pki, None)).await;
    let (_m, sluice) = serve(
        &pod,
        "",
        &[
            // Every host: an h2c client's `:authority` is the address it dialled.
            ("", vec![key("backend-protocol", "GRPCS")]),
            (
                "stolen.example",
                vec![
                    key("backend-protocol", "HTTPS"),
                    key("proxy-ssl-secret", "kube-system/admin-client"),
                ],
            ),
        ],
    )
    .await;
    let reply = send(&h2c_client(), get(sluice.http_addr, "", "/shop.Cart/Get"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["version"], "HTTP/2.0");
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert!(warnings.contains("another namespace"), "{warnings}");
}

/// `service-upstream: "true"`: to the Service's ClusterIP and port, not to
/// the pods its EndpointSlices list; without it, to the pods.
#[tokio::test]
async fn service_upstream_goes_to_the_cluster_ip() {
    let cluster_ip_side = start_upstream("behind-cluster-ip").await;
    let pod = start_upstream("pod").await;
    let manifests = Manifests::new();
    // The Service's port is the port the "ClusterIP" (loopback here) listens
    // on; its EndpointSlice names another pod.
    let service = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  clusterIP: 127.0.0.1\n  ports: [{{name: http, port: {}, targetPort: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-0\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"127.0.0.1\"]\n",
        cluster_ip_side.addr.port(),
        pod.addr.port()
    );
    let port = cluster_ip_side.addr.port().to_string();
    let ingress = |name: &str, host: &str, annotations: &[(&str, &str)]| {
        ingress_yaml(name, Some(host), annotations, &[("/", "Prefix", "web")])
            .replace("port: {number: 80}", &format!("port: {{number: {port}}}"))
    };
    let key = format!("{NGINX}service-upstream");
    manifests.write(
        "apps.yaml",
        &(service
            + &ingress("via", "via.example", &[(&key, "true")])
            + &ingress("pods", "pods.example", &[])),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "via.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.upstream(), "behind-cluster-ip");
    let reply = send(&http, get(sluice.http_addr, "pods.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.upstream(), "pod");
}

/// `ssl-passthrough` with `enable-ssl-passthrough`: a client verifying the
/// pod's own certificate reaches the pod through sluice, TLS untouched; other
/// names are terminated by sluice as usual.
#[tokio::test]
async fn ssl_passthrough_splices_to_the_pod() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let pod = start_tls_upstream(
        "passthrough-pod",
        pod_tls_for(&pki, &["pass.example"], None),
    )
    .await;
    let manifests = Manifests::new();
    let passthrough = format!("{NGINX}ssl-passthrough");
    manifests.write(
        "apps.yaml",
        &(service_yaml("web", &[pod.addr])
            + &ingress_yaml(
                "pass",
                Some("pass.example"),
                &[(&passthrough, "true")],
                &[("/", "Prefix", "web")],
            )
            + &ingress_yaml(
                "plain",
                Some("terminated.example"),
                &[],
                &[("/", "Prefix", "web")],
            )),
    );
    let sluice = start_sluice(manifests.path(), "enable-ssl-passthrough: true").await;
    let connect = |name: &'static str| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let addr = sluice.https_addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let server = rustls::pki_types::ServerName::try_from(name).unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server, tcp)
                .await
        }
    };
    let mut tls = connect("pass.example")
        .await
        .expect("the pod's own certificate, through sluice");
    tls.write_all(b"GET /through HTTP/1.1\r\nhost: pass.example\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("passthrough-pod") && answer.contains("/through"),
        "{answer}"
    );
    // Another name: sluice terminates (its own certificate, which this client does not trust).
    assert!(connect("terminated.example").await.is_err());
}

/// `HTTPS` to a pod that offers HTTP/2 by ALPN: HTTP/2, with the routed host
/// as `:authority`.
#[tokio::test]
async fn https_uses_http2_when_the_pod_offers_it() {
    let pki = Pki::new();
    let pod = start_tls_upstream("h2-tls-pod", pod_tls(&pki, None)).await;
    let (_m, sluice) = serve(
        &pod,
        "",
        &[("https.example", vec![key("backend-protocol", "HTTPS")])],
    )
    .await;
    let reply = send(&client(), get(sluice.http_addr, "https.example", "/x?y=1"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["uri"], "https://https.example/x?y=1");
}

/// `proxy-ssl-protocols: TLSv1.3` against a pod that speaks only TLS 1.2:
/// the handshake fails (502), so the setting is really applied; the older
/// versions in the list warn.
#[tokio::test]
async fn proxy_ssl_protocols_apply_what_rustls_speaks() {
    let pki = Pki::new();
    let (cert, key_pem, _) = pki.leaf(&["web.default.svc"]);
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls12_only = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain,
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let pod = start_tls_upstream("tls12-pod", tls12_only).await;
    let (_m, sluice) = serve(
        &pod,
        "",
        &[
            (
                "new.example",
                vec![
                    key("backend-protocol", "HTTPS"),
                    key("proxy-ssl-protocols", "TLSv1.1 TLSv1.3"),
                ],
            ),
            ("both.example", vec![key("backend-protocol", "HTTPS")]),
        ],
    )
    .await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "new.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let reply = send(&http, get(sluice.http_addr, "both.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert!(warnings.contains("TLSv1.1 not spoken"), "{warnings}");
}

/// `type: ExternalName`: the name is resolved in the background (here
/// `localhost`, from the hosts file) and requests go to its addresses at the
/// Ingress's port.
#[tokio::test]
async fn an_external_name_service_is_resolved_and_served() {
    let pod = start_upstream("external").await;
    let manifests = Manifests::new();
    let port = pod.addr.port();
    let yaml = "---\napiVersion: v1\nkind: Service\nmetadata: {name: outside, namespace: default}\nspec:\n  type: ExternalName\n  externalName: localhost\n".to_owned()
        + &ingress_yaml("ext", Some("ext.example"), &[], &[("/", "Prefix", "outside")])
        .replace("port: {number: 80}", &format!("port: {{number: {port}}}"))
        // The external service sees its own name, not the client's.
        + &ingress_yaml(
            "vhost",
            Some("vhost.example"),
            &[(&format!("{NGINX}upstream-vhost"), "api.outside.example")],
            &[("/", "Prefix", "outside")],
        )
        .replace("port: {number: 80}", &format!("port: {{number: {port}}}"));
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    let addr = sluice.http_addr;
    let served = until_status(
        &http,
        || get(addr, "ext.example", "/"),
        StatusCode::OK,
        std::time::Duration::from_secs(10),
    )
    .await;
    assert!(
        served.is_some(),
        "the ExternalName was not resolved and served"
    );
    let reply = send(&http, get(addr, "ext.example", "/")).await.unwrap();
    assert_eq!(reply.upstream(), "external");
    assert_eq!(reply.json()["headers"]["host"][0], "ext.example");
    let reply = send(&http, get(addr, "vhost.example", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["host"][0], "api.outside.example");
    assert_eq!(
        reply.json()["headers"]["x-forwarded-host"][0],
        "vhost.example"
    );
}

/// In a cluster, a CA alone is usually an `Opaque` Secret: it is watched too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_ca_secret_verifies_pods_in_a_cluster() {
    use crate::support::apiserver::FakeApiServer;
    let pki = Pki::new();
    let pod = start_tls_upstream("tls-pod", pod_tls(&pki, None)).await;
    let api = FakeApiServer::start().await;
    api.apply_yaml(INGRESS_CLASS);
    api.apply_yaml(&service_yaml("web", &[pod.addr]));
    api.apply_yaml(&typed_secret("pod-ca", "Opaque", &pki.ca_pem, None));
    // Neither read nor needed: a Secret of another type is never listed.
    api.apply_yaml(&typed_secret(
        "token",
        "kubernetes.io/service-account-token",
        "x",
        None,
    ));
    let annotations = [
        (format!("{NGINX}backend-protocol"), "HTTPS"),
        (format!("{NGINX}proxy-ssl-verify"), "on"),
        (format!("{NGINX}proxy-ssl-secret"), "default/pod-ca"),
    ];
    let annotations: Vec<(&str, &str)> =
        annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    api.apply_yaml(&ingress_yaml(
        "web",
        Some("web.test"),
        &annotations,
        &[("/", "Prefix", "web")],
    ));
    let dir = tempfile::tempdir().unwrap();
    let sluice = start_sluice_kube(&api.kubeconfig(dir.path()), Default::default()).await;
    let http = client();
    let served = until_status(
        &http,
        || get(sluice.http_addr, "web.test", "/"),
        StatusCode::OK,
        std::time::Duration::from_secs(10),
    )
    .await;
    assert!(
        served.is_some(),
        "{}",
        admin_text(&sluice, "/api/warnings").await
    );
    let mut selectors = api.list_selectors("secrets");
    selectors.sort();
    selectors.dedup();
    assert_eq!(selectors, ["type=Opaque", "type=kubernetes.io/tls"]);
}

/// A real gRPC server (tonic's health service) speaking TLS, behind
/// `GRPCS` with verification: unary calls, errors in trailers, and a stream.
#[tokio::test]
async fn a_tonic_pod_over_tls_is_served_behind_grpcs() {
    use tonic::transport::{Identity, Server as GrpcServer, ServerTlsConfig};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    // tonic builds its TLS on the process's provider, as sluice's `main` does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = Pki::new();
    let (cert, key_pem, _) = pki.leaf(&["grpc.default.svc"]);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod_addr = listener.local_addr().unwrap();
    let server = GrpcServer::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key_pem)))
        .unwrap()
        .add_service(health)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let manifests = Manifests::new();
    let annotations = [
        (format!("{NGINX}backend-protocol"), "GRPCS"),
        (format!("{NGINX}proxy-ssl-verify"), "on"),
        (format!("{NGINX}proxy-ssl-secret"), "default/grpc-ca"),
    ];
    let annotations: Vec<(&str, &str)> =
        annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    manifests.write(
        "grpc.yaml",
        &(service_yaml("grpc", &[pod_addr])
            + &typed_secret("grpc-ca", "Opaque", &pki.ca_pem, None)
            + &ingress_yaml("grpc", None, &annotations, &[("/", "Prefix", "grpc")])),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let channel = tonic::transport::Endpoint::try_from(format!("http://{}", sluice.http_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let reply = client.check(check("shop.Cart")).await;
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert_eq!(
        reply.expect(&warnings).get_ref().status(),
        ServingStatus::Serving
    );
    let status = client.check(check("no.Such")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut stream = client.watch(check("shop.Cart")).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing)
        .await;
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
}

/// A WebSocket to a TLS pod that would rather speak HTTP/2: the upgrade
/// goes over HTTP/1.1 on a connection of its own, and is tunnelled.
#[tokio::test]
async fn websockets_reach_tls_pods() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let pki = Pki::new();
    let ws_addr = start_websocket_echo_tls(pod_tls_for(&pki, &["ws.default.svc"], None)).await;
    let manifests = Manifests::new();
    let annotations = [(format!("{NGINX}backend-protocol"), "HTTPS")];
    let annotations: Vec<(&str, &str)> =
        annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    manifests.write(
        "ws.yaml",
        &(service_yaml("ws", &[ws_addr])
            + &ingress_yaml("ws", None, &annotations, &[("/ws", "Prefix", "ws")])),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", sluice.http_addr))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("hello {i}")));
    }
    ws.close(None).await.unwrap();
}
