//! SIGTERM on the real binary: /healthz fails first, the listener keeps accepting
//! during the grace period, in-flight requests finish, and the process exits 0.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;

struct Child {
    process: std::process::Child,
    http: SocketAddr,
    admin: SocketAddr,
}

/// Starts the binary and reads the addresses it bound from its log.
fn spawn_sluice(manifests: &std::path::Path, config: &std::path::Path) -> Child {
    let mut process = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--manifests")
        .arg(manifests)
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stderr.take().unwrap()).lines();
    let field = |line: &str, name: &str| -> SocketAddr {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (http, admin) = loop {
        let line = lines.next().expect("sluice exited before serving").unwrap();
        if line.contains("sluice is serving") {
            break (field(&line, "http_addr"), field(&line, "admin_addr"));
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Child {
        process,
        http,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let a = start_upstream("a").await;
    let m = Manifests::new();
    m.write(
        "app.yaml",
        &(service_yaml("a", &[a.addr]) + &ingress_yaml("app", None, &[], &[("/", "Prefix", "a")])),
    );
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "shutdown-grace-period: 1s\ndrain-timeout: 10s\naccess-log: off\n",
    )
    .unwrap();
    let mut child = spawn_sluice(m.path(), config.path());
    let http = client();
    let healthz = || {
        Request::get(format!("http://{}/healthz", child.admin))
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(status_of(&http, healthz()).await, StatusCode::OK);

    // A slow request is in flight when SIGTERM arrives.
    let arrived = a.arrived.notified();
    let slow = {
        let http = http.clone();
        let request = Request::get(format!("http://{}/slow", child.http))
            .header("x-fake-delay-ms", "2500")
            .body(Full::default())
            .unwrap();
        tokio::spawn(async move { send(&http, request).await })
    };
    arrived.await;
    let status = Command::new("kill")
        .args(["-TERM", &child.process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // /healthz fails at once, before anything else changes...
    let unhealthy = until_status(
        &http,
        healthz,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(2),
    )
    .await;
    assert!(unhealthy.is_some(), "/healthz did not turn 503");
    // ...while new connections are still served during the grace period, told to close.
    let during = send(&client(), get(child.http, "x", "/")).await.unwrap();
    assert_eq!(during.status, StatusCode::OK);
    assert_eq!(during.headers["connection"], "close");

    // The in-flight request completes normally, and the process exits cleanly.
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let exit = tokio::task::spawn_blocking(move || child.process.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let m = Manifests::new();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "shutdown-grace-period: 60s\naccess-log: off\n",
    )
    .unwrap();
    let mut child = spawn_sluice(m.path(), config.path());
    let pid = child.process.id().to_string();
    let http = client();
    let healthz = || {
        Request::get(format!("http://{}/healthz", child.admin))
            .body(Full::default())
            .unwrap()
    };
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    // Wait until the first signal was handled (draining), then send the second.
    let draining = until_status(
        &http,
        healthz,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(2),
    )
    .await;
    assert!(draining.is_some());
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let exited = eventually(Duration::from_secs(5), || {
        let status = child.process.try_wait().unwrap();
        async move { status.is_some() }
    })
    .await;
    if exited.is_none() {
        let _ = child.process.kill();
        panic!("still running after a second signal");
    }
    let status = child.process.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a forced exit is not a clean one");
}
