//! Access control at the edge, through the door: address lists
//! (`whitelist-source-range`, `denylist-source-range` and the ConfigMap's
//! defaults) and the ConfigMap's blocks, matched against the one real
//! client address.

use http::StatusCode;

use crate::support::*;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// One Ingress per host, each with its own annotations, behind one pod.
async fn hosts(
    config: &str,
    apps: &[(&str, &[(&str, &str)])],
) -> (Upstream, Manifests, sluice::server::Server) {
    let pod = start_upstream("web").await;
    let mut yaml = service_yaml("web", &[pod.addr]);
    for (host, annotations) in apps {
        let annotations: Vec<(String, String)> = annotations
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let pairs: Vec<(&str, &str)> = annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let name = host.split('.').next().unwrap();
        yaml += &ingress_yaml(name, Some(host), &pairs, &[("/", "Prefix", "web")]);
    }
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let sluice = start_sluice(m.path(), config).await;
    (pod, m, sluice)
}

async fn status(
    sluice: &sluice::server::Server,
    host: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut request = get(sluice.http_addr, host, "/");
    for (name, value) in headers {
        let name = http::HeaderName::try_from(*name).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    send(&client(), request).await.unwrap().status
}

#[tokio::test]
async fn address_lists_admit_and_refuse_the_client_address() {
    let (pod, _m, sluice) = hosts(
        "",
        &[
            ("plain.example", &[]),
            (
                "inside.example",
                &[("whitelist-source-range", "10.0.0.0/8, 127.0.0.0/8")],
            ),
            (
                "outside.example",
                &[("allowlist-source-range", "10.0.0.0/8")],
            ),
            (
                "denied.example",
                &[("denylist-source-range", "127.0.0.1/32")],
            ),
            (
                "both.example",
                &[
                    ("whitelist-source-range", "127.0.0.0/8"),
                    ("denylist-source-range", "127.0.0.1"),
                ],
            ),
            (
                "broken.example",
                &[("whitelist-source-range", "127.0.0.0/8, not-a-range")],
            ),
        ],
    )
    .await;
    // The test client is 127.0.0.1.
    assert_eq!(status(&sluice, "plain.example", &[]).await, StatusCode::OK);
    assert_eq!(status(&sluice, "inside.example", &[]).await, StatusCode::OK);
    assert_eq!(
        status(&sluice, "outside.example", &[]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&sluice, "denied.example", &[]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&sluice, "both.example", &[]).await,
        StatusCode::FORBIDDEN,
        "deny comes first"
    );
    assert_eq!(
        status(&sluice, "broken.example", &[]).await,
        StatusCode::FORBIDDEN,
        "fails closed"
    );
    // A client cannot pick its address: nobody's X-Forwarded-For is believed.
    let claim = [("x-forwarded-for", "10.1.2.3")];
    assert_eq!(
        status(&sluice, "outside.example", &claim).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(pod.requests(), 2, "refused requests reach no pod");
    let warnings = admin_json(&sluice, "/api/warnings").await.to_string();
    assert!(warnings.contains("invalid-access-list"), "{warnings}");
}

/// Behind a trusted edge (`use-forwarded-headers`, `proxy-real-ip-cidr`),
/// the address the edge saw is the one matched, IPv6 too; the ConfigMap's
/// lists are every Ingress's default, and an Ingress's own list wins.
#[tokio::test]
async fn behind_a_trusted_edge_the_forwarded_address_is_matched() {
    let (_pod, _m, sluice) = hosts(
        "use-forwarded-headers: true\nproxy-real-ip-cidr: 127.0.0.1/32\nwhitelist-source-range: \"10.0.0.0/8, 2001:db8::/32\"\ndenylist-source-range: 10.9.0.0/16\n",
        &[
            ("default.example", &[]),
            ("own.example", &[("whitelist-source-range", "192.0.2.0/24")]),
        ],
    )
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(
        status(&sluice, "default.example", &from("10.1.2.3")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&sluice, "default.example", &from("2001:db8::5")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&sluice, "default.example", &from("192.0.2.7")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&sluice, "default.example", &from("10.9.0.1")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&sluice, "own.example", &from("192.0.2.7")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&sluice, "own.example", &from("10.1.2.3")).await,
        StatusCode::FORBIDDEN
    );
    // The edge itself, without a forwarded address, is not in the list.
    assert_eq!(
        status(&sluice, "default.example", &[]).await,
        StatusCode::FORBIDDEN
    );
}

/// The ConfigMap's `block-cidrs`, `block-user-agents` and `block-referers`
/// refuse a request wherever it goes, even where no Ingress routes.
#[tokio::test]
async fn the_configmaps_blocks_refuse_everywhere() {
    let (pod, _m, sluice) = hosts(
        "block-user-agents: \"BadBot/1.0, ~*python-requests\"\nblock-referers: \"~*spam\\\\.example\"\n",
        &[("plain.example", &[])],
    )
    .await;
    assert_eq!(
        status(&sluice, "plain.example", &[("user-agent", "Mozilla/5.0")]).await,
        StatusCode::OK
    );
    for headers in [
        [("user-agent", "badbot/1.0")],
        [("user-agent", "python-requests/2.31")],
        [("referer", "https://www.SPAM.example/")],
    ] {
        assert_eq!(
            status(&sluice, "plain.example", &headers).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
        assert_eq!(
            status(&sluice, "nowhere.example", &headers).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
    }
    assert_eq!(pod.requests(), 1);
    // block-cidrs: the test client's own address.
    let (_pod, _m, blocked) = hosts("block-cidrs: 127.0.0.0/8\n", &[("plain.example", &[])]).await;
    assert_eq!(
        status(&blocked, "plain.example", &[]).await,
        StatusCode::FORBIDDEN
    );
}

/// `htpasswd` (Debian's apache2-utils) writes the users: one per hash it
/// knows, into a file as `kubectl create secret generic --from-file=auth`
/// stores it.
async fn htpasswd_lines() -> String {
    let mut file = String::new();
    for (flag, user) in [
        ("-B", "alice"),
        ("-m", "bob"),
        ("-s", "carol"),
        ("-d", "dave"),
    ] {
        let output = tokio::process::Command::new("htpasswd")
            .args(["-nb", flag, user, "s3cret pass"])
            .output()
            .await
            .expect("htpasswd is installed by scripts/test");
        assert!(output.status.success(), "{output:?}");
        file += String::from_utf8(output.stdout).unwrap().trim();
        file.push('\n');
    }
    file
}

/// `curl -u USER:PASSWORD` against `host`: (status, WWW-Authenticate, body).
async fn curl(
    sluice: &sluice::server::Server,
    host: &str,
    user: Option<&str>,
) -> (u16, String, String) {
    let to = format!("{host}:80:{}", sluice.http_addr);
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "-D", "-", "--connect-to", &to]);
    if let Some(user) = user {
        command.args(["-u", user]);
    }
    let output = command
        .arg(format!("http://{host}/"))
        .output()
        .await
        .expect("curl is installed by scripts/test");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let challenge = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("www-authenticate: ")
                .or_else(|| l.strip_prefix("WWW-Authenticate: "))
        })
        .unwrap_or_default()
        .trim()
        .to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, challenge, body)
}

