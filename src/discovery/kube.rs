//! The Kubernetes source: kube-rs watchers feeding a store, coalesced into
//! publishes.
//!
//! One watcher per kind (per namespace with `--watch-namespace`). Objects are
//! trimmed before they are stored (managed fields, last-applied annotations,
//! status, topology hints), and an update equal to what is stored changes nothing,
//! so a re-list after `410 Gone` that finds the cluster as it was rebuilds nothing.
//! Changes are coalesced for `debounce`; when only EndpointSlices changed, the
//! table's endpoint lists are updated in place instead of rebuilding it.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{select_all, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gateway::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use super::status::StatusOptions;
use super::PodSlice;
use super::{DiscoveryError, Publisher, Snapshot};

pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The Secret types watched, one watcher each (a field selector has no "or").
const SECRET_TYPES: [&str; 2] = ["kubernetes.io/tls", "Opaque"];
/// A ConfigMap whose data is larger is stored without it: header lists
/// are small, and every ConfigMap of the cluster is watched.
const MAX_CONFIG_MAP_DATA: usize = 64 << 10;

#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// Else `KUBECONFIG`, else the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces (all when empty).
    pub namespaces: Vec<String>,
    /// Serve only namespaces whose labels match this selector.
    pub namespace_selector: Option<String>,
    pub debounce: Duration,
    /// This replica's name (Events, the status Lease).
    pub identity: String,
    /// Write Ingress status (None: `--update-status=false`).
    pub status: Option<StatusOptions>,
}

