//! TLS termination: certificates from Secrets chosen by SNI, ALPN, real clients
//! (curl, rustls, tonic), rotation, invalid Secrets, and HTTPS redirects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::pki::{secret_yaml, Pki};
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// An Ingress for `host` to Service `app`, with TLS from `secret`.
fn tls_ingress(
    name: &str,
    host: &str,
    secret: Option<&str>,
    annotations: &[(&str, &str)],
) -> String {
    let mut yaml = ingress_yaml(name, Some(host), annotations, &[("/", "Prefix", "app")]);
    if let Some(secret) = secret {
        yaml = yaml.replace(
            "spec:\n",
            &format!("spec:\n  tls:\n  - hosts: [\"{host}\"]\n    secretName: {secret}\n"),
        );
    }
    yaml
}

/// Handshakes with `sni` (None: no SNI at all, as for an IP address).
async fn handshake(
    pki: &Pki,
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(sni) => ServerName::try_from(sni.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    pki.connector(alpn).connect(name, tcp).await
}

fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A GET over an established TLS connection with HTTP/1.1.
async fn get_over(
    stream: TlsStream<TcpStream>,
    host: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    StatusCode,
    serde_json::Value,
) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (status, body) = request_on(&mut sender, host).await;
    (sender, status, body)
}

async fn request_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
) -> (StatusCode, serde_json::Value) {
    let request = Request::get("/tls")
        .header("host", host)
        .body(Full::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

struct Site {
    pki: Pki,
    manifests: Manifests,
    sluice: sluice::server::Server,
    a: Vec<u8>,
    wild: Vec<u8>,
    fallback: Vec<u8>,
}

async fn site() -> Site {
    let pki = Pki::new();
    let app = start_upstream("app").await;
    let (a_cert, a_key, a) = pki.leaf(&["a.test"]);
    let (w_cert, w_key, wild) = pki.leaf(&["*.wild.test"]);
    let (f_cert, f_key, fallback) = pki.leaf(&["fallback.test"]);
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("app", &[app.addr]));
    m.write(
        "secrets.yaml",
        &(secret_yaml("a-cert", &a_cert, &a_key)
            + &secret_yaml("wild-cert", &w_cert, &w_key)
            + &secret_yaml("fallback-cert", &f_cert, &f_key)),
    );
    m.write("a.yaml", &tls_ingress("a", "a.test", Some("a-cert"), &[]));
    m.write(
        "wild.yaml",
        &tls_ingress("wild", "*.wild.test", Some("wild-cert"), &[]),
    );
    let sluice = start_sluice(m.path(), "default-ssl-certificate: default/fallback-cert").await;
    Site {
        pki,
        manifests: m,
        sluice,
        a,
        wild,
        fallback,
    }
}

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default_and_alpn_picks_the_protocol() {
    let s = site().await;
    let addr = s.sluice.https_addr;
    let cases: [(Option<&str>, &Vec<u8>); 5] = [
        (Some("a.test"), &s.a),
        (Some("x.wild.test"), &s.wild),
        (Some("deep.x.wild.test"), &s.fallback),
        (Some("other.test"), &s.fallback),
        (None, &s.fallback),
    ];
    for (sni, want) in cases {
        // Identity only: the default certificate does not name these hosts.
        let tls = handshake_unverified(addr, sni).await;
        assert_eq!(&presented(&tls), want, "SNI {sni:?}");
    }

    for (alpn, want) in [(&b"h2"[..], &b"h2"[..]), (b"http/1.1", b"http/1.1")] {
        let tls = handshake(&s.pki, addr, Some("a.test"), &[alpn])
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(want));
    }

    // Session resumption: a client that comes back resumes instead of a full handshake.
    let client = s.pki.connector(&[b"http/1.1"]);
    let name = ServerName::try_from("a.test").unwrap();
    let first = client
        .connect(name.clone(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    let (_, status, _) = get_over(first, "a.test").await; // TLS 1.3 tickets arrive after the handshake
    assert_eq!(status, StatusCode::OK);
    let second = client
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );

    // Routed by Host, with the scheme passed on.
    let tls = handshake(&s.pki, addr, Some("a.test"), &[b"http/1.1"])
        .await
        .unwrap();
    let (_, status, echo) = get_over(tls, "a.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
}

/// Handshakes without verifying the certificate, to look at which one came.
async fn handshake_unverified(addr: SocketAddr, sni: Option<&str>) -> TlsStream<TcpStream> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    let name = sni.map_or(ServerName::IpAddress(addr.ip().into()), |n| {
        ServerName::try_from(n.to_owned()).unwrap()
    });
    TlsConnector::from(Arc::new(config))
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap()
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn without_a_default_certificate_a_self_signed_one_answers() {
    let pki = Pki::new();
    let m = Manifests::new();
    let sluice = start_sluice(m.path(), "").await;
    let err = handshake(&pki, sluice.https_addr, Some("nothing.test"), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let tls = handshake_unverified(sluice.https_addr, Some("nothing.test")).await;
    let der = presented(&tls);
    assert!(
        der.windows(14).any(|w| w == b"sluice.invalid"),
        "the generated certificate"
    );
}

#[tokio::test]
async fn curl_over_tls_with_http2_and_http1() {
    let s = site().await;
    let ca = s.manifests.path().join(".ca.pem");
    std::fs::write(&ca, &s.pki.ca_pem).unwrap();
    let port = s.sluice.https_addr.port();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                flag,
                "--resolve",
                &format!("a.test:{port}:127.0.0.1"),
                "--cacert",
            ])
            .arg(&ca)
            .args([
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                &format!("https://a.test:{port}/"),
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{version} 200"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn grpc_over_tls() {
    let pki = Pki::new();
    let (_reporter, grpc_addr) = start_grpc_health().await;
    let (cert, key, _) = pki.leaf(&["grpc.test"]);
    let m = Manifests::new();
    m.write(
        "grpc.yaml",
        &(service_yaml("app", &[grpc_addr]) + &secret_yaml("grpc-cert", &cert, &key)),
    );
    m.write(
        "ing.yaml",
        &tls_ingress(
            "grpc",
            "grpc.test",
            Some("grpc-cert"),
            &[("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")],
        ),
    );
    let sluice = start_sluice(m.path(), "").await;

    let addr = sluice.https_addr;
    let tls = Arc::new(pki.connector(&[b"h2"]));
    let connect = tower::service_fn(move |_uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let stream = tls
                .connect(ServerName::try_from("grpc.test").unwrap(), tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://grpc.test")
        .connect_with_connector(connect)
        .await
        .unwrap();
    assert_eq!(
        health_of(channel, "shop.Cart").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn rotation_reaches_new_handshakes_and_spares_open_connections() {
    let s = site().await;
    let addr = s.sluice.https_addr;
    let open = handshake(&s.pki, addr, Some("a.test"), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(presented(&open), s.a);
    let (mut sender, status, _) = get_over(open, "a.test").await;
    assert_eq!(status, StatusCode::OK);

    let (cert, key, rotated) = s.pki.leaf(&["a.test"]);
    s.manifests
        .write("rotated.yaml", &secret_yaml("a-cert", &cert, &key));
    s.manifests.remove("secrets.yaml");
    let (w_cert, w_key, _) = s.pki.leaf(&["*.wild.test"]);
    s.manifests.write(
        "wild-secret.yaml",
        &secret_yaml("wild-cert", &w_cert, &w_key),
    );
    // Generous bounds: they are only reached when the test fails, or on a
    // loaded machine.
    let seen = eventually(Duration::from_secs(5), || async {
        let tls = handshake(&s.pki, addr, Some("a.test"), &[]).await.unwrap();
        presented(&tls) == rotated
    })
    .await;
    assert!(
        seen.is_some(),
        "new handshakes did not get the rotated certificate within 5s"
    );
    // The connection opened before keeps working.
    assert_eq!(request_on(&mut sender, "a.test").await.0, StatusCode::OK);

    // A broken Secret: a warning, and the host keeps its last good certificate.
    let (_, other_key, _) = s.pki.leaf(&["a.test"]);
    s.manifests
        .write("rotated.yaml", &secret_yaml("a-cert", &cert, &other_key));
    // This instance's own warnings: the metric is process-wide, and other
    // tests' instances set it too.
    let warned = eventually(Duration::from_secs(5), || async {
        admin_text(&s.sluice, "/api/warnings")
            .await
            .contains("invalid-certificate")
    })
    .await;
    assert!(warned.is_some(), "the mismatched key was not reported");
    let tls = handshake(&s.pki, addr, Some("a.test"), &[]).await.unwrap();
    assert_eq!(presented(&tls), rotated);
}

#[tokio::test]
async fn plain_http_is_redirected_for_tls_hosts() {
    let s = site().await;
    s.manifests.write(
        "b.yaml",
        &tls_ingress(
            "b",
            "b.test",
            Some("a-cert"),
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
        ),
    );
    s.manifests.write(
        "c.yaml",
        &tls_ingress(
            "c",
            "c.test",
            None,
            &[("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")],
        ),
    );
    s.manifests.write(
        "e.yaml",
        &tls_ingress(
            "e",
            "e.test",
            None,
            &[
                ("nginx.ingress.kubernetes.io/force-ssl-redirect", "true"),
                (
                    "nginx.ingress.kubernetes.io/preserve-trailing-slash",
                    "true",
                ),
            ],
        ),
    );
    s.manifests
        .write("d.yaml", &tls_ingress("d", "d.test", None, &[]));
    let http = client();
    let addr = s.sluice.http_addr;
    assert!(until_status(
        &http,
        || get(addr, "d.test", "/"),
        StatusCode::OK,
        Duration::from_secs(2)
    )
    .await
    .is_some());
    let reply = send(&http, get(addr, "a.test:8080", "/path?q=1"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.headers["location"], "https://a.test/path?q=1");
    assert_eq!(
        status_of(&http, get(addr, "b.test", "/")).await,
        StatusCode::OK,
        "ssl-redirect: false"
    );
    let forced = send(&http, get(addr, "c.test", "/x")).await.unwrap();
    assert_eq!(forced.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(forced.headers["location"], "https://c.test/x");
    // As ingress-nginx: the URI's last `/` goes, unless preserve-trailing-slash.
    let forced = send(&http, get(addr, "c.test", "/docs/")).await.unwrap();
    assert_eq!(forced.headers["location"], "https://c.test/docs");
    let forced = send(&http, get(addr, "c.test", "/")).await.unwrap();
    assert_eq!(forced.headers["location"], "https://c.test");
    let kept = send(&http, get(addr, "e.test", "/docs/")).await.unwrap();
    assert_eq!(kept.headers["location"], "https://e.test/docs/");
    assert_eq!(
        status_of(&http, get(addr, "d.test", "/")).await,
        StatusCode::OK,
        "no TLS, no redirect"
    );
}

#[tokio::test]
async fn plaintext_on_the_tls_port_only_closes_that_connection() {
    let s = site().await;
    let mut raw = TcpStream::connect(s.sluice.https_addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    let tls = handshake(&s.pki, s.sluice.https_addr, Some("a.test"), &[])
        .await
        .unwrap();
    assert_eq!(presented(&tls), s.a);
}

/// A tenant cannot serve its certificate for another tenant's host: neither by
/// adding a rule to that host from its own namespace (the namespace that routed
/// the host first provides its certificate), nor by listing a host in `spec.tls`
/// that it has no rule for.
#[tokio::test]
async fn a_tenant_cannot_take_another_tenants_certificate() {
    let s = site().await;
    let (e_cert, e_key, evil) = s.pki.leaf(&["a.test", "b.test"]);
    let evil_ns = |yaml: String| yaml.replace("namespace: default", "namespace: evil");
    s.manifests.write(
        "evil.yaml",
        &(evil_ns(service_yaml("app", &[s.sluice.http_addr]))
            + &evil_ns(secret_yaml("evil-cert", &e_cert, &e_key))
            // A rule of its own on the victim's host, with its certificate.
            + &evil_ns(tls_ingress("steal", "a.test", Some("evil-cert"), &[])).replace("path: /", "path: /evil")
            // A certificate for a host it has no rule for.
            + &evil_ns(tls_ingress("claim", "c.test", Some("evil-cert"), &[])).replace("- hosts: [\"c.test\"]", "- hosts: [\"b.test\"]")),
    );
    let admin = s.sluice.admin_addr;
    let warned = eventually(Duration::from_secs(10), || async move {
        let body = reqwest_text(admin, "/api/warnings").await;
        body.matches("tls-host-refused").count() == 2
    })
    .await;
    assert!(
        warned.is_some(),
        "{}",
        reqwest_text(admin, "/api/warnings").await
    );
    let addr = s.sluice.https_addr;
    assert_eq!(
        presented(&handshake_unverified(addr, Some("a.test")).await),
        s.a
    );
    assert_eq!(
        presented(&handshake_unverified(addr, Some("b.test")).await),
        s.fallback
    );
    assert_ne!(s.a, evil);
}

async fn reqwest_text(addr: SocketAddr, path: &str) -> String {
    let reply = send(&client(), get(addr, "localhost", path)).await.unwrap();
    reply.text()
}
