//! Client certificates at the edge (`auth-tls-*`), with curl and openssl as
//! the clients: a host that requires one, one that makes it optional with a
//! CN rule, an error page, a host without any (unaffected), a client that
//! names one host in SNI and another in `Host`, and a CA Secret that cannot
//! be read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::pki::{ca_secret_yaml, secret_yaml, Pki};
use crate::support::*;

/// An Ingress for `host` to Service `app` with TLS from `secret`.
fn tls_ingress(name: &str, host: &str, secret: &str, annotations: &[(&str, &str)]) -> String {
    ingress_yaml(name, Some(host), annotations, &[("/", "Prefix", "app")]).replace(
        "spec:\n",
        &format!("spec:\n  tls:\n  - hosts: [\"{host}\"]\n    secretName: {secret}\n"),
    )
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// curl's status line and body for `https://{host}/` (SNI `host`), with a
/// client certificate `(cert, key)` files when given and extra arguments.
async fn curl(
    port: u16,
    ca: &Path,
    host: &str,
    cert: Option<&(PathBuf, PathBuf)>,
    extra: &[&str],
) -> (u16, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args([
            "-sS",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            "--cacert",
        ])
        .arg(ca);
    if let Some((cert, key)) = cert {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let output = command
        .args(extra)
        .args(["-w", "\n%{http_code}", &format!("https://{host}:{port}/")])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    (code, body.to_owned())
}

fn header(body: &str, name: &str) -> Option<String> {
    let echo: serde_json::Value = serde_json::from_str(body).ok()?;
    echo["headers"][name][0].as_str().map(str::to_owned)
}

struct Site {
    files: Files,
    server_ca: PathBuf,
    alice: (PathBuf, PathBuf),
    mallory: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
    manifests: Manifests,
    sluice: sluice::server::Server,
}

/// Hosts: `m.test` requires a certificate of the client CA (and passes it
/// on), `o.test` makes it optional but wants CN alice or bob, `e.test`
/// sends refused clients to an error page, `n.test` is told the verdict of
/// any certificate (`optional_no_ca`), and `a.test` asks for nothing.
async fn site() -> Site {
    let server = Pki::new();
    let clients = Pki::new();
    let strangers = Pki::new();
    let files = Files {
        dir: tempfile::tempdir().unwrap(),
    };
    let pair = |pki: &Pki, cn: &str| {
        let (cert, key) = pki.client(cn);
        (
            files.write(&format!("{cn}.crt"), &cert),
            files.write(&format!("{cn}.key"), &key),
        )
    };
    let alice = pair(&clients, "alice");
    let mallory = pair(&clients, "mallory");
    let stranger = pair(&strangers, "stranger");
    let server_ca = files.write("server-ca.pem", &server.ca_pem);
    let app = start_upstream("app").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("app", &[app.addr]));
    let (cert, key, _) = server.leaf(&["m.test", "o.test", "e.test", "n.test", "f.test", "a.test"]);
    m.write(
        "secrets.yaml",
        &(secret_yaml("site-cert", &cert, &key) + &ca_secret_yaml("client-ca", &clients.ca_pem)),
    );
    let secret = (
        "nginx.ingress.kubernetes.io/auth-tls-secret",
        "default/client-ca",
    );
    m.write(
        "ingresses.yaml",
        &[
            tls_ingress(
                "m",
                "m.test",
                "site-cert",
                &[
                    secret,
                    ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "on"),
                    (
                        "nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream",
                        "true",
                    ),
                ],
            ),
            tls_ingress(
                "o",
                "o.test",
                "site-cert",
                &[
                    secret,
                    (
                        "nginx.ingress.kubernetes.io/auth-tls-verify-client",
                        "optional",
                    ),
                    (
                        "nginx.ingress.kubernetes.io/auth-tls-match-cn",
                        "CN=(alice|bob)$",
                    ),
                ],
            ),
            tls_ingress(
                "e",
                "e.test",
                "site-cert",
                &[
                    secret,
                    (
                        "nginx.ingress.kubernetes.io/auth-tls-error-page",
                        "https://login.example/cert",
                    ),
                ],
            ),
            tls_ingress(
                "n",
                "n.test",
                "site-cert",
                &[
                    secret,
                    (
                        "nginx.ingress.kubernetes.io/auth-tls-verify-client",
                        "optional_no_ca",
                    ),
                ],
            ),
            tls_ingress(
                "f",
                "f.test",
                "site-cert",
                &[
                    secret,
                    ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "off"),
                ],
            ),
            tls_ingress("a", "a.test", "site-cert", &[]),
        ]
        .concat(),
    );
    let sluice = start_sluice(m.path(), "").await;
    let port = sluice.https_addr.port();
    let ready = eventually(Duration::from_secs(10), || {
        let (ca, alice) = (server_ca.clone(), alice.clone());
        async move { curl(port, &ca, "m.test", Some(&alice), &[]).await.0 == 200 }
    })
    .await;
    if ready.is_none() {
        let last = curl(port, &server_ca, "m.test", Some(&alice), &["-v"]).await;
        panic!("{last:?} {}", admin_text(&sluice, "/api/warnings").await);
    }
    Site {
        files,
        server_ca,
        alice,
        mallory,
        stranger,
        manifests: m,
        sluice,
    }
}

