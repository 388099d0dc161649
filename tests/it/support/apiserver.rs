//! A small in-test Kubernetes apiserver: list and watch (newline-delimited JSON)
//! for the kinds sluice watches, plus the writes sluice makes (Ingress status,
//! Events, Leases), recorded for assertions. The real kube `Client` talks to it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

type Body = BoxBody<Bytes, Infallible>;

/// (resource plural, namespace, name); namespace is "" for cluster-scoped kinds.
type Key = (String, String, String);

#[derive(Clone, Debug)]
enum Broadcast {
    Event {
        resource: String,
        namespace: String,
        event: Value,
    },
    /// Every open watch gets a 410 Gone and must re-list.
    Expire,
    /// Every open watch connection is cut.
    Drop,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches asking for an older resourceVersion get 410 Gone.
    oldest: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<(u64, String, String, Value)>,
    writes: Vec<Write>,
    /// Resources whose list answers 500.
    failing: Vec<String>,
    lists: Vec<String>,
    /// The field selector of every list, by resource.
    list_selectors: Vec<(String, String)>,
    /// Whether the Gateway API CRDs are installed (discovery answers).
    gateway_api: bool,
}

/// A write sluice made: method, path and body.
#[derive(Clone, Debug)]
pub struct Write {
    /// Shown when an assertion about writes fails.
    #[allow(dead_code)]
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Clone)]
pub struct FakeApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Broadcast>,
    accept: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "ingresses" => ("networking.k8s.io/v1", "Ingress"),
        "ingressclasses" => ("networking.k8s.io/v1", "IngressClass"),
        "services" => ("v1", "Service"),
        "secrets" => ("v1", "Secret"),
        "configmaps" => ("v1", "ConfigMap"),
        "namespaces" => ("v1", "Namespace"),
        "endpointslices" => ("discovery.k8s.io/v1", "EndpointSlice"),
        "leases" => ("coordination.k8s.io/v1", "Lease"),
        "events" => ("events.k8s.io/v1", "Event"),
        "gatewayclasses" => ("gateway.networking.k8s.io/v1", "GatewayClass"),
        "gateways" => ("gateway.networking.k8s.io/v1", "Gateway"),
        "httproutes" => ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        "grpcroutes" => ("gateway.networking.k8s.io/v1", "GRPCRoute"),
        "referencegrants" => ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
        "validatingwebhookconfigurations" => (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        _ => ("v1", "Unknown"),
    }
}

fn resource_of(kind: &str) -> &'static str {
    match kind {
        "Ingress" => "ingresses",
        "IngressClass" => "ingressclasses",
        "Service" => "services",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Namespace" => "namespaces",
        "EndpointSlice" => "endpointslices",
        "Lease" => "leases",
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        "ReferenceGrant" => "referencegrants",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        other => panic!("the fake apiserver does not know {other}"),
    }
}