/// `auth-type: basic` with an htpasswd file from the real `htpasswd`
/// (bcrypt, apr1, SHA and crypt), or an `auth-map`; curl with `-u`.
#[tokio::test]
async fn basic_auth_admits_htpasswd_users_with_curl() {
    let pod = start_upstream("web").await;
    let file = htpasswd_lines().await;
    let indented: String = file.lines().map(|l| format!("    {l}\n")).collect();
    let map = file
        .lines()
        .find(|l| l.starts_with("bob:"))
        .unwrap()
        .replacen(':', ": \"", 1)
        + "\"";
    let auth = |name: &str, host: &str, extra: &[(&str, &str)]| {
        let mut annotations = vec![
            (
                "nginx.ingress.kubernetes.io/auth-type".to_owned(),
                "basic".to_owned(),
            ),
            (
                "nginx.ingress.kubernetes.io/auth-realm".to_owned(),
                "Staff only".to_owned(),
            ),
        ];
        for (k, v) in extra {
            annotations.push((format!("{NGINX}{k}"), v.to_string()));
        }
        let pairs: Vec<(&str, &str)> = annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ingress_yaml(name, Some(host), &pairs, &[("/", "Prefix", "web")])
    };
    let yaml = service_yaml("web", &[pod.addr])
        + &format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\nstringData:\n  auth: |\n{indented}")
        + &format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: user-map, namespace: default}}\ntype: Opaque\nstringData:\n  {map}\n")
        + &auth("file", "file.example", &[("auth-secret", "users")])
        + &auth("map", "map.example", &[("auth-secret", "default/user-map"), ("auth-secret-type", "auth-map")])
        + &auth("missing", "missing.example", &[("auth-secret", "nobody")]);
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let sluice = start_sluice(m.path(), "").await;

    let (status, challenge, _) = curl(&sluice, "file.example", None).await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, "Basic realm=\"Staff only\"")
    );
    for user in ["alice", "bob", "carol", "dave"] {
        let (status, _, body) = curl(
            &sluice,
            "file.example",
            Some(&format!("{user}:s3cret pass")),
        )
        .await;
        assert_eq!(status, 200, "{user}: {body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            seen["headers"].get("authorization").is_none(),
            "the pod never sees the credentials"
        );
        // Again: bcrypt's answer is remembered, the others are cheap.
        assert_eq!(
            curl(
                &sluice,
                "file.example",
                Some(&format!("{user}:s3cret pass"))
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        curl(&sluice, "file.example", Some("alice:wrong")).await.0,
        401
    );
    assert_eq!(
        curl(&sluice, "file.example", Some("mallory:s3cret pass"))
            .await
            .0,
        401
    );
    assert_eq!(
        curl(&sluice, "map.example", Some("bob:s3cret pass"))
            .await
            .0,
        200
    );
    assert_eq!(
        curl(&sluice, "map.example", Some("alice:s3cret pass"))
            .await
            .0,
        401
    );
    // A Secret that is not there: never open.
    assert_eq!(
        curl(&sluice, "missing.example", Some("alice:s3cret pass"))
            .await
            .0,
        503
    );
    let warnings = admin_json(&sluice, "/api/warnings").await.to_string();
    assert!(
        warnings.contains("auth-secret default/nobody not found"),
        "{warnings}"
    );
}

/// `enable-cors`, as ingress-nginx's template: a preflight from an allowed
/// origin is answered here (204, no pod); other requests from it get the
/// headers; other origins get none; `*` answers every request.
#[tokio::test]
async fn cors_preflights_and_headers_as_ingress_nginx() {
    let (pod, _m, sluice) = hosts(
        "",
        &[
            (
                "api.example",
                &[
                    ("enable-cors", "true"),
                    (
                        "cors-allow-origin",
                        "https://app.example.com, https://*.example.org",
                    ),
                    ("cors-expose-headers", "X-Trace"),
                    ("cors-max-age", "600"),
                ],
            ),
            (
                "open.example",
                &[("enable-cors", "true"), ("cors-allow-credentials", "false")],
            ),
            ("plain.example", &[]),
        ],
    )
    .await;
    let http = client();
    let request = |method: &str, host: &str, origin: Option<&str>| {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}/orders", sluice.http_addr))
            .header("host", host);
        if let Some(origin) = origin {
            request = request
                .header("origin", origin)
                .header("access-control-request-method", "PUT");
        }
        request.body(http_body_util::Full::default()).unwrap()
    };
    let preflight = send(
        &http,
        request("OPTIONS", "api.example", Some("https://app.example.com")),
    )
    .await
    .unwrap();
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let h = &preflight.headers;
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    );
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Authorization"));
    assert_eq!(h["access-control-expose-headers"], "X-Trace");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(pod.requests(), 0, "the preflight reached no pod");

    let get = send(
        &http,
        request("GET", "api.example", Some("https://shop.example.org")),
    )
    .await
    .unwrap();
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.upstream(), "web");
    assert_eq!(
        get.headers["access-control-allow-origin"],
        "https://shop.example.org"
    );
    // Another origin: no CORS headers, and its OPTIONS goes to the pod.
    let other = send(
        &http,
        request("OPTIONS", "api.example", Some("https://evil.example")),
    )
    .await
    .unwrap();
    assert_eq!(other.status, StatusCode::OK);
    assert!(other.headers.get("access-control-allow-origin").is_none());
    // `*`: every request, even without an Origin.
    let open = send(&http, request("GET", "open.example", None))
        .await
        .unwrap();
    assert_eq!(open.headers["access-control-allow-origin"], "*");
    assert!(open
        .headers
        .get("access-control-allow-credentials")
        .is_none());
    let plain = send(
        &http,
        request("GET", "plain.example", Some("https://app.example.com")),
    )
    .await
    .unwrap();
    assert!(plain.headers.get("access-control-allow-origin").is_none());
}

