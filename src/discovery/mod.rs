//! Layer 6, a source of tables. Discovery: where Kubernetes objects come from
//! and how they become a routing table.
//!
//! Sources (the manifests directory now, the Kubernetes watchers later) fill a
//! `Snapshot`; `translate` turns it into a `RoutingTable` plus warnings, as a pure
//! function; the `Publisher` swaps the table in and reports what it skipped.

pub mod admission;
pub mod annotations;
pub mod events;
pub mod gateway;
pub mod gateway_status;
pub mod kube;
pub mod kube_gateway;
pub mod manifests;
pub mod resolve;
pub mod retained;
pub mod slice;
pub mod status;
pub mod translate;
pub mod webhook_certificate;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use crate::routing::parse_backend_ref;
pub use retained::{LastGood, Retained};
pub use slice::PodSlice;
pub use translate::{translate, ClassSelection, TranslateOptions, Translation};

use crate::lifecycle::Lifecycle;
use crate::routing::{RoutingTable, TableStats};

/// The nice value control-plane work runs at (the data plane keeps the
/// process's, normally 0).
const BACKGROUND_NICE: i32 = 10;

/// Runs control-plane work (reading, translating, building a table) on the
/// blocking pool, at a lower CPU priority. When builds and requests compete for
/// a core (EndpointSlices churn during every rollout), the data plane keeps
/// about nine tenths of it instead of half, and tables still come, only less
/// often (`benches/load/rebuilds.sh`, in `benches/README.md`).
pub async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        lower_thread_priority();
        work()
    })
    .await
}

/// Lowers the calling thread's priority once. The blocking pool runs only this
/// background work, so its threads stay lowered.
fn lower_thread_priority() {
    thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if LOWERED.with(|lowered| lowered.replace(true)) {
        return;
    }
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value only,
    // and lowering it needs no privilege.
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE)
    {
        tracing::debug!(%error, "could not lower the background thread's priority");
    }
}

/// Frees swapped-out tables once their last request is done, until `stop`.
/// Requests hold the table only until their answer's head arrives.
pub async fn reap_retired(publisher: Arc<Publisher>, stop: tokio_util::sync::CancellationToken) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        if publisher.has_retired() {
            let publisher = publisher.clone();
            let _ = in_background(move || publisher.reap()).await;
        }
    }
}

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("cannot read manifests directory {path}")]
    ReadDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(String),
}

/// The objects sluice routes from, as one consistent set.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices, reduced to what routing reads (`slice`).
    pub endpoint_slices: Vec<Arc<PodSlice>>,
    /// TLS Secrets (type `kubernetes.io/tls`), for the TLS listener.
    pub secrets: Vec<Arc<Secret>>,
    /// ConfigMaps, for the headers that `custom-headers`, `add-headers` and
    /// `proxy-set-headers` name (trimmed in a cluster: `kube`).
    pub config_maps: Vec<Arc<ConfigMap>>,
    /// Gateway API: the classes, Gateways and HTTPRoutes (`gateway`).
    pub gateway_classes: Vec<Arc<gateway::GatewayClass>>,
    pub gateways: Vec<Arc<gateway::Gateway>>,
    pub http_routes: Vec<Arc<gateway::HttpRoute>>,
    pub reference_grants: Vec<Arc<gateway::ReferenceGrant>>,
    pub grpc_routes: Vec<Arc<gateway::GrpcRoute>>,
    /// Namespaces, for their labels (a listener's `allowedRoutes` selector).
    pub namespaces: Vec<Arc<Namespace>>,
    /// The manifests file each object came from, so warnings can name it.
    pub sources: HashMap<ObjectRef, Arc<str>>,
    /// ExternalName targets and their addresses, resolved in the background
    /// (`resolve`); the publisher adds them to every snapshot.
    pub resolved: Arc<std::collections::BTreeMap<String, Vec<std::net::IpAddr>>>,
}