#[tokio::test]
async fn a_required_certificate_is_judged_and_passed_on_and_other_hosts_are_unaffected() {
    let s = site().await;
    let port = s.sluice.https_addr.port();
    let ca = &s.server_ca;

    // alice's certificate: the pods are told who she is, and the client's
    // own ssl-client-* headers never reach them.
    let forged = [
        "-H",
        "ssl-client-subject-dn: CN=admin",
        "-H",
        "ssl-client-verify: SUCCESS",
    ];
    let (status, body) = curl(port, ca, "m.test", Some(&s.alice), &forged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&body, "ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(
        header(&body, "ssl-client-subject-dn").as_deref(),
        Some("CN=alice")
    );
    assert_eq!(
        header(&body, "ssl-client-issuer-dn").as_deref(),
        Some("CN=sluice test CA")
    );
    let escaped = header(&body, "ssl-client-cert").unwrap();
    assert!(
        escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{escaped}"
    );
    let alice_pem = std::fs::read_to_string(&s.alice.0).unwrap();
    assert!(escaped.contains(
        &alice_pem
            .lines()
            .nth(1)
            .unwrap()
            .replace('+', "%2B")
            .replace('/', "%2F")
    ));

    // No certificate, or one of another CA, even with forged headers: 400.
    let (status, body) = curl(port, ca, "m.test", None, &forged).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            "400 Bad Request\nNo required SSL certificate was sent\n"
        )
    );
    let (status, body) = curl(port, ca, "m.test", Some(&s.stranger), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "400 Bad Request\nThe SSL certificate error\n")
    );

    // The plain host: no certificate asked, none needed.
    // While some host checks certificates, a client's forged verdict is
    // removed on every host, so a pod behind both cannot be fooled.
    let (status, body) = curl(port, ca, "a.test", None, &forged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&body, "ssl-client-verify"), None);
    assert_eq!(header(&body, "ssl-client-subject-dn"), None);
    // A handshake for a.test cannot be used for m.test: 421, so the client
    // connects again naming m.test.
    let (status, _) = curl(port, ca, "a.test", Some(&s.alice), &["-H", "Host: m.test"]).await;
    assert_eq!(status, 421);
    // Plain HTTP to m.test is redirected to HTTPS, never served.
    let reply = send(&client(), get(s.sluice.http_addr, "m.test", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, 308);

    // openssl sees the CA it is asked for; with `off`, nothing is asked.
    let s_client = |name: &'static str| async move {
        let output = tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                name,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = s_client("m.test").await;
    assert!(
        text.contains("Acceptable client certificate CA names\nCN = sluice test CA\n"),
        "{text}"
    );
    let text = s_client("f.test").await;
    assert!(
        text.contains("CONNECTED") && !text.contains("Acceptable client certificate"),
        "{text}"
    );
    let (status, body) = curl(port, ca, "f.test", None, &forged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&body, "ssl-client-verify").as_deref(), Some("NONE"));
    assert_eq!(
        header(&body, "ssl-client-subject-dn"),
        None,
        "the client's own is removed"
    );

    let metrics = admin_text(&s.sluice, "/metrics").await;
    for result in ["success", "failed", "none"] {
        assert!(
            metrics.contains(&format!(
                "sluice_tls_client_certificates_total{{result=\"{result}\"}}"
            )),
            "{result}: {metrics}"
        );
    }
}

