//! Test support: a fake upstream that echoes what it received, a manifests
//! directory builder, an in-process sluice and a small HTTP client.

pub mod apiserver;
pub mod pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use sluice::config::Config;
use sluice::server::{Options, Server, Source};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A fake pod. Every response is JSON describing the request it got. Request
/// headers steer it: `x-fake-delay-ms`, `x-fake-status`, `x-fake-drop` (close the
/// connection without answering), `x-fake-body-bytes` (size of a filler body).
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Notified each time a request arrives (before any delay).
    pub arrived: Arc<Notify>,
    /// Added to every answer, in ms.
    pub delay_ms: Arc<AtomicU64>,
    /// Up to this many ms more, at random, per answer.
    pub jitter_ms: Arc<AtomicU64>,
    /// When not 0, every answer has this status.
    pub status: Arc<AtomicU16>,
    /// What each request was, as its answer describes it, in order.
    pub seen: Arc<std::sync::Mutex<Vec<Value>>>,
    /// The accept loop and every connection, to stop them all.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// A pod that speaks TLS (`start_tls_upstream`).
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Upstream {
    /// Stops listening and cuts every connection: connecting is refused.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same address after `stop`.
    pub async fn restart(&self) {
        let listener = loop {
            // The old socket goes away with its aborted task, a moment later.
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        serve_upstream(listener, self.clone());
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_jitter(&self, ms: u64) {
        self.jitter_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

pub async fn start_upstream(name: &str) -> Upstream {
    start_upstream_at(name, "127.0.0.1:0").await
}

/// A fake pod that speaks TLS with this server config (HTTP/1.1 and h2 by
/// ALPN, unless the config names its protocols).
pub async fn start_tls_upstream(name: &str, config: rustls::ServerConfig) -> Upstream {
    let mut config = config;
    if config.alpn_protocols.is_empty() {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    start_upstream_on_listener(name, "127.0.0.1:0", Some(acceptor)).await
}

async fn start_upstream_at(name: &str, addr: &str) -> Upstream {
    start_upstream_on_listener(name, addr, None).await
}

async fn start_upstream_on_listener(
    name: &str,
    addr: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Upstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let upstream = Upstream {
        name: name.to_owned(),
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        requests: Arc::default(),
        arrived: Arc::default(),
        delay_ms: Arc::default(),
        jitter_ms: Arc::default(),
        status: Arc::default(),
        seen: Arc::default(),
        tasks: Arc::default(),
        tls,
    };
    serve_upstream(listener, upstream.clone());
    upstream
}

/// A fake pod with a fixed latency, e.g. 5 ms.
pub async fn start_upstream_with_delay(name: &str, delay_ms: u64) -> Upstream {
    let upstream = start_upstream(name).await;
    upstream.set_delay(delay_ms);
    upstream
}

fn serve_upstream(listener: TcpListener, state: Upstream) {
    let tasks = state.tasks.clone();
    let accept = tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let conn_state = state.clone();
            let builder = builder.clone();
            let tls = state.tls.clone();
            let conn = tokio::spawn(async move {
                let service = service_fn(move |req| echo(req, conn_state.clone()));
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        // A failed handshake (a client certificate missing) just ends.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                }
            });
            state.tasks.lock().unwrap().push(conn);
        }
    });
    tasks.lock().unwrap().push(accept);
}

async fn echo(
    request: Request<Incoming>,
    state: Upstream,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.arrived.notify_waiters();
    let number =
        |name: &str| -> Option<u64> { request.headers().get(name)?.to_str().ok()?.parse().ok() };
    let jitter = state.jitter_ms.load(Ordering::SeqCst);
    // `?delay=1s` or `?delay=500ms`, as the Gateway API conformance echo
    // server reads it.
    let query_delay = request.uri().query().and_then(|q| {
        let value = q.split('&').find_map(|kv| kv.strip_prefix("delay="))?;
        match value.strip_suffix("ms") {
            Some(ms) => ms.parse().ok(),
            None => value
                .strip_suffix('s')?
                .parse::<u64>()
                .ok()
                .map(|s| s * 1000),
        }
    });
    let delay = number("x-fake-delay-ms")
        .or(query_delay)
        .unwrap_or(state.delay_ms.load(Ordering::SeqCst))
        + if jitter > 0 {
            fastrand::u64(..=jitter)
        } else {
            0
        };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if request.headers().contains_key("x-fake-drop") {
        return Err(std::io::Error::other("dropping the connection as asked"));
    }
    let forced = state.status.load(Ordering::SeqCst);
    let status = if forced != 0 {
        forced
    } else {
        number("x-fake-status").unwrap_or(200) as u16
    };
    let filler = number("x-fake-body-bytes");
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: BTreeMap<String, Vec<String>> = parts
        .headers
        .keys()
        .map(|k| {
            let values = parts
                .headers
                .get_all(k)
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .collect();
            (k.as_str().to_owned(), values)
        })
        .collect();
    let mut echo = serde_json::json!({
        "upstream": state.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body.len(),
    });
    state.seen.lock().unwrap().push(echo.clone());
    state.arrived.notify_waiters();
    if let Some(n) = filler {
        echo["filler"] = Value::String("x".repeat(n as usize));
    }
    let mut response = Response::new(Full::new(Bytes::from(echo.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    // Response headers the test asks for: `x-fake-location`, `-refresh`,
    // `-set-cookie`, `-server`.
    for (asked, name) in [
        ("x-fake-location", "location"),
        ("x-fake-refresh", "refresh"),
        ("x-fake-set-cookie", "set-cookie"),
        ("x-fake-server", "server"),
    ] {
        if let Some(value) = headers.get(asked).and_then(|v| v.first()) {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
    }
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
        .headers_mut()
        .insert("connection", "keep-alive, x-upstream-hop".parse().unwrap());
    response
        .headers_mut()
        .insert("x-upstream-hop", "secret".parse().unwrap());
    Ok(response)
}

/// A manifests directory in a temp dir; files are written atomically.
pub struct Manifests {
    dir: tempfile::TempDir,
}

impl Manifests {
    /// Starts with the default `sluice` IngressClass, as a cluster would have.
    pub fn new() -> Manifests {
        let manifests = Manifests {
            dir: tempfile::tempdir().unwrap(),
        };
        manifests.write("ingressclass.yaml", INGRESS_CLASS);
        manifests
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(file)).unwrap();
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join(file)).unwrap();
    }
}

pub const INGRESS_CLASS: &str = r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: sluice
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: sluice.io/ingress-controller}
"#;

/// A Service (port 80, named `http`) with one EndpointSlice per address.
pub fn service_yaml(name: &str, addrs: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    );
    for (i, addr) in addrs.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
            addr.port(),
            addr.ip()
        );
    }
    yaml
}