pub async fn connect(options: &KubeOptions) -> Result<Client, DiscoveryError> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| DiscoveryError::Kube(format!("reading {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| DiscoveryError::Kube(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| DiscoveryError::Kube(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| DiscoveryError::Kube(e.to_string()))
}

/// One watcher's event, tagged with the store slot it fills. Each lives only from
/// the stream to the store, so the size spread between kinds costs nothing.
#[allow(clippy::large_enum_variant)]
enum Change {
    Ingress(usize, Event<Ingress>),
    Class(usize, Event<IngressClass>),
    Service(usize, Event<Service>),
    Slice(usize, Event<PodSlice>),
    Secret(usize, Event<Secret>),
    ConfigMap(usize, Event<ConfigMap>),
    Namespace(Event<Namespace>),
    GatewayClass(Event<GatewayClass>),
    Gateway(usize, Event<Gateway>),
    HttpRoute(usize, Event<HttpRoute>),
    Grant(usize, Event<ReferenceGrant>),
    GrpcRoute(usize, Event<GrpcRoute>),
    /// Every namespace, for its labels (Gateway API listeners' selectors).
    Labels(Event<Namespace>),
}

/// Watches until `stop`, publishing through `publisher`. The first table is
/// published once every watcher has completed its initial list; `/readyz` turns
/// 200 at the same moment.
pub async fn watch(
    client: Client,
    options: KubeOptions,
    publisher: Arc<Publisher>,
    stop: CancellationToken,
) {
    let namespaces: Vec<Option<&str>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options
            .namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    let mut streams: Vec<BoxStream<'static, Result<Change, watcher::Error>>> = Vec::new();
    let mut store = Store::default();
    let config = watcher::Config::default();
    let first = options.namespaces.first().map(String::as_str);
    let gateway_api = super::kube_gateway::installed(&client, first).await;
    for (slot, ns) in namespaces.iter().enumerate() {
        if gateway_api.routes {
            let c = &config;
            streams.push(watch_kind(api(&client, *ns), c.clone(), move |e| {
                Change::Gateway(slot, e)
            }));
            streams.push(watch_kind(api(&client, *ns), c.clone(), move |e| {
                Change::HttpRoute(slot, e)
            }));
            store.gateways.push(Objects::default());
            store.http_routes.push(Objects::default());
        }
        if gateway_api.routes && gateway_api.grpc_routes {
            streams.push(watch_kind(api(&client, *ns), config.clone(), move |e| {
                Change::GrpcRoute(slot, e)
            }));
            store.grpc_routes.push(Objects::default());
        }
        if gateway_api.routes && gateway_api.grants {
            streams.push(watch_kind(api(&client, *ns), config.clone(), move |e| {
                Change::Grant(slot, e)
            }));
            store.grants.push(Objects::default());
        }
        streams.push(watch_kind(api(&client, *ns), config.clone(), move |e| {
            Change::Ingress(slot, e)
        }));
        streams.push(watch_kind(api(&client, *ns), config.clone(), move |e| {
            Change::Service(slot, e)
        }));
        streams.push(watch_kind(api(&client, *ns), config.clone(), move |e| {
            Change::Slice(slot, reduce(e))
        }));
        // Only the two types sluice reads: certificates (`kubernetes.io/tls`) and
        // `Opaque` (a CA alone for `proxy-ssl-secret`). Never the service-account
        // tokens, registry credentials or Helm releases that fill most clusters.
        for (i, kind) in SECRET_TYPES.iter().enumerate() {
            let typed = config.clone().fields(&format!("type={kind}"));
            let secrets = slot * SECRET_TYPES.len() + i;
            streams.push(watch_kind(api(&client, *ns), typed, move |e| {
                Change::Secret(secrets, e)
            }));
            store.secrets.push(Objects::default());
        }
        streams.push(watch_kind(api(&client, *ns), config.clone(), move |e| {
            Change::ConfigMap(slot, e)
        }));
        store.ingresses.push(Objects::default());
        store.services.push(Objects::default());
        store.slices.push(Objects::default());
        store.config_maps.push(Objects::default());
    }
    streams.push(watch_kind(Api::all(client.clone()), config.clone(), |e| {
        Change::Class(0, e)
    }));
    store.classes.push(Objects::default());
    if gateway_api.routes {
        let all = Api::all(client.clone());
        streams.push(watch_kind(all, config.clone(), Change::GatewayClass));
        store.gateway_classes.push(Objects::default());
        // Listing namespaces needs cluster-wide rights, which a
        // `--watch-namespace` deployment may not have: there, a selector
        // sees only the name label (`translate::gateway_listeners`).
        if options.namespaces.is_empty() {
            let all = Api::all(client.clone());
            streams.push(watch_kind(all, config.clone(), Change::Labels));
            store.labels.push(Objects::default());
        }
    }
    if let Some(selector) = &options.namespace_selector {
        let labelled = config.clone().labels(selector);
        streams.push(watch_kind(
            Api::all(client.clone()),
            labelled,
            Change::Namespace,
        ));
        store.namespaces = Some(Objects::default());
    }
    let mut events = select_all(streams);

    let mut dirty = Dirty::default();
    let mut deadline: Option<Instant> = None;
    let mut published = false;
    loop {
        let flush_at = deadline;
        tokio::select! {
            () = stop.cancelled() => return,
            item = events.next() => match item {
                Some(Ok(change)) => {
                    let global = publisher.config_map_refs();
                    store.apply(change, &mut dirty, &global);
                    if dirty.any() && deadline.is_none() {
                        deadline = Some(Instant::now() + options.debounce);
                    }
                }
                Some(Err(error)) => {
                    // The watcher retries by itself, with backoff; the last table keeps serving.
                                        tracing::warn!(%error, "Kubernetes watch failed; retrying");
                    metrics::counter!(crate::telemetry::WATCH_ERRORS).increment(1);
                }
                None => return,
            },
            () = sleep_until(flush_at), if flush_at.is_some() => {
                deadline = None;
                if !store.synced() {
                    continue; // `dirty` is kept; the last InitDone sets a new deadline.
                }
                let snapshot = store.snapshot();
                let publisher = publisher.clone();
                let work = std::mem::take(&mut dirty);
                let full = work.full || !published;
                // Translating 10,000 Ingresses must not stall this task's thread.
                let done = super::in_background(move || {
                    if full {
                        publisher.publish(&snapshot, &[]);
                    } else {
                        publisher.update_endpoints(&snapshot, &work.services);
                    }
                    publisher
                })
                .await;
                match done {
                    Ok(publisher) if !published => {
                        published = true;
                        publisher.lifecycle.set_synced();
                        tracing::info!("initial sync from Kubernetes complete");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // The next flush rebuilds everything rather than lose this change.
                        tracing::error!(%error, "publishing failed");
                        dirty.full = true;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    wrap: impl Fn(Event<K>) -> Change + Send + 'static,
) -> BoxStream<'static, Result<Change, watcher::Error>>
where
    K: Resource + Trim + Clone + DeserializeOwned + Debug + Send + 'static,
    <K as Resource>::DynamicType: Default,
{
    watcher(api, config)
        .default_backoff()
        .modify(Trim::trim)
        .map_ok(wrap)
        .boxed()
}

/// What changed since the last publish.
#[derive(Debug, Default)]
struct Dirty {
    /// Anything but EndpointSlices: rebuild the table.
    full: bool,
    /// Services whose EndpointSlices changed.
    services: BTreeSet<(String, String)>,
}

impl Dirty {
    fn any(&self) -> bool {
        self.full || !self.services.is_empty()
    }
}

type Key = (String, String);

/// The objects of one watcher. `init` buffers a (re-)list until it is complete,
/// then replaces `items` in one step.
struct Objects<K> {
    items: HashMap<Key, Arc<K>>,
    init: Option<HashMap<Key, Arc<K>>>,
    synced: bool,
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Objects {
            items: HashMap::new(),
            init: None,
            synced: false,
        }
    }
}

impl<K: Resource + PartialEq> Objects<K> {
    /// Applies a watch event; calls `changed` with every object that really changed
    /// (old or new version). Returns whether this watcher just finished a list.
    fn apply(&mut self, event: Event<K>, mut changed: impl FnMut(&K)) -> bool {
        let key = |o: &K| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            Event::Apply(object) => {
                let object = Arc::new(object);
                let previous = self.items.insert(key(&object), object.clone());
                if previous.as_deref() != Some(&*object) {
                    previous.iter().for_each(|p| changed(p));
                    changed(&object);
                }
            }
            Event::Delete(object) => {
                if let Some(previous) = self.items.remove(&key(&object)) {
                    changed(&previous);
                }
            }
            Event::Init => self.init = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(init) = &mut self.init {
                    init.insert(key(&object), Arc::new(object));
                }
            }
            Event::InitDone => {
                let fresh = self.init.take().unwrap_or_default();
                for (k, old) in &self.items {
                    if fresh.get(k) != Some(old) {
                        changed(old);
                    }
                }
                for (k, new) in &fresh {
                    if self.items.get(k) != Some(new) {
                        changed(new);
                    }
                }
                self.items = fresh;
                let first = !self.synced;
                self.synced = true;
                return first;
            }
        }
        false
    }
}

#[derive(Default)]
struct Store {
    ingresses: Vec<Objects<Ingress>>,
    classes: Vec<Objects<IngressClass>>,
    services: Vec<Objects<Service>>,
    slices: Vec<Objects<PodSlice>>,
    secrets: Vec<Objects<Secret>>,
    config_maps: Vec<Objects<ConfigMap>>,
    /// With `--watch-namespace-selector`: the namespaces that match it.
    namespaces: Option<Objects<Namespace>>,
    /// Gateway API, when its CRDs are installed (`kube_gateway`).
    gateway_classes: Vec<Objects<GatewayClass>>,
    gateways: Vec<Objects<Gateway>>,
    http_routes: Vec<Objects<HttpRoute>>,
    grants: Vec<Objects<ReferenceGrant>>,
    grpc_routes: Vec<Objects<GrpcRoute>>,
    labels: Vec<Objects<Namespace>>,
}

impl Store {
    /// `global`: the ConfigMaps the config names (`add-headers`,
    /// `proxy-set-headers`).
    fn apply(&mut self, change: Change, dirty: &mut Dirty, global: &BTreeSet<(String, String)>) {
        let mut full = false;
        let first_sync = match change {
            // Only a ConfigMap something names rebuilds the table: the
            // cluster's others (leader elections, CA bundles) change often.
            Change::ConfigMap(slot, e) => {
                let ingresses = &self.ingresses;
                self.config_maps[slot].apply(e, |map| {
                    let (Some(ns), Some(name)) = (&map.metadata.namespace, &map.metadata.name)
                    else {
                        return;
                    };
                    let named = global.contains(&(ns.clone(), name.clone()))
                        || ingresses.iter().flat_map(|o| o.items.values()).any(|i| {
                            i.metadata.namespace.as_deref() == Some(ns.as_str())
                                && super::annotations::config_maps_of(i)
                                    .iter()
                                    .any(|(n, m)| n == ns && m == name)
                        });
                    full |= named;
                })
            }
            Change::Ingress(slot, e) => self.ingresses[slot].apply(e, |_| full = true),
            Change::Class(slot, e) => self.classes[slot].apply(e, |_| full = true),
            Change::Service(slot, e) => self.services[slot].apply(e, |_| full = true),
            Change::Secret(slot, e) => self.secrets[slot].apply(e, |_| full = true),
            Change::GatewayClass(e) => self.gateway_classes[0].apply(e, |_| full = true),
            Change::Gateway(slot, e) => self.gateways[slot].apply(e, |_| full = true),
            Change::HttpRoute(slot, e) => self.http_routes[slot].apply(e, |_| full = true),
            Change::Grant(slot, e) => self.grants[slot].apply(e, |_| full = true),
            Change::GrpcRoute(slot, e) => self.grpc_routes[slot].apply(e, |_| full = true),
            Change::Labels(e) => self.labels[0].apply(e, |_| full = true),
            Change::Namespace(e) => match &mut self.namespaces {
                Some(namespaces) => namespaces.apply(e, |_| full = true),
                None => false,
            },
            Change::Slice(slot, e) => self.slices[slot].apply(e, |slice| {
                if let Some((ns, service)) = slice.service() {
                    dirty.services.insert((ns.to_owned(), service.to_owned()));
                }
            }),
        };
        // Until everything is listed once, the first publish is a full one anyway.
        dirty.full |= full || first_sync;
    }

    fn synced(&self) -> bool {
        self.ingresses.iter().all(|o| o.synced)
            && self.classes.iter().all(|o| o.synced)
            && self.services.iter().all(|o| o.synced)
            && self.slices.iter().all(|o| o.synced)
            && self.secrets.iter().all(|o| o.synced)
            && self.config_maps.iter().all(|o| o.synced)
            && self.namespaces.as_ref().is_none_or(|o| o.synced)
            && self.gateway_classes.iter().all(|o| o.synced)
            && self.gateways.iter().all(|o| o.synced)
            && self.http_routes.iter().all(|o| o.synced)
            && self.grants.iter().all(|o| o.synced)
            && self.grpc_routes.iter().all(|o| o.synced)
            && self.labels.iter().all(|o| o.synced)
    }

    fn snapshot(&self) -> Snapshot {
        let allowed: Option<BTreeSet<&str>> = self
            .namespaces
            .as_ref()
            .map(|n| n.items.keys().map(|(_, name)| name.as_str()).collect());
        fn collect<'a, K: Resource + 'a>(
            stores: &'a [Objects<K>],
            allowed: &'a Option<BTreeSet<&str>>,
        ) -> Vec<Arc<K>> {
            stores
                .iter()
                .flat_map(|o| o.items.values())
                .filter(|o| match allowed {
                    Some(set) => o
                        .meta()
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| set.contains(ns)),
                    None => true,
                })
                .cloned()
                .collect()
        }
        Snapshot {
            ingresses: collect(&self.ingresses, &allowed),
            ingress_classes: collect(&self.classes, &None),
            services: collect(&self.services, &allowed),
            endpoint_slices: collect(&self.slices, &allowed),
            secrets: collect(&self.secrets, &allowed),
            config_maps: collect(&self.config_maps, &allowed),
            gateway_classes: collect(&self.gateway_classes, &None),
            gateways: collect(&self.gateways, &allowed),
            http_routes: collect(&self.http_routes, &allowed),
            reference_grants: collect(&self.grants, &allowed),
            grpc_routes: collect(&self.grpc_routes, &allowed),
            namespaces: collect(&self.labels, &None),
            sources: HashMap::new(),
            resolved: Default::default(),
        }
    }
}

/// An EndpointSlice event, reduced to what routing reads before it is stored.
fn reduce(event: Event<EndpointSlice>) -> Event<PodSlice> {
    match event {
        Event::Apply(slice) => Event::Apply(slice.into()),
        Event::Delete(slice) => Event::Delete(slice.into()),
        Event::Init => Event::Init,
        Event::InitApply(slice) => Event::InitApply(slice.into()),
        Event::InitDone => Event::InitDone,
    }
}

/// Drops what routing never reads, before an object is stored.
pub trait Trim {
    fn trim(&mut self);
}

pub(super) fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.resource_version = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

impl Trim for Ingress {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        // We write the status ourselves; reading it back would rebuild for nothing.
        self.status = None;
    }
}

impl Trim for IngressClass {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
    }
}

