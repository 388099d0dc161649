//! ingress-nginx's regex paths and rewrites, through the door: `use-regex`,
//! `rewrite-target` with capture groups, `x-forwarded-prefix`, and the quirks
//! of its regex mode (host-wide, case-insensitive, anchored at the start
//! only, longest path first).

use crate::support::*;
use http::StatusCode;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// Serves `yaml` (Services and Ingresses) and returns sluice.
async fn serve(yaml: &str) -> (Manifests, sluice::server::Server) {
    let manifests = Manifests::new();
    manifests.write("apps.yaml", yaml);
    let sluice = start_sluice(manifests.path(), "").await;
    (manifests, sluice)
}

/// (which pod answered, the URI it saw) for a GET of `path` on `host`.
async fn seen(sluice: &sluice::server::Server, host: &str, path: &str) -> (String, String) {
    let reply = send(&client(), get(sluice.http_addr, host, path))
        .await
        .unwrap();
    if reply.status != StatusCode::OK {
        return (reply.status.to_string(), String::new());
    }
    let json = reply.json();
    (
        reply.upstream(),
        json["uri"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The example of ingress-nginx's rewrite documentation, word for word.
#[tokio::test]
async fn rewrite_target_passes_capture_groups_as_ingress_nginx_documents() {
    let pod = start_upstream("http-svc").await;
    let regex = format!("{NGINX}use-regex");
    let target = format!("{NGINX}rewrite-target");
    let prefix = format!("{NGINX}x-forwarded-prefix");
    let yaml = service_yaml("http-svc", &[pod.addr])
        + &ingress_yaml(
            "rewrite",
            Some("rewrite.bar.com"),
            &[(&regex, "true"), (&target, "/$2"), (&prefix, "/something")],
            &[(
                "'/something(/|$)(.*)'",
                "ImplementationSpecific",
                "http-svc",
            )],
        );
    let (_m, sluice) = serve(&yaml).await;
    for (asked, rewritten) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new", "/new"),
        // Case-insensitive, and the query follows the rewrite.
        ("/SomeThing/new/deeper?page=2", "/new/deeper?page=2"),
    ] {
        let (pod, uri) = seen(&sluice, "rewrite.bar.com", asked).await;
        assert_eq!(
            (pod.as_str(), uri.as_str()),
            ("http-svc", rewritten),
            "{asked}"
        );
    }
    let reply = send(
        &client(),
        get(sluice.http_addr, "rewrite.bar.com", "/something/x"),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.json()["headers"]["x-forwarded-prefix"][0],
        "/something"
    );
    // Anchored at the start: the path elsewhere in the URI is no match.
    let (status, _) = seen(&sluice, "rewrite.bar.com", "/other/something").await;
    assert_eq!(status, "404 Not Found");
}

/// Once one Ingress of a host uses regex, every path of the host is a
/// case-insensitive regex anchored at the start, whichever Ingress wrote
/// it; other hosts keep the Ingress semantics.
#[tokio::test]
async fn regex_mode_covers_the_whole_host_and_only_it() {
    let plain = start_upstream("plain").await;
    let numbers = start_upstream("numbers").await;
    let regex = format!("{NGINX}use-regex");
    let yaml = service_yaml("plain", &[plain.addr])
        + &service_yaml("numbers", &[numbers.addr])
        + &ingress_yaml(
            "plain",
            Some("shop.example"),
            &[],
            &[("/foo", "Prefix", "plain")],
        )
        + &ingress_yaml(
            "numbers",
            Some("shop.example"),
            &[(&regex, "true")],
            &[("'/bar/[0-9]+$'", "ImplementationSpecific", "numbers")],
        )
        + &ingress_yaml(
            "other",
            Some("other.example"),
            &[],
            &[("/foo", "Prefix", "plain")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let pod = |host: &'static str, path: &'static str| {
        let sluice = &sluice;
        async move { seen(sluice, host, path).await.0 }
    };
    assert_eq!(pod("shop.example", "/bar/12").await, "numbers");
    assert_eq!(pod("shop.example", "/bar/12x").await, "404 Not Found");
    // The plain Ingress's Prefix path, now `~* "^/foo"`: nginx's quirks.
    assert_eq!(pod("shop.example", "/foo/x").await, "plain");
    assert_eq!(pod("shop.example", "/FOO").await, "plain");
    assert_eq!(pod("shop.example", "/foobar").await, "plain");
    // Another host is untouched: Prefix is element-wise and case-sensitive.
    assert_eq!(pod("other.example", "/foo/x").await, "plain");
    assert_eq!(pod("other.example", "/foobar").await, "404 Not Found");
    assert_eq!(pod("other.example", "/FOO").await, "404 Not Found");
    // Never silently: the plain Ingress is told whose annotation changed it.
    let warnings = admin_json(&sluice, "/api/warnings").await.to_string();
    assert!(
        warnings.contains("host-regex-mode") && warnings.contains("because default/numbers use"),
        "{warnings}"
    );
    assert_eq!(
        warnings.matches("host-regex-mode").count(),
        1,
        "only the plain Ingress: {warnings}"
    );
}

/// First match in ingress-nginx's order, longest path first: its documented
/// warning, where a regex beats the exact text it was not meant to take.
#[tokio::test]
async fn the_longest_path_is_tried_first_even_when_a_shorter_one_is_exact() {
    let literal = start_upstream("literal").await;
    let pattern = start_upstream("pattern").await;
    let regex = format!("{NGINX}use-regex");
    let yaml = service_yaml("literal", &[literal.addr])
        + &service_yaml("pattern", &[pattern.addr])
        + &ingress_yaml(
            "test-ingress-3",
            Some("test.com"),
            &[(&regex, "true")],
            &[
                ("/foo/bar/bar", "Prefix", "literal"),
                ("/foo/bar/b-r", "Prefix", "literal"),
                (
                    "'/foo/bar/[A-Z0-9]{3}'",
                    "ImplementationSpecific",
                    "pattern",
                ),
            ],
        );
    let (_m, sluice) = serve(&yaml).await;
    assert_eq!(seen(&sluice, "test.com", "/foo/bar/bar").await.0, "pattern");
    // The pattern does not take what it does not match.
    assert_eq!(seen(&sluice, "test.com", "/foo/bar/b-r").await.0, "literal");
}

/// A path that is no regular expression is skipped with a warning; the
/// Ingress's other paths are served.
#[tokio::test]
async fn a_path_that_is_no_regex_is_skipped_with_a_warning() {
    let pod = start_upstream("web").await;
    let regex = format!("{NGINX}use-regex");
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "broken",
            Some("broken.example"),
            &[(&regex, "true")],
            &[
                ("'/a(b'", "ImplementationSpecific", "web"),
                ("/ok", "Prefix", "web"),
            ],
        );
    let (_m, sluice) = serve(&yaml).await;
    assert_eq!(seen(&sluice, "broken.example", "/ok").await.0, "web");
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert!(
        warnings.contains("is not a regular expression"),
        "{warnings}"
    );
}

/// `app-root`: `/` is redirected to the app's root (302, with the client's
/// scheme and Host); every other path is served.
#[tokio::test]
async fn app_root_redirects_only_the_root() {
    let pod = start_upstream("app").await;
    let root = format!("{NGINX}app-root");
    let yaml = service_yaml("app", &[pod.addr])
        + &ingress_yaml(
            "approot",
            Some("approot.bar.com"),
            &[(&root, "/app1")],
            &[("/", "Prefix", "app")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let reply = send(
        &client(),
        get(sluice.http_addr, "approot.bar.com:8080", "/"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.headers["location"],
        "http://approot.bar.com:8080/app1"
    );
    let (pod, uri) = seen(&sluice, "approot.bar.com", "/app1/page?x=1").await;
    assert_eq!((pod.as_str(), uri.as_str()), ("app", "/app1/page?x=1"));
}

/// `permanent-redirect` and `temporal-redirect` (which wins), with their
/// codes and nginx's variables; a code out of range is the default.
#[tokio::test]
async fn redirects_answer_with_their_codes_and_variables() {
    let pod = start_upstream("web").await;
    let annotations = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect()
    };
    let moved = annotations(&[
        ("permanent-redirect", "https://new.example$request_uri"),
        ("permanent-redirect-code", "308"),
    ]);
    let both = annotations(&[
        ("permanent-redirect", "https://permanent.example"),
        ("temporal-redirect", "https://temporal.example/"),
        ("temporal-redirect-code", "999"),
    ]);
    let borrow = |a: &[(String, String)]| -> Vec<(String, String)> { a.to_vec() };
    let mut yaml = service_yaml("web", &[pod.addr]);
    for (host, pairs) in [
        ("moved.example", borrow(&moved)),
        ("both.example", borrow(&both)),
    ] {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        yaml += &ingress_yaml(
            host.split('.').next().unwrap(),
            Some(host),
            &pairs,
            &[("/", "Prefix", "web")],
        );
    }
    let (_m, sluice) = serve(&yaml).await;
    let reply = send(
        &client(),
        get(sluice.http_addr, "moved.example", "/a/b?c=1"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.headers["location"], "https://new.example/a/b?c=1");
    let reply = send(&client(), get(sluice.http_addr, "both.example", "/x"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.headers["location"], "https://temporal.example/");
    assert_eq!(pod.requests(), 0, "a redirect never reaches the pod");
}

/// `from-to-www-redirect` answers the other name with a 308 (the URI less
/// its trailing slash, as ingress-nginx); `server-alias` serves more names.
#[tokio::test]
async fn www_redirects_and_aliases_add_host_names() {
    let pod = start_upstream("web").await;
    let www = format!("{NGINX}from-to-www-redirect");
    let alias = format!("{NGINX}server-alias");
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "site",
            Some("example.com"),
            &[(&www, "true"), (&alias, "example.net, example.org")],
            &[("/", "Prefix", "web")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let reply = send(
        &client(),
        get(sluice.http_addr, "www.example.com", "/docs/?page=2"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.headers["location"], "http://example.com/docs/?page=2");
    let reply = send(
        &client(),
        get(sluice.http_addr, "www.example.com", "/docs/"),
    )
    .await
    .unwrap();
    assert_eq!(reply.headers["location"], "http://example.com/docs");
    for host in ["example.com", "example.net", "EXAMPLE.org"] {
        assert_eq!(seen(&sluice, host, "/x").await.0, "web", "{host}");
    }
    assert_eq!(
        seen(&sluice, "www.example.net", "/x").await.0,
        "404 Not Found"
    );
}

/// `sluice.io/request-headers` and `sluice.io/response-headers`: set, add
/// and remove, with nginx's variables; the ingress-nginx prefix is not ours.
#[tokio::test]
async fn sluice_header_rules_set_add_and_remove() {
    let pod = start_upstream("web").await;
    let request_rules = "set X-Env: production\\nadd X-Via: $host\\nremove X-Debug";
    let response_rules = "set Cache-Control: no-store\\nremove Content-Type";
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "rules",
            Some("rules.example"),
            &[
                ("sluice.io/request-headers", request_rules),
                ("sluice.io/response-headers", response_rules),
                (
                    "nginx.ingress.kubernetes.io/request-headers",
                    "set X-Ignored: 1",
                ),
            ],
            &[("/", "Prefix", "web")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let mut request = get(sluice.http_addr, "rules.example", "/");
    request
        .headers_mut()
        .insert("x-debug", "1".parse().unwrap());
    request
        .headers_mut()
        .insert("x-via", "client".parse().unwrap());
    let reply = send(&client(), request).await.unwrap();
    let seen = reply.json()["headers"].clone();
    assert_eq!(seen["x-env"][0], "production");
    assert_eq!(
        seen["x-via"],
        serde_json::json!(["client", "rules.example"])
    );
    assert!(seen["x-debug"].is_null(), "{seen}");
    assert!(seen["x-ignored"].is_null(), "{seen}");
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert!(reply.headers.get("content-type").is_none());
    let warnings = admin_text(&sluice, "/api/warnings").await;
    assert!(warnings.contains("unknown-annotation"), "{warnings}");
}

/// `proxy-redirect-from` / `-to`: the pod's `Location` and `Refresh` are
/// rewritten, as nginx's `proxy_redirect`.
#[tokio::test]
async fn proxy_redirect_rewrites_the_pods_location() {
    let pod = start_upstream("web").await;
    let from = format!("{NGINX}proxy-redirect-from");
    let to = format!("{NGINX}proxy-redirect-to");
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "app",
            Some("app.example"),
            &[
                (&from, "http://internal:8080/"),
                (&to, "https://$host/app/"),
            ],
            &[("/", "Prefix", "web")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let mut request = get(sluice.http_addr, "app.example", "/login");
    request
        .headers_mut()
        .insert("x-fake-status", "302".parse().unwrap());
    let location = "http://internal:8080/home?x=1";
    request
        .headers_mut()
        .insert("x-fake-location", location.parse().unwrap());
    let refresh = "5; url=http://internal:8080/later";
    request
        .headers_mut()
        .insert("x-fake-refresh", refresh.parse().unwrap());
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.headers["location"],
        "https://app.example/app/home?x=1"
    );
    assert_eq!(
        reply.headers["refresh"],
        "5; url=https://app.example/app/later"
    );
    // Another prefix is left alone.
    let mut request = get(sluice.http_addr, "app.example", "/login");
    request
        .headers_mut()
        .insert("x-fake-status", "302".parse().unwrap());
    request
        .headers_mut()
        .insert("x-fake-location", "https://elsewhere/".parse().unwrap());
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.headers["location"], "https://elsewhere/");
}

/// `proxy-cookie-domain` and `proxy-cookie-path`: the pod's `Set-Cookie`
/// attributes rewritten, as nginx's `proxy_cookie_domain` / `_path`.
#[tokio::test]
async fn proxy_cookie_domain_and_path_rewrite_the_pods_cookies() {
    let pod = start_upstream("web").await;
    let domain = format!("{NGINX}proxy-cookie-domain");
    let path = format!("{NGINX}proxy-cookie-path");
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "app",
            Some("app.example"),
            &[
                (&domain, "internal.local app.example"),
                (&path, "/internal/ /"),
            ],
            &[("/", "Prefix", "web")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let cookie = |set: &'static str| {
        let mut request = get(sluice.http_addr, "app.example", "/");
        request
            .headers_mut()
            .insert("x-fake-set-cookie", set.parse().unwrap());
        request
    };
    let reply = send(
        &client(),
        cookie("sid=1; Domain=.Internal.local; Path=/internal/app; HttpOnly"),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.headers["set-cookie"],
        "sid=1; Domain=app.example; Path=/app; HttpOnly"
    );
    let reply = send(&client(), cookie("other=2; Domain=elsewhere; Path=/x"))
        .await
        .unwrap();
    assert_eq!(
        reply.headers["set-cookie"],
        "other=2; Domain=elsewhere; Path=/x"
    );
}

/// The ConfigMap's `hide-headers`: the pods' headers that clients never see,
/// on every route.
#[tokio::test]
async fn hide_headers_keep_the_pods_headers_from_clients() {
    let pod = start_upstream("web").await;
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml("app", Some("app.example"), &[], &[("/", "Prefix", "web")]);
    let manifests = Manifests::new();
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(
        manifests.path(),
        "hide-headers: \"Set-Cookie, X-Powered-By\"\n",
    )
    .await;
    let mut request = get(sluice.http_addr, "app.example", "/");
    request
        .headers_mut()
        .insert("x-fake-set-cookie", "sid=1".parse().unwrap());
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers.get("set-cookie").is_none(),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.headers["content-type"], "application/json");
}

/// As ingress-nginx, a pod's `Server` header is hidden unless the
/// ConfigMap's `allow-backend-server-header` is true.
#[tokio::test]
async fn the_pods_server_header_is_hidden_unless_allowed() {
    for (config, shown) in [
        ("", false),
        ("allow-backend-server-header: \"true\"\n", true),
    ] {
        let app = one_app(config, &[]).await;
        let mut request = get(app.sluice.http_addr, "a", "/");
        request
            .headers_mut()
            .insert("x-fake-server", "pod/1.0".parse().unwrap());
        let reply = send(&client(), request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers.contains_key("server"),
            shown,
            "{config:?}: {:?}",
            reply.headers
        );
    }
}

/// `limit-rate` / `limit-rate-after` (kilobytes): a response's first bytes
/// go at full speed, the rest at the rate. A lower bound only: a slow machine
/// can only take longer.
#[tokio::test]
async fn limit_rate_paces_a_response_after_its_first_bytes() {
    let pod = start_upstream("web").await;
    let rate = format!("{NGINX}limit-rate");
    let after = format!("{NGINX}limit-rate-after");
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "slow",
            Some("slow.example"),
            &[(&rate, "256"), (&after, "64")],
            &[("/", "Prefix", "web")],
        );
    let (_m, sluice) = serve(&yaml).await;
    let mut request = get(sluice.http_addr, "slow.example", "/");
    request.headers_mut().insert(
        "x-fake-body-bytes",
        (192 * 1024).to_string().parse().unwrap(),
    );
    let started = std::time::Instant::now();
    let reply = send(&client(), request).await.unwrap();
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.len() > 192 * 1024, "the whole body arrives");
    // 128 KiB past the first 64, at 256 KiB a second: half a second at least.
    assert!(took >= std::time::Duration::from_millis(450), "{took:?}");
}

/// The ConfigMap's `limit-rate` (bytes a second) applies to every route;
/// an Ingress's `limit-rate: "0"` turns it off for its own.
#[tokio::test]
async fn the_global_limit_rate_and_an_ingress_that_opts_out() {
    let pod = start_upstream("web").await;
    let rate = format!("{NGINX}limit-rate");
    let yaml = service_yaml("web", &[pod.addr])
        + &ingress_yaml(
            "paced",
            Some("paced.example"),
            &[],
            &[("/", "Prefix", "web")],
        )
        + &ingress_yaml(
            "free",
            Some("free.example"),
            &[(&rate, "0")],
            &[("/", "Prefix", "web")],
        );
    let manifests = Manifests::new();
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(
        manifests.path(),
        "limit-rate: 262144\nlimit-rate-after: 65536\n",
    )
    .await;
    let fetch = |host: &'static str| {
        let mut request = get(sluice.http_addr, host, "/");
        request.headers_mut().insert(
            "x-fake-body-bytes",
            (192 * 1024).to_string().parse().unwrap(),
        );
        request
    };
    let started = std::time::Instant::now();
    let reply = send(&client(), fetch("paced.example")).await.unwrap();
    assert!(reply.body.len() > 192 * 1024);
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(450), "{took:?}");
    // Opted out: served whole, and the admin API says it is not paced.
    let reply = send(&client(), fetch("free.example")).await.unwrap();
    assert!(reply.body.len() > 192 * 1024);
    let routes: serde_json::Value =
        serde_json::from_str(&admin_text(&sluice, "/api/routes").await).unwrap();
    let limit_of = |host: &str| {
        let routes = routes["routes"].as_array().expect("a list of routes");
        let route = routes
            .iter()
            .find(|r| r["host"] == host)
            .expect("the host's route");
        route["limit_rate"].clone()
    };
    assert_eq!(
        limit_of("paced.example"),
        serde_json::json!({"bytes_per_second": 262144, "after_bytes": 65536})
    );
    assert!(limit_of("free.example").is_null());
}

/// Headers from ConfigMaps, as ingress-nginx: the config's `add-headers`
/// (answers) and `proxy-set-headers` (upstream requests) on every route; an
/// Ingress's `custom-headers` from its own namespace, limited to the names
/// in `global-allowed-response-headers` (else its routes answer 503).
#[tokio::test]
async fn configmap_headers_for_every_route_and_for_one_ingress() {
    let pod = start_upstream("web").await;
    let config_map = |namespace: &str, name: &str, data: &str| {
        format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{{data}}}\n")
    };
    let custom = |name: &str, host: &str, value: &str| {
        ingress_yaml(
            name,
            Some(host),
            &[("nginx.ingress.kubernetes.io/custom-headers", value)],
            &[("/", "Prefix", "web")],
        )
    };
    let yaml = service_yaml("web", &[pod.addr])
        + &config_map("default", "edge-answers", "X-Global: \"yes\"")
        + &config_map("default", "edge-requests", "X-Client-Host: \"$host\"")
        + &config_map(
            "default",
            "app-headers",
            "X-Frame-Options: DENY, X-Served-For: \"$host\"",
        )
        + &config_map("default", "bad-headers", "X-Powered-By: sluice")
        + &custom("app", "app.example", "default/app-headers")
        + &custom("bad", "bad.example", "bad-headers")
        + &custom("plain", "plain.example", "missing")
        + &custom("theirs", "theirs.example", "default/app-headers")
            .replace("namespace: default", "namespace: team-b")
        + &ingress_yaml("none", Some("none.example"), &[], &[("/", "Prefix", "web")]);
    let manifests = Manifests::new();
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(
        manifests.path(),
        "add-headers: default/edge-answers\nproxy-set-headers: default/edge-requests\nglobal-allowed-response-headers: \"X-Frame-Options, X-Served-For\"\nproxy-add-original-uri-header: \"true\"\n",
    )
    .await;
    let http = client();

    let reply = send(&http, get(sluice.http_addr, "app.example", "/a?b=1"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["headers"]["x-original-uri"][0], "/a?b=1");
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    assert_eq!(reply.headers["x-served-for"], "app.example");
    assert_eq!(reply.headers["x-global"], "yes");
    assert_eq!(reply.json()["headers"]["x-client-host"][0], "app.example");

    // An Ingress without annotations gets the config's headers only.
    let reply = send(&http, get(sluice.http_addr, "none.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.headers["x-global"], "yes");
    assert!(reply.headers.get("x-frame-options").is_none());

    // A name not allowed, or a ConfigMap that is not there: 503, and why.
    for host in ["bad.example", "plain.example"] {
        let reply = send(&http, get(sluice.http_addr, host, "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{host}");
    }
    assert_eq!(pod.requests(), 2, "the refused requests reached no pod");
    let warnings = admin_json(&sluice, "/api/warnings").await.to_string();
    assert!(
        warnings
            .contains("X-Powered-By is not listed in the config's global-allowed-response-headers")
            || warnings.contains("x-powered-by is not listed"),
        "{warnings}"
    );
    assert!(
        warnings.contains("ConfigMap default/missing not found"),
        "{warnings}"
    );
    // Another namespace's ConfigMap is not a tenant's to name.
    assert!(
        warnings.contains("default/app-headers is in another namespace"),
        "{warnings}"
    );
    let reply = send(&http, get(sluice.http_addr, "theirs.example", "/"))
        .await
        .unwrap();
    assert!(reply.headers.get("x-frame-options").is_none());
}