#[tokio::test]
async fn optional_certificates_cn_rules_and_the_error_page() {
    let s = site().await;
    let port = s.sluice.https_addr.port();
    let ca = &s.server_ca;
    // optional + auth-tls-match-cn: alice passes, mallory (same CA) is
    // refused, and so is a client without a certificate (no CN to match).
    let (status, body) = curl(port, ca, "o.test", Some(&s.alice), &[]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(port, ca, "o.test", Some(&s.mallory), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (403, "client certificate unauthorized")
    );
    assert_eq!(curl(port, ca, "o.test", None, &[]).await.0, 403);
    // optional: a certificate of another CA is refused.
    assert_eq!(
        curl(port, ca, "o.test", Some(&s.stranger), &[]).await.0,
        400
    );

    // optional_no_ca: any certificate or none; the pods get the verdict.
    let (status, body) = curl(port, ca, "n.test", Some(&s.stranger), &[]).await;
    assert_eq!(status, 200, "{body}");
    let verdict = header(&body, "ssl-client-verify").unwrap();
    assert!(verdict.starts_with("FAILED:"), "{verdict}");
    assert_eq!(
        header(&body, "ssl-client-subject-dn").as_deref(),
        Some("CN=stranger")
    );
    let (status, body) = curl(port, ca, "n.test", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&body, "ssl-client-verify").as_deref(), Some("NONE"));

    // auth-tls-error-page: a refused client is sent there.
    let (status, _) = curl(port, ca, "e.test", None, &["-o", "/dev/null", "-D", "-"]).await;
    assert_eq!(status, 302);
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}",
            "--resolve",
        ])
        .arg(format!("e.test:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://e.test:{port}/"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "https://login.example/cert"
    );
    let _ = &s.files;
}

#[tokio::test]
async fn a_ca_secret_that_cannot_be_read_closes_the_host() {
    let s = site().await;
    let port = s.sluice.https_addr.port();
    // The Secret loses its bundle: the hosts that name it answer 403, even
    // to alice, and say why; the plain host still answers.
    let broken = ca_secret_yaml("client-ca", "not a certificate");
    let secrets = std::fs::read_to_string(s.manifests.path().join("secrets.yaml")).unwrap();
    let start = secrets
        .find("---\napiVersion: v1\nkind: Secret\nmetadata: {name: client-ca")
        .unwrap();
    s.manifests
        .write("secrets.yaml", &(secrets[..start].to_owned() + &broken));
    let (ca, alice) = (s.server_ca.clone(), s.alice.clone());
    let closed = eventually(Duration::from_secs(10), || {
        let (ca, alice) = (ca.clone(), alice.clone());
        async move { curl(port, &ca, "m.test", Some(&alice), &[]).await.0 == 403 }
    })
    .await;
    assert!(closed.is_some());
    let warnings = admin_text(&s.sluice, "/api/warnings").await;
    assert!(warnings.contains("invalid-auth-secret"), "{warnings}");
    assert!(warnings.contains("auth-tls-secret"), "{warnings}");
    assert_eq!(curl(port, &s.server_ca, "a.test", None, &[]).await.0, 200);
}