impl Trim for Service {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
    }
}

impl Trim for EndpointSlice {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        for endpoint in self.endpoints.iter_mut().flatten() {
            endpoint.deprecated_topology = None;
            endpoint.hints = None;
            endpoint.hostname = None;
            endpoint.node_name = None;
            endpoint.target_ref = None;
            endpoint.zone = None;
        }
    }
}

impl Trim for Secret {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
    }
}

impl Trim for ConfigMap {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.binary_data = None;
        let size: usize = (self.data.iter().flatten())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > MAX_CONFIG_MAP_DATA {
            self.data = None;
        }
    }
}

impl Trim for Namespace {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, port: i32) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(port.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                    port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn trimmed(mut s: Service) -> Service {
        s.trim();
        s
    }

    #[test]
    fn only_real_changes_count() {
        let mut objects = Objects::<Service>::default();
        let changes = std::cell::Cell::new(0);
        let apply = |objects: &mut Objects<Service>, event| {
            objects.apply(event, |_| changes.set(changes.get() + 1))
        };
        assert!(!apply(&mut objects, Event::Init));
        apply(&mut objects, Event::InitApply(trimmed(service("a", 80))));
        assert!(apply(&mut objects, Event::InitDone), "first sync");
        assert_eq!(changes.get(), 1);

        // The same object again (a new resourceVersion is trimmed away): no change.
        let mut again = service("a", 80);
        again.metadata.resource_version = Some("999".into());
        apply(&mut objects, Event::Apply(trimmed(again)));
        // A re-list that finds the same set: no change, and not a first sync.
        apply(&mut objects, Event::Init);
        apply(&mut objects, Event::InitApply(trimmed(service("a", 80))));
        assert!(!apply(&mut objects, Event::InitDone));
        assert_eq!(changes.get(), 1);

        let mut changes = 0;
        objects.apply(Event::Apply(trimmed(service("a", 81))), |_| changes += 1);
        assert_eq!(changes, 2, "old and new version");
        objects.apply(Event::Delete(trimmed(service("a", 81))), |_| changes += 1);
        objects.apply(Event::Delete(trimmed(service("b", 1))), |_| changes += 1);
        assert_eq!(changes, 3, "deleting an unknown object changes nothing");
    }
}

