//! Migrating from ingress-nginx never quietly changes what an Ingress means:
//! an annotation sluice does not do warns and the rest is served; one that
//! grants or restricts access makes the Ingress answer 403 naming it; the
//! ingress-nginx ConfigMap loads as is; `sluice migrate` reports it all.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use serde_json::Value;
use sluice::server::Server;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// The warnings `/api/warnings` lists with this reason.
async fn warnings_with(sluice: &Server, reason: &str) -> Vec<Value> {
    let all = admin_json(sluice, "/api/warnings").await;
    all["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["reason"] == reason)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_plain_ingress_serves_without_warnings() {
    let app = one_app("", &[]).await;
    let reply = send(&client(), get(app.sluice.http_addr, "any.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let all = admin_json(&app.sluice, "/api/warnings").await;
    assert_eq!(all["warnings"], serde_json::json!([]), "{all}");
}

#[tokio::test]
async fn an_unsupported_annotation_warns_and_the_rest_is_served() {
    let tracing = format!("{NGINX}enable-opentelemetry");
    let typo = format!("{NGINX}proxy-body-sise");
    let buffering = format!("{NGINX}proxy-buffering");
    let app = one_app("", &[(&tracing, "true"), (&typo, "8m"), (&buffering, "on")]).await;
    let reply = send(&client(), get(app.sluice.http_addr, "any.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let unsupported = warnings_with(&app.sluice, "unsupported-annotation").await;
    assert_eq!(unsupported.len(), 1, "{unsupported:?}");
    let message = unsupported[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&tracing) && message.contains("rest of the Ingress is served"),
        "{message}"
    );
    assert_eq!(unsupported[0]["object"], "Ingress default/app");
    let unknown = warnings_with(&app.sluice, "unknown-annotation").await;
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0]["message"].as_str().unwrap().contains(&typo));
    // A buffer size means nothing to a streaming proxy: accepted without a word.
    let all = admin_text(&app.sluice, "/api/warnings").await;
    assert!(!all.contains("proxy-buffering"), "{all}");
    let metrics = admin_text(&app.sluice, "/metrics").await;
    assert!(
        metrics.contains("sluice_config_warnings{reason=\"unsupported-annotation\"}"),
        "{metrics}"
    );
}

/// Each kind of access annotation, on its own host: 403 naming it, and the
/// pod never sees a request. A plain host beside them is served.
#[tokio::test]
async fn each_kind_of_access_annotation_fails_closed() {
    let cases: &[(&str, &str)] = &[
        ("modsecurity-snippet", "SecRuleEngine On"),
        ("enable-modsecurity", "true"),
        ("stream-snippet", "deny 10.0.0.0/8;"),
    ];
    let upstream = start_upstream("a").await;
    let manifests = Manifests::new();
    let mut yaml = service_yaml("a", &[upstream.addr])
        + &ingress_yaml("plain", Some("plain.example"), &[], &[("/", "Prefix", "a")]);
    let keys: Vec<String> = cases.iter().map(|(k, _)| format!("{NGINX}{k}")).collect();
    for (i, ((_, value), key)) in cases.iter().zip(&keys).enumerate() {
        let host = format!("h{i}.example");
        yaml += &ingress_yaml(
            &format!("app{i}"),
            Some(&host),
            &[(key, value)],
            &[("/", "Prefix", "a")],
        );
    }
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    for (i, key) in keys.iter().enumerate() {
        let reply = send(&http, get(sluice.http_addr, &format!("h{i}.example"), "/"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{key}");
        let body = reply.text();
        assert!(body.contains(key.as_str()), "{key}: {body}");
        assert!(!body.contains("upstream"), "{body}");
    }
    assert_eq!(upstream.requests(), 0, "no request reached the pod");
    let reply = send(&http, get(sluice.http_addr, "plain.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let closed = warnings_with(&sluice, "fail-closed").await;
    assert_eq!(closed.len(), cases.len(), "{closed:?}");
}

fn configmap_example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ingress-nginx-configmap.yaml")
}

/// An ingress-nginx ConfigMap, manifest and all, is sluice's config file:
/// its values apply, unsupported keys warn, and the site is served.
#[tokio::test]
async fn an_ingress_nginx_configmap_loads_as_is() {
    let upstream = start_upstream("a").await;
    let manifests = Manifests::new();
    manifests.write(
        "app.yaml",
        &(service_yaml("a", &[upstream.addr])
            + &ingress_yaml("app", None, &[], &[("/", "Prefix", "a")])),
    );
    let sluice = start_sluice_with_config_file(manifests.path(), &configmap_example()).await;
    let reply = send(&client(), get(sluice.http_addr, "any.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let config = admin_json(&sluice, "/api/config").await;
    let running = &config["running"];
    assert_eq!(running["proxy-read-timeout"], "600000ms", "{running}");
    assert_eq!(running["proxy-body-size"], 50 << 20, "{running}");
    assert_eq!(running["use-forwarded-headers"], true);
    assert_eq!(running["limit-rejected-status"], 429);
    assert_eq!(running["proxy-next-upstream-tries"], 3);
    let foreign = running["ingress-nginx-keys"].as_array().unwrap();
    let status_of = |key: &str| {
        foreign
            .iter()
            .find(|k| k["key"] == key)
            .map(|k| k["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of("use-gzip").as_deref(), Some("unsupported"));
    assert_eq!(status_of("worker-processes").as_deref(), Some("no effect"));
    assert_eq!(status_of("proxy-read-timeout"), None, "a sluice key");
    let unsupported = warnings_with(&sluice, "unsupported-config-key").await;
    let keys: Vec<&str> = unsupported
        .iter()
        .map(|w| w["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "config compute-full-forwarded-for",
            "config use-gzip",
            "config gzip-level"
        ]
    );
}

/// A ConfigMap key that restricts access and that sluice does not honour
/// closes every route, naming the key.
#[tokio::test]
async fn a_configmap_access_key_fails_closed_everywhere() {
    let app = one_app("", &[]).await;
    let file = app._manifests.path().join("../sluice-config.yaml");
    std::fs::write(
        &file,
        "enable-modsecurity: \"true\"\nproxy-read-timeout: \"30\"\n",
    )
    .unwrap();
    let sluice = start_sluice_with_config_file(app._manifests.path(), &file).await;
    let reply = send(&client(), get(sluice.http_addr, "any.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.text().contains("enable-modsecurity"),
        "{}",
        reply.text()
    );
    assert_eq!(app.upstream.requests(), 0);
    assert_eq!(warnings_with(&sluice, "fail-closed").await.len(), 1);
    // A key neither ingress-nginx nor sluice knows is still an error naming it.
    let err = sluice::config::Config::from_yaml("proxy-read-timout: \"30\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("proxy-read-timout"), "{err}");
}

/// An Ingress whose `configuration-snippet` is `snippet` (a YAML block).
fn snippet_app_yaml(snippet: &str) -> String {
    let indented: String = snippet.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app\n  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/configuration-snippet: |\n{indented}spec:\n  rules:\n  - http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}\n"
    )
}

/// The directives people put in snippets take effect, through the door.
#[tokio::test]
async fn snippet_directives_take_effect() {
    let upstream = start_upstream("a").await;
    let manifests = Manifests::new();
    let snippet = r#"more_set_headers "X-Frame-Options: DENY";
add_header X-Cache-Policy "no-store";
add_header X-Only-On-Success "yes";
proxy_hide_header Content-Type;
proxy_set_header X-Forwarded-Proto https;
set $team "shop-$host";
more_set_input_headers "X-Seen-Host: $host" "X-Team: $team";
proxy_method PURGE;
if ($http_x_debug = "1") { return 403 "no debugging here"; }
if ($host ~* ^old\.example$) { return 301 https://new.example$request_uri; }
rewrite ^/old/(.*)$ /new/$1 break;
rewrite ^/moved$ https://elsewhere.example/ permanent;
allow 127.0.0.0/8;
deny all;"#;
    manifests.write(
        "app.yaml",
        &(service_yaml("a", &[upstream.addr]) + &snippet_app_yaml(snippet)),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    let all = admin_json(&sluice, "/api/warnings").await;
    assert_eq!(all["warnings"], serde_json::json!([]), "{all}");

    let reply = send(
        &http,
        get(sluice.http_addr, "shop.example", "/old/cart?x=1"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    assert_eq!(reply.headers["x-cache-policy"], "no-store");
    assert!(
        !reply.headers.contains_key("content-type"),
        "proxy_hide_header"
    );
    let seen = reply.json();
    assert_eq!(
        seen["uri"], "/new/cart?x=1",
        "rewrite ... break keeps the query"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(seen["headers"]["x-seen-host"][0], "shop.example");
    assert_eq!(
        seen["headers"]["x-team"][0], "shop-shop.example",
        "set $team"
    );
    assert_eq!(seen["method"], "PURGE", "proxy_method");

    let mut debug = get(sluice.http_addr, "shop.example", "/");
    debug.headers_mut().insert("x-debug", "1".parse().unwrap());
    let reply = send(&http, debug).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.text(), "no debugging here");
    assert_eq!(
        reply.headers["x-frame-options"], "DENY",
        "more_set_headers: every answer"
    );
    assert!(
        !reply.headers.contains_key("x-only-on-success"),
        "add_header: 2xx and 3xx only"
    );

    let reply = send(&http, get(sluice.http_addr, "old.example", "/a?b=c"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.headers["location"], "https://new.example/a?b=c");
    let reply = send(&http, get(sluice.http_addr, "shop.example", "/moved"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.headers["location"], "https://elsewhere.example/");
    assert_eq!(
        upstream.requests(),
        1,
        "only the rewritten request reached the pod"
    );
}

/// Unknown directives warn and the rest applies; an access directive sluice
/// cannot interpret closes the Ingress; a plain deny-all denies.
#[tokio::test]
async fn snippet_access_directives_fail_closed_and_unknown_ones_warn() {
    let upstream = start_upstream("a").await;
    let manifests = Manifests::new();
    manifests.write(
        "app.yaml",
        &(service_yaml("a", &[upstream.addr])
            + &snippet_app_yaml("proxy_buffering off;\nmore_set_headers \"X-A: b\";")),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "shop.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-a"], "b");
    let warned = warnings_with(&sluice, "unsupported-snippet").await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0]["message"]
        .as_str()
        .unwrap()
        .contains("proxy_buffering"));

    for (snippet, status) in [
        (
            "auth_request /oauth2/auth;\nmore_set_headers \"X-A: b\";",
            StatusCode::FORBIDDEN,
        ),
        ("deny all;", StatusCode::FORBIDDEN),
        ("allow 10.0.0.0/8;\ndeny all;", StatusCode::FORBIDDEN),
        ("allow 127.0.0.1;\ndeny all;", StatusCode::OK),
    ] {
        manifests.write(
            "app.yaml",
            &(service_yaml("a", &[upstream.addr]) + &snippet_app_yaml(snippet)),
        );
        let http = http.clone();
        let addr = sluice.http_addr;
        let reached = until_status(
            &http,
            || get(addr, "shop.example", "/"),
            status,
            Duration::from_secs(10),
        )
        .await;
        assert!(reached.is_some(), "{snippet}: never {status}");
    }
    let closed = warnings_with(&sluice, "fail-closed").await;
    assert!(
        closed.is_empty(),
        "the last snippet is fully interpreted: {closed:?}"
    );
}

async fn status(sluice: &Server) -> Value {
    admin_json(sluice, "/api/config").await["running"]["limit-rejected-status"].clone()
}

fn configmap_yaml(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ingress-nginx-controller, namespace: ingress-nginx}}\ndata:\n{data}")
}

/// `--configmap NAMESPACE/NAME`: the ConfigMap is read at start and every
/// edit applies, as ingress-nginx's flag of the same name; an invalid edit
/// keeps the last good config.
#[tokio::test]
async fn a_watched_configmap_applies_its_edits() {
    use sluice::discovery::kube::KubeOptions;
    use sluice::reload::{read_configmap, ConfigSource};
    use sluice::server::{Options, Source};

    let api = crate::support::apiserver::FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    api.apply_yaml(&configmap_yaml(
        "  limit-req-status-code: \"503\"\n  proxy-read-timeout: \"30\"\n",
    ));
    let options = KubeOptions {
        kubeconfig: Some(api.kubeconfig(dir.path())),
        debounce: sluice::discovery::kube::DEFAULT_DEBOUNCE,
        ..KubeOptions::default()
    };
    let client = sluice::discovery::kube::connect(&options).await.unwrap();
    let read = read_configmap(client.clone(), "ingress-nginx", "ingress-nginx-controller")
        .await
        .unwrap();
    assert_eq!(read.limit_rejected_status, 503);
    let config = sluice::config::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        https_addr: "127.0.0.1:0".parse().unwrap(),
        access_log: "off".into(),
        ..read.clone()
    };
    let sluice = sluice::server::Server::start(Options {
        config,
        config_source: Some(ConfigSource::ConfigMap {
            client,
            namespace: "ingress-nginx".into(),
            name: "ingress-nginx-controller".into(),
            read: Box::new(read),
        }),
        source: Source::Kubernetes(Box::new(options)),
        class: Default::default(),
        webhook: None,
    })
    .await
    .unwrap();
    assert_eq!(status(&sluice).await, 503);

    api.apply_yaml(&configmap_yaml(
        "  limit-req-status-code: \"429\"\n  use-gzip: \"true\"\n",
    ));
    let applied = eventually(Duration::from_secs(10), || async {
        status(&sluice).await == 429
    })
    .await;
    assert!(applied.is_some(), "the edit did not apply");
    let config = admin_json(&sluice, "/api/config").await;
    assert_eq!(
        config["running"]["proxy-read-timeout"], "60000ms",
        "back to the default"
    );
    assert!(
        config["restart_needed"].as_array().unwrap().is_empty(),
        "{config}"
    );

    let invalid = || async {
        let metrics = admin_text(&sluice, "/metrics").await;
        metrics
            .lines()
            .find(|l| l.starts_with("sluice_config_file_reloads_total{result=\"invalid\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = invalid().await;
    api.apply_yaml(&configmap_yaml("  limit-req-status-code: \"200\"\n"));
    let refused = eventually(Duration::from_secs(10), || async {
        invalid().await > before
    })
    .await;
    assert!(refused.is_some(), "the invalid edit was not seen");
    assert_eq!(status(&sluice).await, 429, "the last good config stays");
}

/// Runs `sluice migrate` with `args`; (exit code, stdout).
fn migrate(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("migrate")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{:?}: {stderr}",
        out.status
    );
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `sluice migrate` on a directory: each Ingress's verdict, each key's status,
/// and an exit status that says whether anything would stop being served.
#[test]
fn sluice_migrate_reports_a_directory() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/migrate");
    let configmap = configmap_example();
    let (code, text) = migrate(&[
        "--manifests",
        data.to_str().unwrap(),
        "--configmap",
        configmap.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{text}");
    for line in [
        "Ingress default/admin: fails closed (403)",
        "Ingress argocd/argocd: served unchanged",
        "Ingress default/php: not served",
        "Ingress default/blog: served with differences",
        "Ingress default/shop: served unchanged",
        "Summary: 5 Ingresses: 2 served unchanged, 1 served with differences, 1 not served, 1 fails closed (403)",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains("use-gzip") && l.contains("unsupported")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("proxy-buffering") && l.contains("no effect")),
        "{text}"
    );

    let (_, json) = migrate(&["--manifests", data.to_str().unwrap(), "--output", "json"]);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["summary"],
        serde_json::json!({"unchanged": 2, "differences": 1, "not-served": 1, "fails-closed": 1})
    );
    let admin = report["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "admin")
        .unwrap();
    assert_eq!(admin["verdict"], "fails-closed");
    assert_eq!(
        admin["annotations"][0]["key"],
        "nginx.ingress.kubernetes.io/modsecurity-snippet"
    );

    // Only the plain Ingress: nothing would stop being served.
    let plain = tempfile::tempdir().unwrap();
    let shop = std::fs::read_to_string(data.join("apps.yaml")).unwrap();
    let shop = shop.split("---").next().unwrap();
    std::fs::write(plain.path().join("shop.yaml"), shop).unwrap();
    let (code, text) = migrate(&["--manifests", plain.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Summary: 1 Ingresses: 1 served unchanged"),
        "{text}"
    );
}

/// The migration guide's table is the registry's: regenerate it with
/// `sluice migrate --table` when an entry changes.
#[test]
fn the_migration_guide_carries_the_registry() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/migrating-from-ingress-nginx.md"),
    )
    .unwrap();
    let begin = "<!-- registry:begin (sluice migrate --table) -->\n";
    let end = "<!-- registry:end -->";
    let start = guide.find(begin).expect("begin marker") + begin.len();
    let stop = guide.find(end).expect("end marker");
    assert!(
        guide[start..stop] == sluice::migrate::table(),
        "docs/migrating-from-ingress-nginx.md is stale: paste `sluice migrate --table` between the markers"
    );
}

/// `sluice migrate` against a cluster: the objects and the ConfigMap are
/// listed through the API, with the same verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_migrate_reads_a_cluster() {
    let api = crate::support::apiserver::FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let apps = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/migrate/apps.yaml"),
    )
    .unwrap();
    for document in apps.split("---") {
        api.apply_yaml(document);
    }
    api.apply_yaml(&configmap_yaml(
        "  use-gzip: \"true\"\n  enable-modsecurity: \"true\"\n",
    ));
    let args = [
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--configmap".to_owned(),
        "ingress-nginx/ingress-nginx-controller".to_owned(),
    ];
    let (code, text) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        migrate(&args)
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{text}");
    // The ConfigMap's web application firewall closes every route.
    assert!(text.contains("Summary: 5 Ingresses: 0 served unchanged, 0 served with differences, 1 not served, 4 fails closed (403)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("enable-modsecurity") && l.contains("fails closed")),
        "{text}"
    );
}

/// `sluice migrate --http-routes`: the HTTPRoutes a plain Ingress amounts
/// to, which sluice then serves exactly as it served the Ingress; a TLS
/// host's plain side redirects; an annotated Ingress is named with why it
/// has none.
#[tokio::test]
async fn sluice_migrate_suggests_the_http_routes_an_ingress_amounts_to() {
    let web = start_upstream("web").await;
    let api = start_upstream("api").await;
    let services = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{name: http, port: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}]\n";
    let slices = format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: api-1, namespace: shop, labels: {{kubernetes.io/service-name: api}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n",
        web.addr.port(),
        api.addr.port()
    );
    let ingresses = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  ingressClassName: nginx
  tls: [{hosts: [secure.example], secretName: cert}]
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /login, pathType: Exact, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
  - host: secure.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limited
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 8m}
spec:
  ingressClassName: nginx
  rules:
  - host: limited.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 8080}}}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let objects = format!("{services}{slices}{ingresses}");
    std::fs::write(dir.path().join("all.yaml"), &objects).unwrap();
    let (code, yaml) = migrate(&[
        "--manifests",
        dir.path().to_str().unwrap(),
        "--http-routes",
        "--gateway",
        "edge/sluice",
    ]);
    assert_eq!(code, 0, "{yaml}");
    assert!(
        yaml.contains("# Ingress shop/limited: no HTTPRoute equivalent: nginx.ingress.kubernetes.io/proxy-body-size would be lost"),
        "{yaml}"
    );
    let routes: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "shop-secure-example",
            "shop-secure-example-redirect",
            "shop-shop-example"
        ]
    );
    let redirect = &routes[1]["spec"];
    assert_eq!(redirect["parentRefs"][0]["sectionName"], "http");
    assert_eq!(
        redirect["rules"][0]["filters"][0]["requestRedirect"]["statusCode"],
        308
    );
    // The named port became its number.
    assert!(yaml.contains("port: 8080"), "{yaml}");

    // Served from the suggestion, the host answers as the Ingress did.
    let gateway = gateway_yaml(
        "edge",
        "sluice",
        &["{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}"],
    );
    let as_ingress = Manifests::new();
    as_ingress.write(
        "all.yaml",
        &objects.replace("ingressClassName: nginx", "ingressClassName: sluice"),
    );
    let as_routes = Manifests::new();
    as_routes.write("all.yaml", &format!("{services}{slices}{gateway}{yaml}"));
    let a = start_sluice(as_ingress.path(), "").await;
    let b = start_sluice(as_routes.path(), "").await;
    let http = client();
    let ready = eventually(Duration::from_secs(10), || async {
        status_of(&http, get(b.http_addr, "shop.example", "/")).await == StatusCode::OK
    })
    .await;
    assert!(ready.is_some(), "{}", admin_text(&b, "/api/warnings").await);
    for path in [
        "/", "/api", "/api/x", "/apix", "/login", "/login/x", "/other",
    ] {
        let answer = |sluice: SocketAddr| {
            let http = http.clone();
            async move {
                let reply = send(&http, get(sluice, "shop.example", path))
                    .await
                    .unwrap();
                (reply.status, reply.upstream())
            }
        };
        assert_eq!(
            answer(a.http_addr).await,
            answer(b.http_addr).await,
            "{path}"
        );
    }
}