/// `satisfy: any`: an address on the list needs no credentials, any other
/// is asked for them; without it (`all`), both are needed.
#[tokio::test]
async fn satisfy_any_lets_the_list_or_the_password_admit() {
    let pod = start_upstream("web").await;
    let file = htpasswd_lines().await;
    let indented: String = file.lines().map(|l| format!("    {l}\n")).collect();
    let app = |name: &str, host: &str, range: &str, satisfy: &str| {
        let mut annotations = vec![
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "users"),
            ("nginx.ingress.kubernetes.io/whitelist-source-range", range),
        ];
        if !satisfy.is_empty() {
            annotations.push(("nginx.ingress.kubernetes.io/satisfy", satisfy));
        }
        ingress_yaml(name, Some(host), &annotations, &[("/", "Prefix", "web")])
    };
    let yaml = service_yaml("web", &[pod.addr])
        + &format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\nstringData:\n  auth: |\n{indented}")
        + &app("office", "office.example", "127.0.0.0/8", "any")
        + &app("remote", "remote.example", "10.0.0.0/8", "any")
        + &app("strict", "strict.example", "127.0.0.0/8", "");
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let sluice = start_sluice(m.path(), "").await;
    let bob = Some("bob:s3cret pass");
    assert_eq!(
        curl(&sluice, "office.example", None).await.0,
        200,
        "on the list"
    );
    assert_eq!(
        curl(&sluice, "remote.example", None).await.0,
        401,
        "off the list"
    );
    assert_eq!(curl(&sluice, "remote.example", bob).await.0, 200);
    assert_eq!(
        curl(&sluice, "strict.example", None).await.0,
        401,
        "all: both"
    );
    assert_eq!(curl(&sluice, "strict.example", bob).await.0, 200);
}