/// `Kind namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Something skipped while loading or translating; everything else keeps serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: Option<Arc<str>>,
    pub object: Option<ObjectRef>,
    /// Where in the object, e.g. `spec.rules[0].http.paths[1].backend`.
    pub field: Option<String>,
    /// A short stable label for metrics: `service-not-found`, `invalid-annotation`...
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Translates snapshots and publishes the resulting tables.
///
/// Calls are serialized by the one discovery task that owns the publisher; the
/// mutex only guards the little state kept between builds.
#[derive(Debug)]
pub struct Publisher {
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Everything that outlives a table (`retained`).
    pub retained: Arc<Retained>,
    pub lifecycle: Arc<Lifecycle>,
    state: Mutex<PublisherState>,
    /// Receives each warning once, when it first appears (Kubernetes Events).
    new_warnings: Option<mpsc::UnboundedSender<Warning>>,
    /// Tables swapped out, kept until the requests still using them are done
    /// and then freed in the background (`reap`). Freeing a table of 10,000
    /// Ingresses takes milliseconds; a request dropping the last reference would
    /// do it on a data plane thread, stalling every request behind it.
    retired: Mutex<Vec<Arc<RoutingTable>>>,
}

#[derive(Debug, Default)]
struct PublisherState {
    options: TranslateOptions,
    /// The last snapshot and source warnings, to rebuild when the options change.
    last: Option<(Snapshot, Vec<Warning>)>,
    /// Warnings of the current table, to report each one only once.
    current: Vec<Warning>,
    /// Our Ingresses in the current table.
    ours: Vec<ObjectRef>,
    /// Every warning reason seen, so a reason that went away reports 0.
    warning_reasons: BTreeSet<&'static str>,
    /// ExternalName targets' addresses (`resolve`), added to every snapshot.
    resolved: Arc<std::collections::BTreeMap<String, Vec<std::net::IpAddr>>>,
}

fn record_swap(
    reasons: &mut BTreeSet<&'static str>,
    warnings: &[Warning],
    stats: TableStats,
    endpoints: usize,
    build: std::time::Duration,
) {
    use crate::telemetry as t;
    metrics::counter!(t::CONFIG_SWAPS).increment(1);
    metrics::gauge!(t::CONFIG_LAST_SWAP_SUCCESS).set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(t::CONFIG_LAST_SWAP_TIMESTAMP).set(now.as_secs_f64());
    metrics::histogram!(t::CONFIG_BUILD_DURATION).record(build.as_secs_f64());
    metrics::gauge!(t::TABLE_ROUTES).set(stats.routes as f64);
    metrics::gauge!(t::TABLE_BACKENDS).set(stats.backends as f64);
    metrics::gauge!(t::TABLE_ENDPOINTS).set(endpoints as f64);
    reasons.extend(warnings.iter().map(|w| w.reason));
    for reason in reasons.iter() {
        let count = warnings.iter().filter(|w| w.reason == *reason).count();
        metrics::gauge!(t::CONFIG_WARNINGS, "reason" => *reason).set(count as f64);
    }
}

impl Publisher {
    pub fn new(
        table: Arc<ArcSwap<RoutingTable>>,
        retained: Arc<Retained>,
        options: TranslateOptions,
        lifecycle: Arc<Lifecycle>,
    ) -> Publisher {
        Publisher {
            table,
            retained,
            lifecycle,
            state: Mutex::new(PublisherState {
                options,
                ..PublisherState::default()
            }),
            new_warnings: None,
            retired: Mutex::default(),
        }
    }

    /// Frees the swapped-out tables no request holds any more. Call it in the
    /// background (`in_background`), as `reap_retired` does.
    pub fn reap(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        // The table handed out no more, so nothing can take a new reference:
        // a count of one (ours) stays one.
        retired.retain(|table| Arc::strong_count(table) > 1);
        retired.len()
    }

    fn has_retired(&self) -> bool {
        !self
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Sends each new warning to `events` as well as to the log.
    pub fn with_warning_events(mut self, events: mpsc::UnboundedSender<Warning>) -> Publisher {
        self.new_warnings = Some(events);
        self
    }

    /// Builds a table from `snapshot` and swaps it in. `source_warnings` are what the
    /// source itself skipped (unparseable files); they are reported with the rest.
    pub fn publish(&self, snapshot: &Snapshot, source_warnings: &[Warning]) -> Vec<Warning> {
        // Held to the end: publishes from several tasks (sources, config reloads)
        // must not swap their tables in out of order.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // One copy, kept as the rebuild source; the source's snapshot knows
        // nothing of resolved ExternalNames, so they are added here.
        let mut snapshot = snapshot.clone();
        snapshot.resolved = state.resolved.clone();
        let warnings = self.build_and_swap(&mut state, &snapshot, source_warnings);
        state.last = Some((snapshot, source_warnings.to_vec()));
        warnings
    }

    /// New addresses for ExternalName targets: rebuild from the last snapshot.
    pub fn set_resolved(
        &self,
        resolved: Arc<std::collections::BTreeMap<String, Vec<std::net::IpAddr>>>,
    ) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.resolved == resolved {
            return;
        }
        state.resolved = resolved.clone();
        if let Some((mut snapshot, source_warnings)) = state.last.take() {
            snapshot.resolved = resolved;
            self.build_and_swap(&mut state, &snapshot, &source_warnings);
            state.last = Some((snapshot, source_warnings));
        }
    }

