//! Cookie session affinity (`affinity: cookie`), through the door: the
//! cookie sluice issues, a user kept on one pod, a failed pod moving only its
//! own users, persistent mode through a scale-up, and curl's cookie jar.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

fn with_cookie(
    sluice: &sluice::server::Server,
    cookie: Option<&str>,
) -> Request<Full<bytes::Bytes>> {
    let mut request = get(sluice.http_addr, "shop.example", "/cart");
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", format!("other=1; {cookie}").parse().unwrap());
    }
    request
}

/// (pod, the `name=value` of a Set-Cookie, if any).
async fn visit(
    http: &HttpClient,
    sluice: &sluice::server::Server,
    cookie: Option<&str>,
) -> (String, Option<String>, String) {
    let reply = send(http, with_cookie(sluice, cookie)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let set = reply
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let pair = set
        .as_ref()
        .map(|s| s.split(';').next().unwrap().to_owned());
    (reply.upstream(), pair, set.unwrap_or_default())
}

fn yaml(pods: &[&Upstream], annotations: &[(&str, &str)]) -> String {
    let annotations: Vec<(String, String)> = annotations
        .iter()
        .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
        .collect();
    let annotations: Vec<(&str, &str)> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let addrs: Vec<_> = pods.iter().map(|p| p.addr).collect();
    service_yaml("shop", &addrs)
        + &ingress_yaml(
            "shop",
            Some("shop.example"),
            &annotations,
            &[("/cart", "Prefix", "shop")],
        )
}

/// Users (one cookie each) until every pod has at least two; by pod.
async fn users_on_every_pod(
    http: &HttpClient,
    sluice: &sluice::server::Server,
    pods: usize,
) -> BTreeMap<String, Vec<String>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..300 {
        let (pod, cookie, _) = visit(http, sluice, None).await;
        users
            .entry(pod)
            .or_default()
            .push(cookie.expect("a new user gets a cookie"));
        if users.len() == pods && users.values().all(|u| u.len() >= 2) {
            break;
        }
    }
    assert_eq!(
        users.len(),
        pods,
        "new users are spread over the pods: {users:?}"
    );
    users
}