/// An Ingress with one rule. `paths`: (path, pathType, service).
pub fn ingress_yaml(
    name: &str,
    host: Option<&str>,
    annotations: &[(&str, &str)],
    paths: &[(&str, &str, &str)],
) -> String {
    let mut yaml = format!("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n");
    if !annotations.is_empty() {
        yaml += "  annotations:\n";
        for (k, v) in annotations {
            yaml += &format!("    {k}: \"{v}\"\n");
        }
    }
    yaml += "spec:\n  rules:\n";
    yaml += &match host {
        Some(h) => format!("  - host: \"{h}\"\n"),
        None => "  - host: \"\"\n".to_owned(),
    };
    yaml += "    http:\n      paths:\n";
    for (path, kind, service) in paths {
        yaml += &format!(
            "      - path: {path}\n        pathType: {kind}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
        );
    }
    yaml
}

/// An Ingress sluice must reject (an invalid `proxy-read-timeout`), with one
/// Prefix `/` rule to `service`.
pub fn invalid_ingress_yaml(name: &str, host: &str, service: &str) -> String {
    ingress_yaml(
        name,
        Some(host),
        &[("sluice.io/proxy-read-timeout", "never")],
        &[("/", "Prefix", service)],
    )
}

/// What tonic's health service says of `service`, asked over `channel`.
pub async fn health_of(
    channel: tonic::transport::Channel,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    client.check(request).await.unwrap().get_ref().status()
}

/// The `sluice` GatewayClass (sluice's controller), and a Gateway
/// `namespace/name` of it with `listeners` (each a flow mapping).
pub fn gateway_yaml(namespace: &str, name: &str, listeners: &[&str]) -> String {
    let listeners: String = listeners.iter().map(|l| format!("  - {l}\n")).collect();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sluice}}\nspec: {{controllerName: sluice.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  gatewayClassName: sluice\n  listeners:\n{listeners}"
    )
}

/// Starts sluice in-process on loopback ports; `config` is extra config-file YAML.
pub async fn start_sluice(manifests: &Path, config: &str) -> Server {
    Server::start(sluice_options(manifests, config))
        .await
        .unwrap()
}

