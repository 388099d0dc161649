//! The manifests change many times while a client loop keeps sending requests:
//! no request may fail, and new routes must be served within a second.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_nothing() {
    let (a, b) = (start_upstream("a").await, start_upstream("b").await);
    let endpoint_sets = [vec![a.addr], vec![b.addr], vec![a.addr, b.addr]];
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("app", &endpoint_sets[0]));
    m.write(
        "app.yaml",
        &ingress_yaml("app", Some("load.test"), &[], &[("/", "Prefix", "app")]),
    );
    let sluice = start_sluice(m.path(), "").await;
    let addr = sluice.http_addr;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                match send(&http, get(addr, "load.test", "/")).await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", reply.status, reply.text()))
                    }
                    Err(error) => failures.lock().unwrap().push(error),
                }
            }
        }));
    }

    let http = client();
    let mut slowest = Duration::ZERO;
    for i in 0..15 {
        // Move the app between pods, and add a new host each round.
        m.write("svc.yaml", &service_yaml("app", &endpoint_sets[i % 3]));
        let host = format!("new-{i}.test");
        m.write(
            &format!("new-{i}.yaml"),
            &ingress_yaml(
                &format!("new-{i}"),
                Some(&host),
                &[],
                &[("/", "Prefix", "app")],
            ),
        );
        let took = until_status(
            &http,
            || get(addr, &host, "/"),
            StatusCode::OK,
            Duration::from_secs(1),
        )
        .await;
        let took = took.unwrap_or_else(|| panic!("{host} not served within 1s of the file change"));
        slowest = slowest.max(took);
        if i % 5 == 4 {
            // Deletions are picked up too.
            m.remove(&format!("new-{}.yaml", i - 1));
            let gone_host = format!("new-{}.test", i - 1);
            let gone = until_status(
                &http,
                || get(addr, &gone_host, "/"),
                StatusCode::NOT_FOUND,
                Duration::from_secs(1),
            )
            .await;
            assert!(
                gone.is_some(),
                "{gone_host} still served after its file was deleted"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("{ok} requests during 15+ swaps; slowest route visibility {slowest:?}");
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests went through");
    assert!(a.requests.load(Ordering::Relaxed) > 0 && b.requests.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_broken_file_keeps_its_last_good_version() {
    let (_a, m) = app_on_one_pod().await;
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    assert_eq!(
        status_of(&http, get(sluice.http_addr, "app.test", "/")).await,
        StatusCode::OK
    );

    // Not YAML at all: the file's last good objects keep serving...
    m.write("app.yaml", "kind: Ingress\nmetadata: {name: [broken\n");
    // ...while other files still change normally.
    m.write(
        "other.yaml",
        &ingress_yaml("other", Some("other.test"), &[], &[("/", "Prefix", "a")]),
    );
    let served = until_status(
        &http,
        || get(sluice.http_addr, "other.test", "/"),
        StatusCode::OK,
        Duration::from_secs(2),
    )
    .await;
    assert!(served.is_some());
    assert_eq!(
        status_of(&http, get(sluice.http_addr, "app.test", "/")).await,
        StatusCode::OK
    );

    // A valid Ingress edited into an invalid one keeps serving its last valid
    // version; a new Ingress in the same file serves as usual.
    let mut mixed = invalid_ingress_yaml("app", "app.test", "a");
    mixed += &ingress_yaml("fine", Some("fine.test"), &[], &[("/", "Prefix", "a")]);
    m.write("app.yaml", &mixed);
    let fine = until_status(
        &http,
        || get(sluice.http_addr, "fine.test", "/"),
        StatusCode::OK,
        Duration::from_secs(2),
    )
    .await;
    assert!(fine.is_some());
    let app = send(&http, get(sluice.http_addr, "app.test", "/"))
        .await
        .unwrap();
    assert_eq!(
        app.status,
        StatusCode::OK,
        "the last valid version of app serves"
    );
    // A broken Ingress never seen valid is skipped.
    m.write("new.yaml", &invalid_ingress_yaml("new", "new.test", "a"));
    m.write(
        "marker.yaml",
        &ingress_yaml("marker", Some("marker.test"), &[], &[("/", "Prefix", "a")]),
    );
    let marker = until_status(
        &http,
        || get(sluice.http_addr, "marker.test", "/"),
        StatusCode::OK,
        Duration::from_secs(2),
    )
    .await;
    assert!(marker.is_some());
    let new = send(&http, get(sluice.http_addr, "new.test", "/"))
        .await
        .unwrap();
    assert_eq!(new.status, StatusCode::NOT_FOUND);
    assert!(sluice.lifecycle().is_healthy());
}

#[tokio::test]
async fn config_file_reloads_and_an_invalid_one_keeps_the_last_good() {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("a", &[a.addr]) + &ingress_yaml("app", None, &[], &[("/", "Prefix", "a")])),
    );
    // The config file lives next to the manifests, under a name they ignore.
    m.write("config.conf", "proxy-body-size: 1k\n");
    let config_file = m.path().join("config.conf");
    let sluice = start_sluice_with_config_file(m.path(), &config_file).await;
    let http = client();
    let post = || {
        Request::post(format!("http://{}/", sluice.http_addr))
            .body(Full::new(Bytes::from(vec![b'x'; 2048])))
            .unwrap()
    };
    assert_eq!(
        status_of(&http, post()).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    m.write("config.conf", "proxy-body-size: 8k\n");
    let reloaded = until_status(&http, post, StatusCode::OK, Duration::from_secs(5)).await;
    assert!(reloaded.is_some(), "the new body limit was not applied");

    // Invalid (an unknown key): the last good config stays. The signal that the
    // file was read and refused is the reload counter.
    let invalid_reloads = || async {
        let text = admin_text(&sluice, "/metrics").await;
        text.lines()
            .find(|l| l.starts_with("sluice_config_file_reloads_total{result=\"invalid\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = invalid_reloads().await;
    m.write("config.conf", "proxy-body-size: 1k\nproxy-bodysize: 1k\n");
    let refused = eventually(Duration::from_secs(5), || async {
        invalid_reloads().await > before
    })
    .await;
    assert!(refused.is_some(), "the invalid file was not read");
    assert_eq!(status_of(&http, post()).await, StatusCode::OK);
}

/// A reload applies every key it can at once, keeps the restart-only ones as
/// they run, and says which those are (`/api/config`).
#[tokio::test]
async fn a_reload_keeps_restart_only_keys_and_says_so() {
    let (_a, m) = app_on_one_pod().await;
    m.write(
        "config.conf",
        "keep-alive: 75s\nlimit-rejected-status: 429\n",
    );
    let config_file = m.path().join("config.conf");
    let sluice = start_sluice_with_config_file(m.path(), &config_file).await;
    let config = || admin_json(&sluice, "/api/config");
    let started = config().await;
    assert_eq!(started["running"]["keep-alive"], "75000ms");
    assert_eq!(started["restart_needed"], serde_json::json!([]));

    m.write(
        "config.conf",
        "keep-alive: 5s\nlimit-rejected-status: 503\n",
    );
    let reloaded = eventually(Duration::from_secs(5), || async {
        config().await["file"]["keep-alive"] == "5000ms"
    })
    .await;
    assert!(reloaded.is_some(), "the new file was not read");
    let state = config().await;
    assert_eq!(state["running"]["keep-alive"], "75000ms", "restart-only");
    assert_eq!(state["running"]["limit-rejected-status"], 503, "applied");
    assert_eq!(state["restart_needed"], serde_json::json!(["keep-alive"]));
    assert!(state["running"].get("admin-token").is_none());
}

/// Table builds run below the data plane's CPU priority (nice 10), so a storm of
/// changes on a busy node delays tables rather than requests. Read from
/// `/proc` (other tests in this process may have lowered threads too: any
/// lowered thread is a table builder's).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn table_builds_run_at_a_lower_priority() {
    let nice_values = || -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
            // After the command name in parentheses: state is field 3, nice field 19.
            .filter_map(|stat| {
                stat.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(16)?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let (_a, m) = app_on_one_pod().await;
    let sluice = start_sluice(m.path(), "").await;
    assert_eq!(
        status_of(&client(), get(sluice.http_addr, "app.test", "/")).await,
        StatusCode::OK
    );
    let values = nice_values();
    assert!(values.contains(&10), "no thread at nice 10: {values:?}");
    // The data plane's threads keep the process's priority.
    assert!(values.contains(&0), "{values:?}");
}

/// `app.test` routed to one upstream pod, `a`; the pod lives as long as its handle.
async fn app_on_one_pod() -> (Upstream, Manifests) {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service_yaml("a", &[a.addr]));
    m.write(
        "app.yaml",
        &ingress_yaml("app", Some("app.test"), &[], &[("/", "Prefix", "a")]),
    );
    (a, m)
}