#[tokio::test]
async fn a_user_stays_on_one_pod_and_a_failed_pod_moves_only_its_users() {
    let pods = [
        start_upstream("a").await,
        start_upstream("b").await,
        start_upstream("c").await,
    ];
    let manifests = Manifests::new();
    manifests.write(
        "shop.yaml",
        &yaml(&pods.iter().collect::<Vec<_>>(), &[("affinity", "cookie")]),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();

    // The cookie: ingress-nginx's name and attributes (the rule's path, HttpOnly).
    let (_, _, first) = visit(&http, &sluice, None).await;
    assert!(first.starts_with("INGRESSCOOKIE="), "{first}");
    assert!(first.ends_with("; Path=/cart; HttpOnly"), "{first}");

    let users = users_on_every_pod(&http, &sluice, 3).await;
    for (pod, cookies) in &users {
        for cookie in cookies {
            for _ in 0..3 {
                let (seen, set, _) = visit(&http, &sluice, Some(cookie)).await;
                assert_eq!(&seen, pod, "a returning user stays on its pod");
                assert_eq!(set, None, "and its cookie is not rewritten");
            }
        }
    }

    // Pod b goes away: its users move; nobody else does.
    pods[1].stop();
    for (pod, cookies) in &users {
        for cookie in cookies {
            let (seen, _, _) = visit(&http, &sluice, Some(cookie)).await;
            if pod == "b" {
                assert_ne!(seen, "b");
            } else {
                assert_eq!(&seen, pod, "a user of a healthy pod stays");
            }
        }
    }
}

/// `affinity-mode: persistent`: a new pod takes no existing user; with
/// `session-cookie-change-on-failure`, a user whose pod failed is written
/// a cookie for the pod that answered.
#[tokio::test]
async fn persistent_users_stay_through_a_scale_up_and_move_on_failure() {
    let a = start_upstream("a").await;
    let b = start_upstream("b").await;
    let annotations = [
        ("affinity", "cookie"),
        ("affinity-mode", "persistent"),
        ("session-cookie-change-on-failure", "true"),
        ("session-cookie-name", "route"),
        ("session-cookie-max-age", "3600"),
        ("session-cookie-samesite", "Strict"),
    ];
    let manifests = Manifests::new();
    manifests.write("shop.yaml", &yaml(&[&a, &b], &annotations));
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    let (_, _, first) = visit(&http, &sluice, None).await;
    assert!(first.starts_with("route="), "{first}");
    assert!(
        first.contains("; Max-Age=3600; HttpOnly; SameSite=Strict"),
        "{first}"
    );
    let users = users_on_every_pod(&http, &sluice, 2).await;

    // Scale up: pods c and d join (a new table generation serves them).
    let c = start_upstream("c").await;
    let d = start_upstream("d").await;
    manifests.write("shop.yaml", &yaml(&[&a, &b, &c, &d], &annotations));
    // Until the new generation is served (a generous bound, not a wait).
    let mut served = BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(served.contains("c") && served.contains("d")) && std::time::Instant::now() < deadline {
        served.insert(visit(&http, &sluice, None).await.0);
    }
    assert!(
        served.contains("c") && served.contains("d"),
        "the new pods serve new users: {served:?}"
    );
    for (pod, cookies) in &users {
        for cookie in cookies {
            assert_eq!(&visit(&http, &sluice, Some(cookie)).await.0, pod);
        }
    }

    // Pod a fails: its users are answered elsewhere and told where.
    a.stop();
    for cookie in &users["a"] {
        let (seen, set, _) = visit(&http, &sluice, Some(cookie)).await;
        assert_ne!(seen, "a");
        let moved = set.expect("the cookie follows the pod that answered");
        for _ in 0..3 {
            assert_eq!(visit(&http, &sluice, Some(&moved)).await.0, seen);
        }
    }
}

/// A cookie for another backend (another route, or a tenant's forgery)
/// chooses nothing: the user is treated as new.
#[tokio::test]
async fn a_cookie_of_another_backend_is_ignored() {
    let a = start_upstream("a").await;
    let manifests = Manifests::new();
    manifests.write("shop.yaml", &yaml(&[&a], &[("affinity", "cookie")]));
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();
    let forged = "INGRESSCOOKIE=0000000000000001|00000000000000aa";
    let (seen, set, _) = visit(&http, &sluice, Some(forged)).await;
    assert_eq!(seen, "a");
    assert!(set.is_some(), "a new cookie replaces the foreign one");
}

/// curl with a cookie jar, as a browser keeps cookies: it sends back what
/// sluice set, and stays on its pod.
#[tokio::test]
async fn curl_with_a_cookie_jar_stays_on_its_pod() {
    let pods = [
        start_upstream("a").await,
        start_upstream("b").await,
        start_upstream("c").await,
    ];
    let manifests = Manifests::new();
    manifests.write(
        "shop.yaml",
        &yaml(&pods.iter().collect::<Vec<_>>(), &[("affinity", "cookie")]),
    );
    let sluice = start_sluice(manifests.path(), "").await;
    let jar = tempfile::tempdir().unwrap();
    let jar = jar.path().join("cookies.txt");
    let url = "http://shop.example/cart/items";
    let to = format!("shop.example:80:{}", sluice.http_addr);
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "--connect-to", &to, "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .arg(url)
            .output()
            .await
            .expect("curl is installed by scripts/test");
        let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        seen.insert(body["upstream"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 1, "one pod for one cookie jar: {seen:?}");
    let jar = std::fs::read_to_string(&jar).unwrap();
    assert!(
        jar.contains("#HttpOnly_shop.example\tFALSE\t/cart\tFALSE\t0\tINGRESSCOOKIE\t"),
        "{jar}"
    );
}

/// `affinity-canary-behavior: sticky` (ingress-nginx's default): a user
/// whose cookie names the canary stays on it when the canary's weight drops
/// to 0, and one whose cookie names the main backend stays there at weight
/// 100; `legacy` lets the canary's rules decide.
#[tokio::test]
async fn affinity_keeps_a_user_on_the_canary_or_the_main_backend() {
    let (stable, canary) = (
        start_upstream("stable").await,
        start_upstream("canary").await,
    );
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &(service_yaml("stable", &[stable.addr]) + &service_yaml("canary", &[canary.addr])),
    );
    let main = |behavior: &str| {
        ingress_yaml(
            "app",
            Some("shop.example"),
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                (
                    "nginx.ingress.kubernetes.io/affinity-canary-behavior",
                    behavior,
                ),
            ],
            &[("/", "Prefix", "stable")],
        )
    };
    let weight = |w: &str| {
        ingress_yaml(
            "app-canary",
            Some("shop.example"),
            &[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-weight", w),
            ],
            &[("/", "Prefix", "canary")],
        )
    };
    m.write("main.yaml", &main("sticky"));
    m.write("canary.yaml", &weight("100"));
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    let request = |cookie: Option<&str>| {
        let mut request = get(sluice.http_addr, "shop.example", "/");
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
        }
        request
    };
    let landing = |cookie: Option<String>| {
        let reply = send(&http, request(cookie.as_deref()));
        async move {
            let reply = reply.await.unwrap();
            let set = reply
                .headers
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
            (reply.upstream(), set)
        }
    };
    let (side, on_canary) = landing(None).await;
    assert_eq!(side, "canary");
    let on_canary = on_canary.expect("a new user gets a cookie");

    // Weight 0: new users go to the main backend, the canary's user stays.
    m.write("canary.yaml", &weight("0"));
    let swapped = eventually(std::time::Duration::from_secs(10), || async {
        landing(None).await.0 == "stable"
    })
    .await;
    assert!(swapped.is_some());
    let (_, on_stable) = landing(None).await;
    let on_stable = on_stable.expect("a new user gets a cookie");
    for _ in 0..5 {
        assert_eq!(landing(Some(on_canary.clone())).await.0, "canary");
    }

    // Weight 100: the main backend's user stays there.
    m.write("canary.yaml", &weight("100"));
    let swapped = eventually(std::time::Duration::from_secs(10), || async {
        landing(None).await.0 == "canary"
    })
    .await;
    assert!(swapped.is_some());
    for _ in 0..5 {
        assert_eq!(landing(Some(on_stable.clone())).await.0, "stable");
    }

    // `legacy`: the weight decides, whatever the cookie says.
    m.write("main.yaml", &main("legacy"));
    let moved = eventually(std::time::Duration::from_secs(10), || async {
        landing(Some(on_stable.clone())).await.0 == "canary"
    })
    .await;
    assert!(moved.is_some(), "legacy ignores the cookie");
}
