//! The one home for everything that outlives a routing table: what a rebuild
//! must not reset, so that a change elsewhere in the cluster neither floods nor
//! starves a pod, nor hands every client a fresh rate-limit budget.
//!
//! | state                                         | keyed by                               |
//! |-----------------------------------------------|----------------------------------------|
//! | endpoint: connection pool, latency estimate, breaker, in-flight count | Service namespace, pod address, protocol |
//! | backend: round-robin cursor, typical latency, retry budget | Service port, protocol        |
//! | rate limiter                                  | Ingress                                |
//! | request metrics and canary counters           | their label set                        |
//! | the last valid version of each Ingress, the last good certificates | Ingress, host      |
//!
//! `translate` asks this home for each of them by key; the home hands out the
//! entry it holds (or makes one), so a table rebuilt from the same objects gets
//! the same states. One rule collects them: after each swap, an entry that no
//! table refers to any more goes (`collect`); the last valid objects are
//! replaced by each build, which drops the ones of deleted objects. An entry
//! whose settings changed (a new rate limit, a new retry budget, new metric
//! options) is replaced at once instead of reused.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::networking::v1::Ingress;
use tokio::time::Instant;

use super::ObjectRef;
use crate::balance::EndpointStats;
use crate::policy::auth_cache::{AuthCache, CacheDurations};
use crate::policy::canary::Cidr;
use crate::policy::connlimit::ConnLimiter;
use crate::policy::ratelimit::{LimitSpec, Limiter};
use crate::policy::retry::RetryBudget;
use crate::routing::certs::TlsCerts;
use crate::routing::endpoint::EndpointKey;
use crate::routing::{BackendRef, BackendState, EndpointState, IngressRef, Protocol};
use crate::telemetry::requests::{MetricsOptions, RequestMetrics};
use crate::upstream::pool::PoolConfig;

/// Shared entries by key; see the module doc for when they go.
#[derive(Debug)]
struct Keyed<K, V>(Mutex<HashMap<K, Arc<V>>>);

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Keyed(Mutex::default())
    }
}

