//! Balancing end to end: latency-weighted shares, circuit breaking, panic mode,
//! slow start, hash affinity, retries and their budget, with fake pods whose
//! latency and health change during the test.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::time::Duration;

use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use sluice::server::Server;

/// Sends `n` GETs from `concurrency` clients; returns the statuses seen (or
/// "error" for a failed exchange).
async fn load(addr: SocketAddr, n: usize, concurrency: usize) -> BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut seen = BTreeMap::new();
            for _ in 0..n / concurrency {
                let key = match send(&http, get(addr, "app.test", "/")).await {
                    Ok(reply) => reply.status.as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                };
                *seen.entry(key).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut total = BTreeMap::new();
    for task in tasks {
        for (k, v) in task.await.unwrap() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

struct App {
    pods: Vec<Upstream>,
    manifests: Manifests,
    sluice: Server,
}

impl App {
    async fn start(delays: &[u64], annotations: &[(&str, &str)], config: &str) -> App {
        let mut pods = Vec::new();
        for (i, delay) in delays.iter().enumerate() {
            pods.push(start_upstream_with_delay(&format!("pod-{i}"), *delay).await);
        }
        let manifests = Manifests::new();
        let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        manifests.write("svc.yaml", &service_yaml("app", &addrs));
        manifests.write(
            "app.yaml",
            &ingress_yaml(
                "app",
                Some("app.test"),
                annotations,
                &[("/", "Prefix", "app")],
            ),
        );
        let sluice = start_sluice(manifests.path(), config).await;
        App {
            pods,
            manifests,
            sluice,
        }
    }

    fn counts(&self) -> Vec<usize> {
        self.pods.iter().map(Upstream::requests).collect()
    }
}

fn delta(after: &[usize], before: &[usize]) -> Vec<usize> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

fn share(counts: &[usize], i: usize) -> f64 {
    counts[i] as f64 / counts.iter().sum::<usize>().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faster_pods_get_more_traffic_and_shares_even_out() {
    let app = App::start(&[5, 20, 100], &[], "ewma-decay: 1s\nslow-start: 0s").await;
    let statuses = load(app.sluice.http_addr, 2000, 8).await;
    assert_eq!(statuses.get("200"), Some(&2000), "{statuses:?}");
    let counts = app.counts();
    eprintln!("shares with latencies 5/20/100 ms: {counts:?}");
    assert!(share(&counts, 0) > 0.5, "fastest {counts:?}");
    assert!(share(&counts, 2) < 0.15, "slowest {counts:?}");
    assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");

    // The slow pod gets fast: its estimate decays back and it earns a fair share.
    app.pods[2].set_delay(5);
    app.pods[1].set_delay(5);
    let before = app.counts();
    load(app.sluice.http_addr, 600, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few decay windows without traffic
    let settled = app.counts();
    load(app.sluice.http_addr, 1500, 8).await;
    let after = delta(&app.counts(), &settled);
    eprintln!(
        "shares once all are fast: {after:?} (before settling: {:?})",
        delta(&settled, &before)
    );
    assert!(
        share(&after, 2) > 0.15,
        "the formerly slow pod is tried again: {after:?}"
    );
}

/// Ten identical pods whose answers take 1 to 3 ms at random, as the same
/// program on ten nodes does: 100 sequential requests reach every one, and over
/// 2,000 requests, one at a time and eight at once, each gets its fair share
/// within a quarter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_noisy_pods_share_evenly() {
    let app = App::start(&[1; 10], &[], "slow-start: 0s").await;
    for pod in &app.pods {
        pod.set_jitter(2);
    }
    let statuses = load(app.sluice.http_addr, 100, 1).await;
    assert_eq!(statuses.get("200"), Some(&100), "{statuses:?}");
    let first = app.counts();
    assert!(first.iter().all(|&c| c > 0), "100 sequential: {first:?}");
    for concurrency in [1, 8] {
        let before = app.counts();
        let statuses = load(app.sluice.http_addr, 2_000, concurrency).await;
        assert_eq!(statuses.get("200"), Some(&2_000), "{statuses:?}");
        let counts = delta(&app.counts(), &before);
        eprintln!("ten identical pods, {concurrency} in flight: {counts:?}");
        assert!(
            counts.iter().all(|&c| (150..=250).contains(&c)),
            "{concurrency} in flight: {counts:?}"
        );
    }
}

/// One pod 10x slower than nine noisy peers gets under 5% of the traffic and no
/// fast pod drops below half its share; once it is fast again, its share comes
/// back within a few decay windows (1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pod_among_noisy_peers_is_avoided_and_returns() {
    let mut delays = [1; 10];
    delays[0] = 20;
    let app = App::start(&delays, &[], "slow-start: 0s\newma-decay: 1s").await;
    for pod in &app.pods[1..] {
        pod.set_jitter(2);
    }
    load(app.sluice.http_addr, 400, 8).await; // learn
    let before = app.counts();
    load(app.sluice.http_addr, 2_000, 8).await;
    let counts = delta(&app.counts(), &before);
    eprintln!("one pod 10x slower: {counts:?}");
    assert!(share(&counts, 0) < 0.05, "{counts:?}");
    assert!(counts[1..].iter().all(|&c| c >= 100), "{counts:?}");

    app.pods[0].set_delay(1);
    app.pods[0].set_jitter(2);
    let back = eventually(Duration::from_secs(20), || async {
        let before = app.counts();
        load(app.sluice.http_addr, 400, 8).await;
        share(&delta(&app.counts(), &before), 0) >= 0.075
    })
    .await;
    eprintln!("recovered after {back:?}");
    assert!(
        back.is_some(),
        "the recovered pod does not get its share back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_pod_is_avoided_without_errors_and_returns() {
    let app = App::start(&[1, 1, 1], &[], "slow-start: 0s").await;
    load(app.sluice.http_addr, 300, 4).await;
    app.pods[1].stop();
    // Clients see no error: a refused connection is retried on another pod.
    let statuses = load(app.sluice.http_addr, 600, 4).await;
    assert_eq!(statuses.get("200"), Some(&600), "{statuses:?}");
    // Its breaker opened after a few failures: the next requests avoid it.
    let before = app.counts();
    load(app.sluice.http_addr, 300, 4).await;
    assert_eq!(delta(&app.counts(), &before)[1], 0);

    // It comes back: a probe after the ejection time closes the breaker.
    app.pods[1].restart().await;
    let back = eventually(Duration::from_secs(8), || async {
        let before = app.pods[1].requests();
        load(app.sluice.http_addr, 40, 4).await;
        app.pods[1].requests() > before
    })
    .await;
    assert!(back.is_some(), "the recovered pod gets no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pod_is_ejected_and_panic_mode_keeps_serving() {
    let rule = "ResponseCodeRatio(500, 600, 0, 600) > 0.5 && RequestThreshold() >= 5";
    let app = App::start(
        &[1, 1, 1],
        &[("sluice.io/circuit-breaker", rule)],
        "slow-start: 0s\nmax-ejection-percent: 100",
    )
    .await;
    app.pods[0].set_status(500);
    load(app.sluice.http_addr, 300, 4).await;
    let before = app.counts();
    let statuses = load(app.sluice.http_addr, 300, 4).await;
    let during = delta(&app.counts(), &before);
    assert!(during[0] <= 3, "the failing pod is ejected: {during:?}");
    // Every answer is a 200 but those of the failing pod's probes (one per
    // ejection time, 1 s, which a slow machine may reach within this load).
    let ok = statuses.get("200").copied().unwrap_or(0);
    assert_eq!(ok + during[0], 300, "{statuses:?} {during:?}");

    // Every pod fails: all are ejected, yet traffic still reaches them (panic
    // mode) and clients get the pods' answers, not a blanket 503 from us.
    for pod in &app.pods {
        pod.set_status(500);
    }
    load(app.sluice.http_addr, 300, 4).await;
    let before = app.counts();
    let statuses = load(app.sluice.http_addr, 200, 4).await;
    assert_eq!(statuses.get("500"), Some(&200), "{statuses:?}");
    assert_eq!(delta(&app.counts(), &before).iter().sum::<usize>(), 200);
}

/// The ramp is time, so this test reads the wall clock; it measures right
/// after the newcomer's first request, at eight in flight, where the newcomer's
/// ramp is still low on a machine several times slower than this one (the exact
/// ramp is `balance::pick`'s deterministic test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pod_is_not_flooded() {
    let app = App::start(&[2, 2], &[], "slow-start: 4s").await;
    load(app.sluice.http_addr, 200, 4).await;
    // Let the two original pods finish their own slow start.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let newcomer = start_upstream_with_delay("new", 2).await;
    let addrs = [app.pods[0].addr, app.pods[1].addr, newcomer.addr];
    app.manifests
        .write("svc.yaml", &service_yaml("app", &addrs));
    let arrived = eventually(Duration::from_secs(4), || async {
        load(app.sluice.http_addr, 24, 8).await;
        newcomer.requests() > 0
    })
    .await;
    assert!(arrived.is_some(), "the new pod gets some traffic");
    let before = (app.counts(), newcomer.requests());
    load(app.sluice.http_addr, 600, 8).await;
    let old: usize = delta(&app.counts(), &before.0).iter().sum();
    let new = newcomer.requests() - before.1;
    let share = new as f64 / (old + new) as f64;
    eprintln!("new pod during slow start: {new} of {}", old + new);
    assert!(share < 0.25, "below its fair third: {share:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_affinity_keeps_keys_and_moves_only_the_removed_ones() {
    let app = App::start(
        &[0, 0, 0],
        &[(
            "nginx.ingress.kubernetes.io/upstream-hash-by",
            "$http_x_user",
        )],
        "",
    )
    .await;
    let http = client();
    let owner = |user: String| {
        let http = http.clone();
        let addr = app.sluice.http_addr;
        async move {
            let request = Request::get(format!("http://{addr}/"))
                .header("host", "app.test")
                .header("x-user", user)
                .body(Full::default())
                .unwrap();
            send(&http, request).await.unwrap().upstream()
        }
    };
    let mut first = BTreeMap::new();
    for i in 0..60 {
        first.insert(i, owner(format!("user-{i}")).await);
    }
    let used: std::collections::BTreeSet<&String> = first.values().collect();
    assert_eq!(used.len(), 3, "keys spread over every pod");
    for i in 0..60 {
        assert_eq!(
            owner(format!("user-{i}")).await,
            first[&i],
            "user-{i} moved"
        );
    }
    // Remove pod-2: only its users move.
    app.manifests.write(
        "svc.yaml",
        &service_yaml("app", &[app.pods[0].addr, app.pods[1].addr]),
    );
    let (moved_user, _) = first.iter().find(|(_, pod)| *pod == "pod-2").unwrap();
    let moved_user = format!("user-{moved_user}");
    let removed = eventually(Duration::from_secs(2), || {
        let user = moved_user.clone();
        async move { owner(user).await != "pod-2" }
    })
    .await;
    assert!(removed.is_some());
    for i in 0..60 {
        let now = owner(format!("user-{i}")).await;
        if first[&i] != "pod-2" {
            assert_eq!(now, first[&i], "user-{i} moved though its pod stayed");
        } else {
            assert_ne!(now, "pod-2");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_everything_fails() {
    let annotations = [
        (
            "nginx.ingress.kubernetes.io/proxy-next-upstream",
            "error timeout http_503",
        ),
        ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "3"),
        // Keep the breakers out of the way: this test is about the budget.
        ("sluice.io/circuit-breaker", "RequestThreshold() < 0"),
    ];
    let app = App::start(
        &[0, 0, 0],
        &annotations,
        "retry-budget-ratio: 0.2\nretry-budget-min-per-second: 1",
    )
    .await;
    for pod in &app.pods {
        pod.set_status(503);
    }
    let n = 300;
    let statuses = load(app.sluice.http_addr, n, 3).await;
    assert_eq!(statuses.get("503"), Some(&n), "{statuses:?}");
    let attempts: usize = app.counts().iter().sum();
    // Without a budget: up to 3 attempts each (900). With it: 20% more, plus
    // the floor (1/s over 10 s).
    eprintln!("{attempts} upstream attempts for {n} requests");
    assert!(attempts > n, "some retries happen");
    assert!(
        attempts <= n + n / 5 + 10 + 1,
        "{attempts} attempts exceed the budget"
    );
}

/// ingress-nginx's default, `error timeout` with 3 tries: a GET whose
/// connection breaks after it went out is sent to the other pods; a POST,
/// which a pod may have acted on, is not.
#[tokio::test]
async fn by_default_an_idempotent_request_is_retried_after_an_error() {
    let app = App::start(
        &[0, 0, 0],
        &[("sluice.io/circuit-breaker", "RequestThreshold() < 0")],
        "",
    )
    .await;
    let http = client();
    let dropped = |method: &str| {
        Request::builder()
            .method(method)
            .uri(format!("http://{}/", app.sluice.http_addr))
            .header("host", "app.test")
            .header("x-fake-drop", "1")
            .body(Full::default())
            .unwrap()
    };
    let reply = send(&http, dropped("GET")).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(app.counts(), [1, 1, 1], "three tries, one per pod");
    let reply = send(&http, dropped("POST")).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(app.counts().iter().sum::<usize>(), 4, "the POST went once");
}

#[tokio::test]
async fn a_503_is_not_retried_by_default() {
    // One pod answers 503: by default that is the answer (no retry), even for GET.
    let app = App::start(&[0, 0], &[("sluice.io/load-balance", "round_robin")], "").await;
    app.pods[0].set_status(503);
    let statuses = load(app.sluice.http_addr, 40, 1).await;
    assert_eq!(statuses.get("503"), Some(&20), "{statuses:?}");
    assert_eq!(
        app.counts().iter().sum::<usize>(),
        40,
        "no request was sent twice"
    );
}

/// `upstream-hash-by` with nginx variables, as ingress-nginx's Lua balancer
/// reads them: `$request_uri` keeps each URI on one pod (a cache-friendly
/// spread), whoever asks.
#[tokio::test]
async fn hash_by_request_uri_keeps_each_uri_on_one_pod() {
    let app = App::start(
        &[0, 0, 0],
        &[(
            "nginx.ingress.kubernetes.io/upstream-hash-by",
            "$request_uri",
        )],
        "",
    )
    .await;
    let http = client();
    let owner = |uri: String, user: &'static str| {
        let http = http.clone();
        let addr = app.sluice.http_addr;
        async move {
            let request = Request::get(format!("http://{addr}{uri}"))
                .header("host", "app.test")
                .header("x-user", user)
                .body(Full::default())
                .unwrap();
            send(&http, request).await.unwrap().upstream()
        }
    };
    let mut first = BTreeMap::new();
    for i in 0..60 {
        first.insert(i, owner(format!("/item/{i}?v=1"), "alice").await);
    }
    let used: std::collections::BTreeSet<&String> = first.values().collect();
    assert_eq!(used.len(), 3, "URIs spread over every pod");
    for i in 0..60 {
        assert_eq!(
            owner(format!("/item/{i}?v=1"), "bob").await,
            first[&i],
            "/item/{i} moved"
        );
    }
}

/// `upstream-hash-by-subset`: a key is served by its own subset of pods
/// (`-size` of them), one at random each time, as ingress-nginx's
/// `chashsubset`.
#[tokio::test]
async fn hash_subset_spreads_a_key_over_its_own_few_pods() {
    let app = App::start(
        &[0, 0, 0, 0],
        &[
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by",
                "$request_uri",
            ),
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by-subset",
                "true",
            ),
            (
                "nginx.ingress.kubernetes.io/upstream-hash-by-subset-size",
                "2",
            ),
        ],
        "",
    )
    .await;
    let http = client();
    let mut all = std::collections::BTreeSet::new();
    for i in 0..8 {
        let mut pods = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let request = Request::get(format!("http://{}/item/{i}", app.sluice.http_addr))
                .header("host", "app.test")
                .body(Full::default())
                .unwrap();
            pods.insert(send(&http, request).await.unwrap().upstream());
        }
        assert_eq!(
            pods.len(),
            2,
            "/item/{i} is served by its two pods: {pods:?}"
        );
        all.extend(pods);
    }
    assert!(all.len() >= 3, "keys use different subsets: {all:?}");
}
