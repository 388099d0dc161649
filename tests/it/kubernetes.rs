//! Kubernetes discovery end to end: the real kube client talks to an in-test
//! apiserver; objects created there become routes to fake pods on 127.0.0.x.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::apiserver::FakeApiServer;
use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use sluice::discovery::kube::KubeOptions;
use sluice::discovery::status::StatusOptions;
use sluice::server::Server;

const SOON: Duration = Duration::from_secs(1);
const SYNC: Duration = Duration::from_secs(5);

fn admin(sluice: &Server, path: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(format!("http://{}{path}", sluice.admin_addr))
        .body(Full::default())
        .unwrap()
}

async fn answered_by(http: &HttpClient, sluice: &Server, host: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let reply = send(http, get(sluice.http_addr, host, "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        seen.insert(reply.upstream());
    }
    seen
}

/// Applies an Ingress for `host` to Service `web` and waits until it is served.
async fn apply_and_wait(
    api: &FakeApiServer,
    http: &HttpClient,
    sluice: &Server,
    name: &str,
    host: &str,
    limit: Duration,
) -> bool {
    api.apply_yaml(&ingress_yaml(
        name,
        Some(host),
        &[],
        &[("/", "Prefix", "web")],
    ));
    until_status(
        http,
        || get(sluice.http_addr, host, "/"),
        StatusCode::OK,
        limit,
    )
    .await
    .is_some()
}

/// Starts sluice against the apiserver and waits until it is ready.
async fn start_ready(
    api: &FakeApiServer,
    dir: &tempfile::TempDir,
    options: KubeOptions,
) -> (Server, HttpClient) {
    let sluice = start_sluice_kube(&api.kubeconfig(dir.path()), options).await;
    let http = client();
    let ready = until_status(&http, || admin(&sluice, "/readyz"), StatusCode::OK, SYNC).await;
    assert!(ready.is_some(), "sluice did not become ready");
    (sluice, http)
}

/// An `app` Service on `pod` and an Ingress for `team-a.test`, in namespace team-a.
fn apply_team_a_app(api: &FakeApiServer, pod: std::net::SocketAddr) {
    let in_team_a = |yaml: String| yaml.replace("namespace: default", "namespace: team-a");
    api.apply_yaml(&in_team_a(service_yaml("app", &[pod])));
    api.apply_yaml(&in_team_a(ingress_yaml(
        "app",
        Some("team-a.test"),
        &[],
        &[("/", "Prefix", "app")],
    )));
}

/// A cluster with the `sluice` class and a `web` Service on two pods.
async fn cluster() -> (FakeApiServer, Upstream, Upstream, tempfile::TempDir) {
    let api = FakeApiServer::start().await;
    let pod1 = start_upstream_on("pod-1", "127.0.0.2").await;
    let pod2 = start_upstream_on("pod-2", "127.0.0.3").await;
    api.apply_yaml(INGRESS_CLASS);
    api.apply_yaml(&service_yaml("web", &[pod1.addr, pod2.addr]));
    // Round-robin, so that a few requests reach every pod (these tests are about
    // discovery; balancing has its own).
    api.apply_yaml(&ingress_yaml(
        "web",
        Some("web.test"),
        &[("sluice.io/load-balance", "round_robin")],
        &[("/", "Prefix", "web")],
    ));
    (api, pod1, pod2, tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_objects_become_routes_to_ready_pods() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    // Someone else's Ingress: ignored.
    api.apply_yaml(
        &ingress_yaml(
            "theirs",
            Some("theirs.test"),
            &[],
            &[("/", "Prefix", "web")],
        )
        .replace("spec:\n", "spec:\n  ingressClassName: nginx\n"),
    );
    let (sluice, http) = start_ready(&api, &dir, KubeOptions::default()).await;
    assert_eq!(
        status_of(&http, admin(&sluice, "/healthz")).await,
        StatusCode::OK
    );

    assert_eq!(
        answered_by(&http, &sluice, "web.test", 6).await,
        BTreeSet::from(["pod-1".into(), "pod-2".into()])
    );
    let theirs = send(&http, get(sluice.http_addr, "theirs.test", "/"))
        .await
        .unwrap();
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // A new Ingress is served within a second of being applied.
    let served = apply_and_wait(&api, &http, &sluice, "shop", "shop.test", SOON).await;
    assert!(served, "new Ingress not served within 1s");

    // A pod goes away: traffic stops reaching it.
    api.delete("EndpointSlice", "default", "web-1");
    let only_pod1 = eventually(SOON, || {
        let http = http.clone();
        let sluice_addr = sluice.http_addr;
        async move {
            let mut all = true;
            for _ in 0..4 {
                let reply = send(&http, get(sluice_addr, "web.test", "/"))
                    .await
                    .unwrap();
                all &= reply.upstream() == "pod-1";
            }
            all
        }
    })
    .await;
    assert!(only_pod1.is_some(), "the removed pod still gets traffic");

    // An Ingress deleted: 404.
    api.delete("Ingress", "default", "shop");
    let gone = until_status(
        &http,
        || get(sluice.http_addr, "shop.test", "/"),
        StatusCode::NOT_FOUND,
        SOON,
    )
    .await;
    assert!(gone.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_recover_from_410_gone_and_dropped_connections() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    let (sluice, http) = start_ready(&api, &dir, KubeOptions::default()).await;

    // 410 Gone: the watchers re-list, and the table is not dropped meanwhile.
    let lists_before = api.lists("ingresses");
    api.expire_watches();
    assert_eq!(answered_by(&http, &sluice, "web.test", 2).await.len(), 2);
    let seen = apply_and_wait(&api, &http, &sluice, "after-410", "a410.test", SYNC).await;
    assert!(seen, "change after a 410 not picked up");
    assert!(
        api.lists("ingresses") > lists_before,
        "a 410 must force a re-list"
    );

    // Cut connections: the watchers reconnect and continue.
    api.drop_watches();
    let seen = apply_and_wait(&api, &http, &sluice, "after-drop", "drop.test", SYNC).await;
    assert!(seen, "change after a dropped watch not picked up");

    // The apiserver goes away entirely: the last table keeps serving.
    api.stop();
    assert_eq!(answered_by(&http, &sluice, "web.test", 4).await.len(), 2);
    assert_eq!(
        status_of(&http, admin(&sluice, "/healthz")).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_every_watcher_has_listed() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    api.set_failing("secrets", true);
    let sluice = start_sluice_kube(&api.kubeconfig(dir.path()), KubeOptions::default()).await;
    let http = client();
    // Wait until the secrets list has failed and been retried at least once.
    let retried = eventually(SYNC, || {
        let lists = api.lists("secrets");
        async move { lists >= 2 }
    })
    .await;
    assert!(retried.is_some());
    assert_eq!(
        status_of(&http, admin(&sluice, "/readyz")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status_of(&http, admin(&sluice, "/healthz")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status_of(&http, get(sluice.http_addr, "web.test", "/")).await,
        StatusCode::NOT_FOUND
    );

    api.set_failing("secrets", false);
    assert!(until_status(
        &http,
        || admin(&sluice, "/readyz"),
        StatusCode::OK,
        Duration::from_secs(40)
    )
    .await
    .is_some());
    assert_eq!(
        status_of(&http, get(sluice.http_addr, "web.test", "/")).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_restricts_what_is_served() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    let pod3 = start_upstream_on("pod-3", "127.0.0.4").await;
    apply_team_a_app(&api, pod3.addr);
    let options = KubeOptions {
        namespaces: vec!["team-a".into()],
        ..KubeOptions::default()
    };
    let (sluice, http) = start_ready(&api, &dir, options).await;
    assert_eq!(
        answered_by(&http, &sluice, "team-a.test", 2).await,
        BTreeSet::from(["pod-3".into()])
    );
    let other = send(&http, get(sluice.http_addr, "web.test", "/"))
        .await
        .unwrap();
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "namespace default is not watched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_writes_status_and_records_warning_events() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    api.apply_yaml(&ingress_yaml(
        "broken",
        Some("broken.test"),
        &[("nginx.ingress.kubernetes.io/proxy-body-size", "lots")],
        &[("/", "Prefix", "web")],
    ));
    // Served, with a warning; and failing closed.
    api.apply_yaml(&ingress_yaml(
        "sticky",
        Some("sticky.test"),
        &[("nginx.ingress.kubernetes.io/enable-opentelemetry", "true")],
        &[("/", "Prefix", "web")],
    ));
    api.apply_yaml(&ingress_yaml(
        "guarded",
        Some("guarded.test"),
        &[(
            "nginx.ingress.kubernetes.io/modsecurity-snippet",
            "SecRuleEngine On",
        )],
        &[("/", "Prefix", "web")],
    ));
    let kubeconfig = api.kubeconfig(dir.path());
    let replica = |identity: &str| KubeOptions {
        identity: identity.into(),
        status: Some(StatusOptions {
            publish_addresses: vec!["203.0.113.10".into(), "edge.example.com".into()],
            pod_selector: "app.kubernetes.io/name=sluice".into(),
            namespace: "sluice".into(),
            lease_name: "sluice-leader".into(),
            identity: identity.into(),
            retry_period: Duration::from_millis(100),
        }),
        ..KubeOptions::default()
    };
    let _a = start_sluice_kube(&kubeconfig, replica("replica-a")).await;
    let _b = start_sluice_kube(&kubeconfig, replica("replica-b")).await;

    let written = eventually(SYNC, || {
        let status = api
            .object("Ingress", "default", "web")
            .map(|o| o["status"].clone());
        async move {
            status.is_some_and(|s| {
                s["loadBalancer"]["ingress"]
                    == serde_json::json!([{"ip": "203.0.113.10"}, {"hostname": "edge.example.com"}])
            })
        }
    })
    .await;
    assert!(written.is_some(), "status not written");
    let lease = api.object("Lease", "sluice", "sluice-leader").unwrap();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    assert!(holder == "replica-a" || holder == "replica-b", "{holder}");

    // Let the Lease be renewed several times: the status is written once, by one replica.
    let renewals = |api: &FakeApiServer| {
        api.writes()
            .iter()
            .filter(|w| w.path.contains("/leases/"))
            .count()
    };
    let start = renewals(&api);
    assert!(eventually(SYNC, || {
        let n = renewals(&api);
        async move { n >= start + 6 }
    })
    .await
    .is_some());
    let status_writes: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.path.ends_with("/ingresses/web/status"))
        .collect();
    assert_eq!(status_writes.len(), 1, "{status_writes:?}");

    // The invalid Ingress got one Warning Event (from the leader only).
    let events: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.path.contains("/events") && w.body["regarding"]["name"] == "broken")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].body["type"], "Warning");
    assert_eq!(events[0].body["reason"], "InvalidAnnotation");
    assert!(events[0].body["note"]
        .as_str()
        .unwrap()
        .contains("proxy-body-size"));
    for (name, reason, key) in [
        ("sticky", "UnsupportedAnnotation", "enable-opentelemetry"),
        ("guarded", "FailClosed", "modsecurity-snippet"),
    ] {
        let events: Vec<_> = api
            .writes()
            .into_iter()
            .filter(|w| w.path.contains("/events") && w.body["regarding"]["name"] == name)
            .collect();
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0].body["reason"], reason);
        assert!(events[0].body["note"].as_str().unwrap().contains(key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_selector_follows_namespace_labels() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    let pod3 = start_upstream_on("pod-3", "127.0.0.5").await;
    let namespace = |name: &str, tenant: &str| {
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{tenant: {tenant}}}\n")
    };
    api.apply_yaml(&namespace("default", "b"));
    api.apply_yaml(&namespace("team-a", "a"));
    apply_team_a_app(&api, pod3.addr);
    let options = KubeOptions {
        namespace_selector: Some("tenant=a".into()),
        ..KubeOptions::default()
    };
    let (sluice, http) = start_ready(&api, &dir, options).await;
    assert_eq!(
        status_of(&http, get(sluice.http_addr, "team-a.test", "/")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&http, get(sluice.http_addr, "web.test", "/")).await,
        StatusCode::NOT_FOUND
    );

    // Relabel `default` into the tenant: its Ingresses are served from then on.
    api.apply_yaml(&namespace("default", "a"));
    let joined = until_status(
        &http,
        || get(sluice.http_addr, "web.test", "/"),
        StatusCode::OK,
        SYNC,
    )
    .await;
    assert!(
        joined.is_some(),
        "a namespace that starts matching is served"
    );
}

/// A ConfigMap that an Ingress's `custom-headers` names is watched: an edit
/// to it reaches the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_a_named_configmap_reaches_the_answers() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    let headers = |value: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: headers, namespace: default}}\ndata: {{X-Frame-Options: {value}}}\n")
    };
    api.apply_yaml(&headers("DENY"));
    api.apply_yaml(&ingress_yaml(
        "framed",
        Some("framed.test"),
        &[("nginx.ingress.kubernetes.io/custom-headers", "headers")],
        &[("/", "Prefix", "web")],
    ));
    let sluice = start_sluice_kube_with(
        &api.kubeconfig(dir.path()),
        KubeOptions::default(),
        "global-allowed-response-headers: X-Frame-Options\n",
    )
    .await;
    let http = client();
    let framed = |want: &'static str| {
        let http = http.clone();
        let addr = sluice.http_addr;
        async move {
            send(&http, get(addr, "framed.test", "/"))
                .await
                .is_ok_and(|r| r.headers.get("x-frame-options").is_some_and(|v| v == want))
        }
    };
    assert!(eventually(SYNC, || framed("DENY")).await.is_some());
    api.apply_yaml(&headers("SAMEORIGIN"));
    assert!(eventually(SYNC, || framed("SAMEORIGIN")).await.is_some());
}

/// Gateway API CRDs that sluice may not list (RBAC from before Gateway
/// API): Ingresses are served and sluice becomes ready, as without CRDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_crds_sluice_may_not_list_never_hold_readiness() {
    let (api, _pod1, _pod2, dir) = cluster().await;
    api.install_gateway_api();
    api.set_failing("httproutes", true);
    let (sluice, http) = start_ready(&api, &dir, KubeOptions::default()).await;
    let served = until_status(
        &http,
        || get(sluice.http_addr, "web.test", "/"),
        StatusCode::OK,
        SYNC,
    )
    .await;
    assert!(served.is_some());
}