/// What `start_sluice` starts, for a test to add to.
pub fn sluice_options(manifests: &Path, config: &str) -> Options {
    let quiet = !config.contains("access-log:");
    let mut config = Config::from_yaml(config).unwrap();
    if quiet {
        config.access_log = "off".into();
    }
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.https_addr = "127.0.0.1:0".parse().unwrap();
    Options {
        config,
        config_source: None,
        source: Source::Manifests(manifests.to_owned()),
        class: Default::default(),
        webhook: None,
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Which fake upstream answered.
    pub fn upstream(&self) -> String {
        self.json()["upstream"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Result<Reply, String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub fn get(addr: SocketAddr, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap()
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns the time taken.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// One fake upstream `a` behind a catch-all Ingress `app` with `annotations`,
/// served by an in-process sluice with extra `config`.
pub struct OneApp {
    pub upstream: Upstream,
    /// Held so the directory lives as long as the app.
    pub _manifests: Manifests,
    pub sluice: Server,
}

pub async fn one_app(config: &str, annotations: &[(&str, &str)]) -> OneApp {
    let upstream = start_upstream("a").await;
    let manifests = Manifests::new();
    let yaml = service_yaml("a", &[upstream.addr])
        + &ingress_yaml("app", None, annotations, &[("/", "Prefix", "a")]);
    manifests.write("app.yaml", &yaml);
    let sluice = start_sluice(manifests.path(), config).await;
    OneApp {
        upstream,
        _manifests: manifests,
        sluice,
    }
}

/// Sends `make()` every 20 ms until the answer has status `want`, for at most
/// `limit`; returns how long that took.
pub async fn until_status(
    http: &HttpClient,
    make: impl Fn() -> Request<Full<Bytes>>,
    want: StatusCode,
    limit: Duration,
) -> Option<Duration> {
    eventually(limit, || {
        let reply = send(http, make());
        async move { reply.await.is_ok_and(|r| r.status == want) }
    })
    .await
}

/// Starts sluice in-process against a (fake) apiserver.
pub async fn start_sluice_kube(
    kubeconfig: &Path,
    options: sluice::discovery::kube::KubeOptions,
) -> Server {
    start_sluice_kube_with(kubeconfig, options, "").await
}

/// The same, with extra config-file YAML.
pub async fn start_sluice_kube_with(
    kubeconfig: &Path,
    options: sluice::discovery::kube::KubeOptions,
    config: &str,
) -> Server {
    let config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        https_addr: "127.0.0.1:0".parse().unwrap(),
        access_log: "off".into(),
        // The fake pods listen on loopback, which a cluster's pods never do.
        upstream_allow_cidrs: "127.0.0.0/8".parse().unwrap(),
        ..Config::from_yaml(config).unwrap()
    };
    let options = sluice::discovery::kube::KubeOptions {
        kubeconfig: Some(kubeconfig.to_owned()),
        debounce: sluice::discovery::kube::DEFAULT_DEBOUNCE,
        ..options
    };
    Server::start(Options {
        config,
        config_source: None,
        source: Source::Kubernetes(Box::new(options)),
        class: Default::default(),
        webhook: None,
    })
    .await
    .unwrap()
}

/// Starts a fake upstream on a given loopback address (127.0.0.x), port chosen.
pub async fn start_upstream_on(name: &str, ip: &str) -> Upstream {
    start_upstream_at(name, &format!("{ip}:0")).await
}

/// Starts sluice in-process with a config file that is watched for changes.
pub async fn start_sluice_with_config_file(manifests: &Path, config_file: &Path) -> Server {
    let config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        https_addr: "127.0.0.1:0".parse().unwrap(),
        access_log: "off".into(),
        ..Config::from_file(config_file).unwrap()
    };
    Server::start(Options {
        config,
        config_source: Some(sluice::reload::ConfigSource::File(config_file.to_owned())),
        source: Source::Manifests(manifests.to_owned()),
        class: Default::default(),
        webhook: None,
    })
    .await
    .unwrap()
}

/// A real gRPC server (tonic's health service) on loopback, reporting `shop.Cart`
/// as serving; the reporter changes what it reports.
pub async fn start_grpc_health() -> (tonic_health::server::HealthReporter, SocketAddr) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (reporter, addr)
}

/// The status of a request's answer.
pub async fn status_of(http: &HttpClient, request: Request<Full<Bytes>>) -> StatusCode {
    send(http, request).await.unwrap().status
}

/// A WebSocket server (tokio-tungstenite) on loopback that echoes each message.
pub async fn start_websocket_echo() -> SocketAddr {
    start_websocket_echo_on(None).await
}

/// The same, speaking TLS with this configuration (offering `h2` and
/// `http/1.1`, as Go's and Node's servers do).
pub async fn start_websocket_echo_tls(mut config: rustls::ServerConfig) -> SocketAddr {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    start_websocket_echo_on(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
}

async fn start_websocket_echo_on(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() || ws.send(message).await.is_err() {
                break;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => echo(stream).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            echo(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Runs the test `name` (its path in this binary, `metrics::...`) alone in a
/// fresh process of this test binary, for assertions about the process-wide
/// metrics that other tests' instances would disturb. Returns true in that
/// process, where the test's body then runs; false in the calling one, once
/// the child has passed.
pub fn alone_in_process(name: &str) -> bool {
    const ALONE: &str = "SLUICE_TEST_ALONE";
    if std::env::var(ALONE).is_ok_and(|running| running == name) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

/// The admin API's answer at `path`, as text.
pub async fn admin_text(sluice: &Server, path: &str) -> String {
    let request = Request::get(format!("http://{}{path}", sluice.admin_addr))
        .body(Full::default())
        .unwrap();
    send(&client(), request).await.unwrap().text()
}

/// The admin API's answer at `path`, as JSON.
pub async fn admin_json(sluice: &Server, path: &str) -> Value {
    serde_json::from_str(&admin_text(sluice, path).await).unwrap()
}