    /// The ConfigMaps the config names (`add-headers`, `proxy-set-headers`):
    /// a change to one rebuilds the table.
    pub fn config_map_refs(&self) -> BTreeSet<(String, String)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let defaults = &state.options.defaults;
        [&defaults.add_headers, &defaults.proxy_set_headers]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The ExternalName targets and mirror targets of the last snapshot
    /// (`resolve` looks them up).
    pub fn external_names(&self) -> BTreeSet<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((snapshot, _)) = &state.last else {
            return BTreeSet::new();
        };
        let mirrors = snapshot
            .ingresses
            .iter()
            .filter_map(|i| i.metadata.annotations.as_ref())
            .filter_map(annotations::mirror_name);
        snapshot
            .services
            .iter()
            .filter_map(|s| s.spec.as_ref())
            .filter(|spec| spec.type_.as_deref() == Some("ExternalName"))
            .filter_map(|spec| spec.external_name.as_deref())
            .map(translate::external_name_key)
            .chain(mirrors)
            .collect()
    }

    /// New translate options (a reloaded config file): rebuild from the last snapshot.
    pub fn set_options(&self, options: TranslateOptions) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.options == options {
            return;
        }
        state.options = options;
        if let Some((snapshot, source_warnings)) = state.last.take() {
            self.build_and_swap(&mut state, &snapshot, &source_warnings);
            state.last = Some((snapshot, source_warnings));
        }
    }

    fn build_and_swap(
        &self,
        state: &mut PublisherState,
        snapshot: &Snapshot,
        source_warnings: &[Warning],
    ) -> Vec<Warning> {
        let started = Instant::now();
        let last = self.retained.take_last_good();
        // Each object is already isolated inside `translate`; this is the last
        // line: if building the table fails anyway, the last table keeps serving,
        // the failure is reported, and the next change is built afresh.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            translate(snapshot, &state.options, &self.retained, &last)
        }));
        let translation = match built {
            Ok(translation) => translation,
            Err(_) => {
                self.retained.set_last_good(last);
                metrics::gauge!(crate::telemetry::CONFIG_LAST_SWAP_SUCCESS).set(0.0);
                tracing::error!(
                    "building the routing table failed; the last table keeps serving (please report this)"
                );
                return state.current.clone();
            }
        };
        let mut warnings = translation.warnings;
        for warning in &mut warnings {
            if warning.file.is_none() {
                warning.file = warning
                    .object
                    .as_ref()
                    .and_then(|o| snapshot.sources.get(o).cloned());
            }
        }
        warnings.splice(0..0, source_warnings.iter().cloned());
        // Log (and send as Events) only what is new since the last build: a rebuild
        // for an unrelated change must not repeat every standing warning.
        for warning in warnings.iter().filter(|w| !state.current.contains(w)) {
            tracing::warn!(reason = warning.reason, "skipped: {warning}");
            if let Some(events) = &self.new_warnings {
                let _ = events.send(warning.clone());
            }
        }
        state.ours = translation.ours;
        state.current = warnings.clone();

        let table = translation.table;
        let stats = table.stats;
        let endpoints = table.endpoint_count();
        for (host, certificate) in table.tls.all() {
            if let Some(expires) = certificate.expires {
                let labels = [("host", host), ("secret", certificate.source.clone())];
                metrics::gauge!(crate::telemetry::TLS_CERT_EXPIRY, &labels).set(expires as f64);
            }
        }
        self.retained.set_last_good(LastGood {
            ingresses: translation.valid,
            certs: table.tls.clone(),
        });
        let old = self.table.swap(Arc::new(table));
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(old);
        self.reap();
        record_swap(
            &mut state.warning_reasons,
            &warnings,
            stats,
            endpoints,
            started.elapsed(),
        );
        // What no table refers to any more goes now: states of pods that left
        // (the old table, if a request still holds it, keeps its own references
        // alive until a later swap).
        let collected = self.retained.collect();
        self.lifecycle.set_configured();
        tracing::info!(
            hosts = stats.hosts,
            routes = stats.routes,
            backends = stats.backends,
            endpoints,
            warnings = warnings.len(),
            ignored_ingresses = translation.ignored,
            collected_endpoints = collected,
            build_ms = started.elapsed().as_secs_f64() * 1e3,
            "routing table published"
        );
        warnings
    }

    /// Pod churn: recomputes the endpoints of these Services in the current table,
    /// in place, without rebuilding it.
    pub fn update_endpoints(&self, snapshot: &Snapshot, services: &BTreeSet<(String, String)>) {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // The source's snapshot knows nothing of resolved names: add them.
        let with_resolved;
        let snapshot = if state.resolved.is_empty() {
            snapshot
        } else {
            let mut copy = snapshot.clone();
            copy.resolved = state.resolved.clone();
            with_resolved = copy;
            &with_resolved
        };
        if let Some((last, _)) = &mut state.last {
            // Keep the rebuild source current, or a config reload would bring back
            // the endpoints of before.
            last.endpoint_slices = snapshot.endpoint_slices.clone();
        }
        let table = self.table.load();
        let updated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            translate::update_endpoints(
                &table,
                snapshot,
                services,
                &self.retained,
                &state.options.upstream_deny,
            )
        }));
        let Ok(backends) = updated else {
            // A full rebuild isolates each object; it is the safe way back.
            tracing::error!(
                "updating endpoints in place failed; rebuilding the table (please report this)"
            );
            if let Some((last, source_warnings)) = state.last.take() {
                self.build_and_swap(&mut state, &last, &source_warnings);
                state.last = Some((last, source_warnings));
            }
            return;
        };
        metrics::counter!(crate::telemetry::ENDPOINT_UPDATES).increment(1);
        metrics::gauge!(crate::telemetry::TABLE_ENDPOINTS).set(table.endpoint_count() as f64);
        tracing::debug!(
            services = services.len(),
            backends,
            update_us = started.elapsed().as_secs_f64() * 1e6,
            "endpoints updated"
        );
    }

    /// Sends every standing warning as an Event again: a replica that just became
    /// the leader speaks for what it did not report while following.
    pub fn resend_warnings(&self) {
        if let Some(events) = &self.new_warnings {
            for warning in self.warnings() {
                let _ = events.send(warning);
            }
        }
    }

    /// What the admission webhook judges `review` against: the part of the
    /// last snapshot that can change its verdict, and the options it was
    /// translated with; `None` before the first. Only the scope is copied,
    /// under the lock; the judging happens outside it.
    pub fn admission_scope(
        &self,
        review: &admission::Review,
    ) -> Option<(Snapshot, TranslateOptions)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (snapshot, _) = state.last.as_ref()?;
        Some((review.scope(snapshot), state.options.clone()))
    }

    /// The `controllerName` of sluice's GatewayClasses, as configured.
    pub fn gateway_controller(&self) -> String {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.options.gateway.controller_name.clone()
    }

    /// Our Ingresses (of our class), as of the last build.
    pub fn ours(&self) -> Vec<ObjectRef> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ours
            .clone()
    }

    /// The warnings of the table being served.
    pub fn warnings(&self) -> Vec<Warning> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A swapped-out table is freed by `reap` once no request holds it, never
    /// by the request that lets go of it last.
    #[test]
    fn swapped_out_tables_are_freed_by_the_publisher() {
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
        let publisher = Publisher::new(
            table.clone(),
            Arc::new(Retained::default()),
            TranslateOptions::default(),
            Arc::new(Lifecycle::default()),
        );
        publisher.publish(&Snapshot::default(), &[]);
        let held = table.load_full(); // a request in flight
        publisher.publish(&Snapshot::default(), &[]);
        assert_eq!(publisher.reap(), 1, "the held table is kept");
        assert_eq!(Arc::strong_count(&held), 2, "the publisher holds it too");
        drop(held); // the request finishes: it is not the last owner
        assert_eq!(publisher.reap(), 0);
        assert!(!publisher.has_retired());
    }
}