fn cluster_scoped(resource: &str) -> bool {
    matches!(
        resource,
        "ingressclasses" | "namespaces" | "gatewayclasses" | "validatingwebhookconfigurations"
    )
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (events, _) = broadcast::channel(1024);
        let server = FakeApiServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            events,
            accept: Arc::default(),
        };
        let this = server.clone();
        let accept = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let this = this.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *server.accept.lock().unwrap() = Some(accept);
        server
    }

    /// Goes away: stops accepting and cuts every watch.
    pub fn stop(&self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
        self.drop_watches();
    }

    /// Installs the Gateway API CRDs: discovery names their kinds from now on.
    pub fn install_gateway_api(&self) {
        self.state.lock().unwrap().gateway_api = true;
    }

    /// How many lists (not watches) of `resource` were served or refused.
    pub fn lists(&self, resource: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .lists
            .iter()
            .filter(|r| *r == resource)
            .count()
    }

    /// The field selectors of the lists of `resource`.
    pub fn list_selectors(&self, resource: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let of = state.list_selectors.iter().filter(|(r, _)| r == resource);
        of.map(|(_, s)| s.clone()).collect()
    }

    /// A kubeconfig pointing at this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates or replaces objects given as (multi-document) YAML.
    pub fn apply_yaml(&self, yaml: &str) {
        use serde::Deserialize;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value: Value = Value::deserialize(doc).unwrap();
            if !value.is_null() {
                self.apply(value);
            }
        }
    }

    pub fn apply(&self, mut object: Value) {
        let resource = resource_of(object["kind"].as_str().unwrap()).to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let namespace = if cluster_scoped(&resource) {
            String::new()
        } else {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        };
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let key = (resource.clone(), namespace.clone(), name);
        let existed = state.objects.contains_key(&key);
        // Every apply is a spec change: the generation grows.
        let generation = state
            .objects
            .get(&key)
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0)
            + 1;
        let meta = &mut object["metadata"];
        meta["generation"] = json!(generation);
        meta["resourceVersion"] = json!(rv.to_string());
        if !namespace.is_empty() {
            meta["namespace"] = json!(namespace);
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        let event = json!({"type": if existed { "MODIFIED" } else { "ADDED" }, "object": object});
        state.objects.insert(key, object);
        self.record(&mut state, rv, resource, namespace, event);
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let resource = resource_of(kind).to_owned();
        let namespace = if cluster_scoped(&resource) {
            ""
        } else {
            namespace
        }
        .to_owned();
        let mut state = self.state.lock().unwrap();
        let key = (resource.clone(), namespace.clone(), name.to_owned());
        let Some(mut object) = state.objects.remove(&key) else {
            return;
        };
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = json!({"type": "DELETED", "object": object});
        self.record(&mut state, rv, resource, namespace, event);
    }

    fn record(
        &self,
        state: &mut State,
        rv: u64,
        resource: String,
        namespace: String,
        event: Value,
    ) {
        state
            .history
            .push((rv, resource.clone(), namespace.clone(), event.clone()));
        let _ = self.events.send(Broadcast::Event {
            resource,
            namespace,
            event,
        });
    }

    /// Compacts history: open watches get 410 Gone and have to re-list.
    pub fn expire_watches(&self) {
        let mut state = self.state.lock().unwrap();
        state.oldest = state.rv;
        state.history.clear();
        let _ = self.events.send(Broadcast::Expire);
    }

    /// Cuts every open watch connection, as a restarting apiserver would.
    pub fn drop_watches(&self) {
        let _ = self.events.send(Broadcast::Drop);
    }

    /// Makes lists of `resource` fail (500) or succeed again.
    pub fn set_failing(&self, resource: &str, failing: bool) {
        let mut state = self.state.lock().unwrap();
        state.failing.retain(|r| r != resource);
        if failing {
            state.failing.push(resource.to_owned());
        }
    }

    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (
            resource_of(kind).to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query: BTreeMap<String, String> = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Discovery of the Gateway API group, when installed.
        if let ["apis", "gateway.networking.k8s.io", version] = segments.as_slice() {
            let resources: &[(&str, &str, bool)] = match *version {
                "v1" => &[
                    ("gatewayclasses", "GatewayClass", false),
                    ("gateways", "Gateway", true),
                    ("httproutes", "HTTPRoute", true),
                    ("grpcroutes", "GRPCRoute", true),
                ],
                "v1beta1" => &[("referencegrants", "ReferenceGrant", true)],
                _ => &[],
            };
            if !self.state.lock().unwrap().gateway_api || resources.is_empty() {
                return status(
                    StatusCode::NOT_FOUND,
                    "the server could not find the requested resource",
                );
            }
            let resources: Vec<Value> = resources
                .iter()
                .map(|(name, kind, namespaced)| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "list", "watch"]}))
                .collect();
            let list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("gateway.networking.k8s.io/{version}"), "resources": resources});
            return json_response(StatusCode::OK, &list);
        }
        // /api/v1/... or /apis/GROUP/VERSION/...
        let rest = match segments.as_slice() {
            ["api", "v1", rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => return status(StatusCode::NOT_FOUND, "unknown path"),
        };
        let (namespace, resource, name, sub) = match rest {
            ["namespaces"] => ("", "namespaces", None, None),
            ["namespaces", ns, resource] => (*ns, *resource, None, None),
            ["namespaces", ns, resource, name] => (*ns, *resource, Some(*name), None),
            ["namespaces", ns, resource, name, sub] => (*ns, *resource, Some(*name), Some(*sub)),
            [resource] => ("", *resource, None, None),
            [resource, name] => ("", *resource, Some(*name), None),
            [resource, name, sub] => ("", *resource, Some(*name), Some(*sub)),
            _ => return status(StatusCode::NOT_FOUND, "unknown path"),
        };
        let body: Value = {
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if method != Method::GET {
            return self.write(method, path.clone(), namespace, resource, name, sub, body);
        }
        if let Some(name) = name {
            let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
            return match self.state.lock().unwrap().objects.get(&key) {
                Some(object) => json_response(StatusCode::OK, object),
                None => status(StatusCode::NOT_FOUND, "not found"),
            };
        }
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            self.watch(resource, namespace, &query)
        } else {
            self.list(resource, namespace, &query)
        }
    }

    fn list(
        &self,
        resource: &str,
        namespace: &str,
        query: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        state.lists.push(resource.to_owned());
        let selector = query.get("fieldSelector").cloned().unwrap_or_default();
        state.list_selectors.push((resource.to_owned(), selector));
        if state.failing.iter().any(|r| r == resource) {
            return status(StatusCode::INTERNAL_SERVER_ERROR, "list failing as asked");
        }
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((r, ns, _), object)| {
                r == resource
                    && (namespace.is_empty() || ns == namespace)
                    && selected(object, query)
            })
            .map(|(_, o)| o.clone())
            .collect();
        let (api_version, kind) = kind_of(resource);
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": api_version,
                "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": state.rv.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(
        &self,
        resource: &str,
        namespace: &str,
        query: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let send_line = |tx: &mpsc::Sender<_>, value: &Value| {
            let line = Bytes::from(format!("{value}\n"));
            tx.try_send(Ok(Frame::data(line))).is_ok()
        };
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "message": "too old resource version", "code": 410}});
        let mut subscription = self.events.subscribe();
        let state = self.state.lock().unwrap();
        if from < state.oldest {
            send_line(&tx, &gone);
            drop(tx);
        } else {
            let matches = |r: &str, ns: &str, event: &Value| {
                r == resource
                    && (namespace.is_empty() || ns == namespace)
                    && selected(&event["object"], query)
            };
            for (rv, r, ns, event) in &state.history {
                if *rv > from && matches(r, ns, event) {
                    send_line(&tx, event);
                }
            }
            let (resource, namespace, query) =
                (resource.to_owned(), namespace.to_owned(), query.clone());
            tokio::spawn(async move {
                loop {
                    let line = match subscription.recv().await {
                        Ok(Broadcast::Event {
                            resource: r,
                            namespace: ns,
                            event,
                        }) => {
                            if r != resource
                                || !(namespace.is_empty() || ns == namespace)
                                || !selected(&event["object"], &query)
                            {
                                continue;
                            }
                            event
                        }
                        Ok(Broadcast::Expire) => gone.clone(),
                        Ok(Broadcast::Drop) | Err(_) => return,
                    };
                    let stop = line["type"] == "ERROR";
                    if tx
                        .send(Ok(Frame::data(Bytes::from(format!("{line}\n")))))
                        .await
                        .is_err()
                        || stop
                    {
                        return;
                    }
                }
            });
        }
        drop(state);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        response
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        method: Method,
        path: String,
        namespace: &str,
        resource: &str,
        name: Option<&str>,
        sub: Option<&str>,
        body: Value,
    ) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        state.writes.push(Write {
            method: method.clone(),
            path,
            body: body.clone(),
        });
        let key_name = name
            .map(str::to_owned)
            .or_else(|| body["metadata"]["name"].as_str().map(str::to_owned));
        let Some(key_name) = key_name else {
            return json_response(StatusCode::CREATED, &body);
        };
        let key = (resource.to_owned(), namespace.to_owned(), key_name);
        match (method, sub) {
            (Method::PATCH, Some("status")) | (Method::PUT, Some("status")) => {
                let Some(object) = state.objects.get_mut(&key) else {
                    return status(StatusCode::NOT_FOUND, "not found");
                };
                object["status"] = body["status"].clone();
                let object = object.clone();
                json_response(StatusCode::OK, &object)
            }
            (Method::POST, _) => {
                if state.objects.contains_key(&key) {
                    return status(StatusCode::CONFLICT, "already exists");
                }
                state.rv += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                state.objects.insert(key, object.clone());
                json_response(StatusCode::CREATED, &object)
            }
            (Method::PUT, None) => {
                let current_rv = state
                    .objects
                    .get(&key)
                    .map(|o| o["metadata"]["resourceVersion"].clone());
                if let Some(current) = current_rv {
                    if body["metadata"]["resourceVersion"] != current {
                        return status(StatusCode::CONFLICT, "resourceVersion mismatch");
                    }
                }
                state.rv += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                state.objects.insert(key, object.clone());
                json_response(StatusCode::OK, &object)
            }
            _ => json_response(StatusCode::OK, &body),
        }
    }
}

/// `labelSelector` and `fieldSelector`, equality terms only (`a=b,c=d`).
fn selected(object: &Value, query: &BTreeMap<String, String>) -> bool {
    let terms = |key: &str| -> Vec<(String, String)> {
        query
            .get(key)
            .map(|s| {
                s.split(',')
                    .filter_map(|t| t.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let labels_ok = terms("labelSelector")
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k] == json!(v));
    let fields_ok = terms("fieldSelector").iter().all(|(k, v)| {
        let path: Vec<&str> = k.split('.').collect();
        let mut value = object;
        for p in path {
            value = &value[p];
        }
        value == &json!(v)
    });
    labels_ok && fields_ok
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn status(code: StatusCode, message: &str) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        _ => "InternalError",
    };
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}