/// `auth-type: digest` with a file from the real `htdigest`, and curl's
/// `--digest`: the challenge, the right password, a wrong one, and the
/// pod never sees the credentials.
#[tokio::test]
async fn digest_auth_admits_htdigest_users_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htdigest");
    let mut child = tokio::process::Command::new("htdigest")
        .arg("-c")
        .arg(&path)
        .args(["Staff only", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("htdigest is installed by scripts/test (apache2-utils)");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"s3cret pass\ns3cret pass\n")
            .await
            .unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    let file = std::fs::read_to_string(&path).unwrap();
    let pod = start_upstream("web").await;
    let indented: String = file.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = service_yaml("web", &[pod.addr])
        + &format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\nstringData:\n  auth: |\n{indented}")
        + &ingress_yaml(
            "digest",
            Some("digest.example"),
            &[
                ("nginx.ingress.kubernetes.io/auth-type", "digest"),
                ("nginx.ingress.kubernetes.io/auth-secret", "users"),
                ("nginx.ingress.kubernetes.io/auth-realm", "Staff only"),
            ],
            &[("/", "Prefix", "web")],
        );
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let sluice = start_sluice(m.path(), "").await;
    let (status, challenge, _) = curl(&sluice, "digest.example", None).await;
    assert_eq!(status, 401);
    assert!(
        challenge
            .starts_with("Digest algorithm=\"MD5\", qop=\"auth\", realm=\"Staff only\", nonce=\""),
        "{challenge}"
    );
    let digest = |user: &'static str| {
        let to = format!("digest.example:80:{}", sluice.http_addr);
        async move {
            let output = tokio::process::Command::new("curl")
                .args(["-sS", "--digest", "-u", user, "--connect-to", &to])
                .args(["-w", "\n%{http_code}", "http://digest.example/a?b=1"])
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (code.to_owned(), body.to_owned())
        }
    };
    let (code, body) = digest("alice:s3cret pass").await;
    assert_eq!(code, "200", "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "{body}");
    assert_eq!(digest("alice:wrong").await.0, "401");
    assert_eq!(digest("mallory:s3cret pass").await.0, "401");
}