#[cfg(test)]
mod config_map_tests {
    use super::*;

    fn config_map(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            data: Some([("X-Frame-Options".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    /// Only a ConfigMap that the config or an Ingress names rebuilds the
    /// table; a large one is kept without its data.
    #[test]
    fn only_named_config_maps_rebuild() {
        let mut store = Store {
            config_maps: vec![Objects::default()],
            ingresses: vec![Objects::default()],
            ..Store::default()
        };
        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "default",
                "annotations": {"nginx.ingress.kubernetes.io/custom-headers": "named"}},
        }))
        .unwrap();
        let mut dirty = Dirty::default();
        let global = BTreeSet::from([("default".to_owned(), "global".to_owned())]);
        store.apply(Change::Ingress(0, Event::InitDone), &mut dirty, &global);
        store.apply(
            Change::Ingress(0, Event::Apply(ingress)),
            &mut dirty,
            &global,
        );
        store.apply(Change::ConfigMap(0, Event::InitDone), &mut dirty, &global);
        for (name, rebuilds) in [("leader", false), ("named", true), ("global", true)] {
            let mut dirty = Dirty::default();
            let event = Event::Apply(config_map(name, "DENY"));
            store.apply(Change::ConfigMap(0, event), &mut dirty, &global);
            assert_eq!(dirty.full, rebuilds, "{name}");
        }
        let mut large = config_map("large", &"x".repeat(MAX_CONFIG_MAP_DATA + 1));
        large.trim();
        assert!(large.data.is_none());
    }
}