impl<K: Hash + Eq, V> Keyed<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<V>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key` if it `fits`, else a new one from `make`.
    fn get(&self, key: K, fits: impl FnOnce(&V) -> bool, make: impl FnOnce() -> V) -> Arc<V> {
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(entry) if fits(entry) => entry.clone(),
            _ => {
                let entry = Arc::new(make());
                entries.insert(key, entry.clone());
                entry
            }
        }
    }

    /// Drops the entries only this home still holds; returns how many went.
    fn collect(&self) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, entry| Arc::strong_count(entry) > 1);
        before - entries.len()
    }

    /// Like `collect`, for just these keys, so that the cost follows the size
    /// of a change.
    fn collect_keys(&self, keys: &[K]) -> usize {
        let mut entries = self.lock();
        let mut collected = 0;
        for key in keys {
            if entries.get(key).is_some_and(|e| Arc::strong_count(e) == 1) {
                entries.remove(key);
                collected += 1;
            }
        }
        collected
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What the previous builds knew to be good, to fall back on when an edit breaks.
#[derive(Debug, Default)]
pub struct LastGood {
    /// The last version of each Ingress that had no faults of its own.
    pub ingresses: HashMap<ObjectRef, Arc<Ingress>>,
    /// The certificates the current table serves.
    pub certs: TlsCerts,
}

/// Namespace, Ingress, Service, canary, and how they are counted.
type MetricsKey = (String, String, String, bool, MetricsOptions);

#[derive(Debug, Default)]
pub struct Retained {
    pool_config: Arc<PoolConfig>,
    endpoints: Keyed<EndpointKey, EndpointState>,
    backends: Keyed<(BackendRef, Protocol), BackendState>,
    limiters: Keyed<IngressRef, Limiter>,
    conn_limiters: Keyed<IngressRef, ConnLimiter>,
    /// `auth-cache-key`'s answers, by Ingress (the global service's under
    /// an empty name): kept across rebuilds while the durations are the same.
    auth_caches: Keyed<IngressRef, AuthCache>,
    metrics: Keyed<MetricsKey, RequestMetrics>,
    canary_requests: Keyed<IngressRef, metrics::Counter>,
    last_good: Mutex<LastGood>,
}

impl Retained {
    pub fn new(pool_config: PoolConfig) -> Retained {
        Retained {
            pool_config: Arc::new(pool_config),
            ..Retained::default()
        }
    }

    /// The states of a backend's pod addresses, under one lock.
    pub fn endpoints(
        &self,
        namespace: &Arc<str>,
        addrs: &[SocketAddr],
        protocol: Protocol,
    ) -> Vec<Arc<EndpointState>> {
        let mut entries = self.endpoints.lock();
        addrs
            .iter()
            .map(|&addr| {
                entries
                    .entry((namespace.clone(), addr, protocol.clone()))
                    .or_insert_with(|| {
                        Arc::new(EndpointState::new(
                            addr,
                            protocol.clone(),
                            self.pool_config.clone(),
                            EndpointStats::new(Instant::now()),
                        ))
                    })
                    .clone()
            })
            .collect()
    }

    /// A backend's balancing statistics and retry budget.
    pub fn backend(
        &self,
        name: &BackendRef,
        protocol: Protocol,
        budget: (f64, u32),
    ) -> Arc<BackendState> {
        let key = (name.clone(), protocol);
        self.backends.get(
            key,
            |state| state.retry_budget.params() == budget,
            || BackendState::new(RetryBudget::new(budget.0, budget.1)),
        )
    }

    /// An Ingress's rate limiter, with its state while the limit is unchanged.
    /// An Ingress's `limit-connections` counts, kept across swaps while its
    /// settings stay.
    pub fn conn_limiter(
        &self,
        ingress: &IngressRef,
        max: u32,
        exempt: &[Cidr],
    ) -> Arc<ConnLimiter> {
        self.conn_limiters.get(
            ingress.clone(),
            |limiter| limiter.is(max, exempt),
            || ConnLimiter::new(max, exempt.to_vec(), &ingress.namespace, &ingress.name),
        )
    }

    pub fn auth_cache(&self, ingress: &IngressRef, durations: &CacheDurations) -> Arc<AuthCache> {
        self.auth_caches.get(
            ingress.clone(),
            |cache| cache.durations() == durations,
            || AuthCache::new(durations.clone()),
        )
    }

    pub fn limiter(&self, ingress: &IngressRef, spec: LimitSpec) -> Arc<Limiter> {
        self.limiters.get(
            ingress.clone(),
            |limiter| *limiter.spec() == spec,
            || Limiter::new(spec.clone(), &ingress.namespace, &ingress.name),
        )
    }

    /// The request metrics of one label set.
    pub fn request_metrics(
        &self,
        (namespace, ingress, service, canary): (&str, &str, &str, bool),
        options: MetricsOptions,
    ) -> Arc<RequestMetrics> {
        let key = (
            namespace.to_owned(),
            ingress.to_owned(),
            service.to_owned(),
            canary,
            options,
        );
        self.metrics.get(
            key,
            |_| true,
            || RequestMetrics::new(namespace, ingress, service, canary, options),
        )
    }

    /// The count of requests a canary Ingress took.
    pub fn canary_requests(&self, ingress: &IngressRef) -> Arc<metrics::Counter> {
        self.canary_requests.get(
            ingress.clone(),
            |_| true,
            || {
                let labels = [
                    ("namespace", ingress.namespace.clone()),
                    ("ingress", ingress.name.clone()),
                ];
                metrics::counter!(crate::telemetry::CANARY_REQUESTS, &labels)
            },
        )
    }

    /// What the previous builds knew to be good, for the next build (which
    /// gives it back, updated, through `set_last_good`).
    pub fn take_last_good(&self) -> LastGood {
        std::mem::take(
            &mut *self
                .last_good
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// What the build just published knew to be good.
    pub fn set_last_good(&self, last_good: LastGood) {
        *self
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = last_good;
    }

    /// After a swap: drops every entry no table refers to any more. Returns how
    /// many endpoint states went (their idle connections close with them).
    pub fn collect(&self) -> usize {
        self.backends.collect();
        self.limiters.collect();
        self.conn_limiters.collect();
        self.auth_caches.collect();
        self.metrics.collect();
        self.canary_requests.collect();
        self.endpoints.collect()
    }

    /// After an in-place endpoint update: the states of just these addresses
    /// (those the change removed), if nothing refers to them any more.
    pub fn collect_endpoints(&self, removed: &[EndpointKey]) -> usize {
        self.endpoints.collect_keys(removed)
    }

    /// Endpoint states held (pods of every table still in use).
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }
}
