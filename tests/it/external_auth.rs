//! `auth-url`, through the door, against a fake that speaks oauth2-proxy's
//! side of ingress-nginx's integration: `/oauth2/auth` answers 202 with
//! `X-Auth-Request-User` / `-Email` for a session cookie, else 401;
//! `/oauth2/start?rd=URL` signs the user in (a cookie) and sends them back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// The requests the fake saw: (path and query, headers).
type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

async fn fake_oauth2_proxy() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, std::io::Error>(answer(request, &log)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn answer(request: Request<Incoming>, log: &Seen) -> Response<Full<Bytes>> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    log.lock()
        .unwrap()
        .push((uri.clone(), request.headers().clone()));
    let cookie = request
        .headers()
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut response = Response::new(Full::default());
    if uri.starts_with("/oauth2/auth") {
        if cookie.contains("session=alice") {
            *response.status_mut() = StatusCode::ACCEPTED;
            let headers = response.headers_mut();
            headers.insert("x-auth-request-user", "alice".parse().unwrap());
            headers.insert("x-auth-request-email", "alice@example.com".parse().unwrap());
            headers.insert(
                "set-cookie",
                "session=alice; Path=/; refreshed=1".parse().unwrap(),
            );
        } else if cookie.contains("session=bob") {
            // No email for bob: whatever the client sends must not reach the pod.
            *response.status_mut() = StatusCode::OK;
            response
                .headers_mut()
                .insert("x-auth-request-user", "bob".parse().unwrap());
        } else if cookie.contains("session=mallory") {
            *response.status_mut() = StatusCode::FORBIDDEN;
        } else if cookie.contains("session=broken") {
            *response.status_mut() = StatusCode::BAD_GATEWAY;
        } else {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
                .headers_mut()
                .insert("www-authenticate", "Bearer realm=\"app\"".parse().unwrap());
        }
    } else if let Some(rd) = uri.strip_prefix("/oauth2/start?rd=") {
        // Signed in: a session, and back to where the user was going.
        let back = percent_decode(rd);
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        headers.insert("location", back.parse().unwrap());
        headers.insert("set-cookie", "session=alice; Path=/".parse().unwrap());
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn oauth2_proxy_as_ingress_nginx_documents_it() {
    let app = start_upstream("app").await;
    let (auth, seen) = fake_oauth2_proxy().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let with = |name: &str, host: &str, pairs: &[(&str, String)], paths: &[(&str, &str, &str)]| {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.clone()))
            .collect();
        let refs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ingress_yaml(name, Some(host), &refs, paths)
    };
    let auth_url = format!("http://{auth}/oauth2/auth");
    let yaml = service_yaml("app", &[app.addr])
        + &service_yaml("oauth2-proxy", &[auth])
        + &with(
            "app",
            "app.example",
            &[
                ("auth-url", auth_url.clone()),
                ("auth-signin", "http://app.example/oauth2/start".into()),
                ("auth-response-headers", "X-Auth-Request-User, X-Auth-Request-Email".into()),
            ],
            &[("/", "Prefix", "app")],
        )
        // oauth2-proxy's own paths on the app's host, as its docs set it up.
        + &with("oauth2", "app.example", &[], &[("/oauth2", "Prefix", "oauth2-proxy")])
        + &with("api", "api.example", &[("auth-url", auth_url)], &[("/", "Prefix", "app")])
        + &with("down", "down.example", &[("auth-url", format!("http://{dead}/auth"))], &[("/", "Prefix", "app")])
        // oauth2-proxy's documented setup: the service on the app's own host.
        + &with(
            "inside",
            "inside.example",
            &[
                ("auth-url", "https://$host/oauth2/auth".into()),
                ("auth-signin", "https://$host/oauth2/start?rd=$escaped_request_uri".into()),
            ],
            &[("/", "Prefix", "app")],
        )
        + &with("oauth2-inside", "inside.example", &[], &[("/oauth2", "Prefix", "oauth2-proxy")]);
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let sluice = start_sluice(m.path(), "").await;

    // The redirect dance, followed to the end by curl with a cookie jar.
    let jar = tempfile::tempdir().unwrap();
    let jar = jar.path().join("cookies.txt");
    let to = format!("app.example:80:{}", sluice.http_addr);
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-L", "--max-redirs", "3", "--connect-to", &to, "-c"])
        .arg(&jar)
        .arg("-b")
        .arg(&jar)
        .args(["-H", "X-Auth-Request-Email: evil@example.com"])
        .arg("http://app.example/cart?x=1")
        .output()
        .await
        .expect("curl is installed by scripts/test");
    let body: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(body["upstream"], "app");
    assert_eq!(body["uri"], "/cart?x=1");
    assert_eq!(body["headers"]["x-auth-request-user"][0], "alice");
    assert_eq!(
        body["headers"]["x-auth-request-email"][0], "alice@example.com",
        "the service's, not the client's"
    );
    // What the service was asked, first without a session.
    let asked = seen.lock().unwrap().clone();
    let (path, headers) = &asked[0];
    assert_eq!(path, "/oauth2/auth");
    assert_eq!(headers["x-original-url"], "http://app.example/cart?x=1");
    assert_eq!(headers["x-original-method"], "GET");
    assert_eq!(headers["x-auth-request-redirect"], "/cart?x=1");
    assert_eq!(headers["host"], auth.to_string());
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert!(
        asked
            .iter()
            .any(|(p, _)| p == "/oauth2/start?rd=http://app.example%2Fcart%3Fx%3D1"),
        "{asked:?}"
    );

    let http = client();
    let get = |host: &str, cookie: &str, extra: Option<(&str, &str)>| {
        let mut request = get(sluice.http_addr, host, "/");
        if !cookie.is_empty() {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
        }
        if let Some((name, value)) = extra {
            let name = http::HeaderName::try_from(name).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        send(&http, request)
    };
    // The service's Set-Cookie reaches the client with the answer.
    let alice = get("app.example", "session=alice", None).await.unwrap();
    assert_eq!(alice.status, StatusCode::OK);
    assert!(alice
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().contains("refreshed=1")));
    // A header the service did not send is removed, whatever the client says.
    let bob = get(
        "app.example",
        "session=bob",
        Some(("x-auth-request-email", "boss@example.com")),
    )
    .await
    .unwrap();
    assert_eq!(bob.json()["headers"]["x-auth-request-user"][0], "bob");
    assert!(
        bob.json()["headers"].get("x-auth-request-email").is_none(),
        "{}",
        bob.text()
    );
    // 403 is the client's; without auth-signin, so is a 401 and its challenge.
    assert_eq!(
        get("app.example", "session=mallory", None)
            .await
            .unwrap()
            .status,
        StatusCode::FORBIDDEN
    );
    let no_signin = get("api.example", "", None).await.unwrap();
    assert_eq!(no_signin.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        no_signin.headers["www-authenticate"],
        "Bearer realm=\"app\""
    );
    // Any other answer, or a service that is down: 500, never the pod.
    let requests = app.requests();
    assert_eq!(
        get("app.example", "session=broken", None)
            .await
            .unwrap()
            .status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get("down.example", "", None).await.unwrap().status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(app.requests(), requests);
    // `https://$host/oauth2/auth`: asked through sluice's own route for it.
    let inside = get("inside.example", "", None).await.unwrap();
    assert_eq!(inside.status, StatusCode::FOUND);
    assert_eq!(
        inside.headers["location"],
        "https://inside.example/oauth2/start?rd=%2F"
    );
    let inside = get("inside.example", "session=alice", None).await.unwrap();
    assert_eq!(inside.status, StatusCode::OK);
    assert_eq!(inside.upstream(), "app");
    let asked = seen.lock().unwrap().clone();
    let (path, headers) = asked.last().unwrap();
    assert_eq!(path, "/oauth2/auth");
    assert_eq!(headers["host"], "inside.example");
    let metrics = admin_text(&sluice, "/metrics").await;
    for result in ["allowed", "denied", "error"] {
        assert!(
            metrics.contains(&format!(
                "sluice_auth_requests_total{{result=\"{result}\"}}"
            )),
            "{result}"
        );
    }
}

/// `auth-cache-key`: an answer kept for the key spares the service until
/// its time runs out; answers without a duration are never kept.
/// `auth-proxy-set-headers`: the ConfigMap's headers reach the service.
#[tokio::test]
async fn cached_answers_and_headers_for_the_service() {
    let app = start_upstream("app").await;
    let (auth, seen) = fake_oauth2_proxy().await;
    let auth_url = format!("http://{auth}/oauth2/auth");
    let yaml = service_yaml("app", &[app.addr])
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: auth-headers, namespace: default}\ndata:\n  X-Tenant: shop\n  X-Asked-For: $host\n"
        + &ingress_yaml(
            "cached",
            Some("cached.example"),
            &[
                (&format!("{NGINX}auth-url"), &auth_url),
                (&format!("{NGINX}auth-cache-key"), "$http_cookie"),
                (&format!("{NGINX}auth-cache-duration"), "200 202 401 5m"),
                (&format!("{NGINX}auth-proxy-set-headers"), "auth-headers"),
                (&format!("{NGINX}auth-response-headers"), "X-Auth-Request-User"),
                (
                    &format!("{NGINX}auth-snippet"),
                    "proxy_set_header X-From-Snippet $request_method;",
                ),
            ],
            &[("/", "Prefix", "app")],
        )
        // A directive that is not interpreted in the subrequest: 403.
        + &ingress_yaml(
            "snippet",
            Some("snippet.example"),
            &[
                (&format!("{NGINX}auth-url"), &auth_url),
                (&format!("{NGINX}auth-snippet"), "if ($http_x_vip) { return 200; }"),
            ],
            &[("/", "Prefix", "app")],
        )
        + &ingress_yaml(
            "nomap",
            Some("nomap.example"),
            &[
                (&format!("{NGINX}auth-url"), &auth_url),
                (&format!("{NGINX}auth-proxy-set-headers"), "missing"),
            ],
            &[("/", "Prefix", "app")],
        );
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let ask = |cookie: &str| {
        let mut request = get(sluice.http_addr, "cached.example", "/");
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        send(&http, request)
    };
    let asked_with = |cookie: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| h.get("cookie").is_some_and(|c| c == cookie))
            .count()
    };
    for _ in 0..3 {
        let reply = ask("session=bob").await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["headers"]["x-auth-request-user"][0], "bob");
    }
    assert_eq!(asked_with("session=bob"), 1, "the answer was kept");
    // A rebuild of the table (another Ingress arrives) keeps the answers.
    m.write(
        "other.yaml",
        &ingress_yaml(
            "other",
            Some("other.example"),
            &[],
            &[("/", "Prefix", "app")],
        ),
    );
    let rebuilt = eventually(std::time::Duration::from_secs(10), || async {
        let reply = send(&http, get(sluice.http_addr, "other.example", "/")).await;
        reply.is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    assert!(rebuilt.is_some());
    assert_eq!(ask("session=bob").await.unwrap().status, StatusCode::OK);
    assert_eq!(asked_with("session=bob"), 1, "kept across the rebuild");
    for _ in 0..2 {
        assert_eq!(
            ask("session=mallory").await.unwrap().status,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(asked_with("session=mallory"), 2, "403 has no duration");
    // Another key is asked on its own.
    assert_eq!(
        ask("session=nobody").await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(asked_with("session=nobody"), 1);
    let (_, headers) = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-tenant"], "shop");
    assert_eq!(headers["x-asked-for"], "cached.example");
    assert_eq!(headers["x-from-snippet"], "GET");
    let mut vip = get(sluice.http_addr, "snippet.example", "/");
    vip.headers_mut().insert("x-vip", "1".parse().unwrap());
    assert_eq!(
        send(&http, vip).await.unwrap().status,
        StatusCode::FORBIDDEN
    );

    // A ConfigMap that is not there: the routes answer 503, never open.
    let requests = app.requests();
    let reply = send(&http, get(sluice.http_addr, "nomap.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.requests(), requests);
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert!(warnings.contains("auth-proxy-set-headers"), "{warnings}");
}

/// The ConfigMap's `global-auth-*`: every Ingress is guarded unless it has
/// its own `auth-url` or says `enable-global-auth: "false"`, and ACME
/// challenges pass (`no-auth-locations`). A global URL that cannot be
/// honoured closes every route.
#[tokio::test]
async fn global_authentication_guards_every_ingress_but_those_that_opt_out() {
    let app = start_upstream("app").await;
    let (auth, seen) = fake_oauth2_proxy().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = service_yaml("app", &[app.addr])
        + &ingress_yaml("app", Some("app.example"), &[], &[("/", "Prefix", "app")])
        + &ingress_yaml(
            "acme",
            Some("app.example"),
            &[],
            &[("/.well-known/acme-challenge", "Prefix", "app")],
        )
        + &ingress_yaml(
            "public",
            Some("public.example"),
            &[(&format!("{NGINX}enable-global-auth"), "false")],
            &[("/", "Prefix", "app")],
        )
        + &ingress_yaml(
            "own",
            Some("own.example"),
            &[(&format!("{NGINX}auth-url"), &format!("http://{dead}/auth"))],
            &[("/", "Prefix", "app")],
        );
    let m = Manifests::new();
    m.write("apps.yaml", &yaml);
    let config = format!(
        "global-auth-url: http://{auth}/oauth2/auth\nglobal-auth-signin: http://app.example/oauth2/start\nglobal-auth-response-headers: X-Auth-Request-User\n"
    );
    let sluice = start_sluice(m.path(), &config).await;
    let http = client();
    let ask = |host: &str, path: &str, cookie: Option<&str>| {
        let mut request = get(sluice.http_addr, host, path);
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
        }
        send(&http, request)
    };
    let guest = ask("app.example", "/cart", None).await.unwrap();
    assert_eq!(guest.status, StatusCode::FOUND);
    assert_eq!(
        guest.headers["location"],
        "http://app.example/oauth2/start?rd=http://app.example%2Fcart"
    );
    let bob = ask("app.example", "/cart", Some("session=bob"))
        .await
        .unwrap();
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(bob.json()["headers"]["x-auth-request-user"][0], "bob");
    let asked = seen.lock().unwrap().len();
    let acme = ask("app.example", "/.well-known/acme-challenge/token", None);
    assert_eq!(acme.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        ask("public.example", "/", None).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        asked,
        "neither asked the service"
    );
    // Its own service, which is down: 500, not the global one's answer.
    let own = ask("own.example", "/", Some("session=bob")).await.unwrap();
    assert_eq!(own.status, StatusCode::INTERNAL_SERVER_ERROR);

    let broken = start_sluice(m.path(), "global-auth-url: ftp://auth/\n").await;
    let reply = send(&http, get(broken.http_addr, "public.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let warnings = admin_text(&broken, "/api/warnings").await;
    assert!(warnings.contains("global-auth-url"), "{warnings}");
}

/// `satisfy: any` with `auth-url`, as nginx's access phase: an address on
/// the list is not asked for anything, and any other client is admitted
/// by the service.
#[tokio::test]
async fn satisfy_any_lets_the_list_or_the_service_admit() {
    let app = start_upstream("app").await;
    let (auth, seen) = fake_oauth2_proxy().await;
    let auth_url = format!("http://{auth}/oauth2/auth");
    let with = |name: &str, range: &str| {
        ingress_yaml(
            name,
            Some(&format!("{name}.example")),
            &[
                (&format!("{NGINX}auth-url"), &auth_url),
                (&format!("{NGINX}whitelist-source-range"), range),
                (&format!("{NGINX}satisfy"), "any"),
            ],
            &[("/", "Prefix", "app")],
        )
    };
    let m = Manifests::new();
    m.write(
        "apps.yaml",
        &(service_yaml("app", &[app.addr])
            + &with("office", "127.0.0.0/8")
            + &with("remote", "10.0.0.0/8")),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let ask = |host: &str, cookie: Option<&str>| {
        let mut request = get(sluice.http_addr, host, "/");
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
        }
        send(&http, request)
    };
    assert_eq!(
        ask("office.example", None).await.unwrap().status,
        StatusCode::OK
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "a listed address is not asked"
    );
    assert_eq!(
        ask("remote.example", None).await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    let bob = ask("remote.example", Some("session=bob")).await.unwrap();
    assert_eq!(
        bob.status,
        StatusCode::OK,
        "the service admits who the list does not"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}
