//! Discovery at scale: 10,000 Ingresses, 10,000 Services, 100,000 endpoints.
//!
//! * `full_build`: `translate` of the whole snapshot (a rebuild).
//! * `endpoint_change`: one EndpointSlice changes and the published table is
//!   updated in place, as the Kubernetes source does it (snapshot from the store,
//!   then `Publisher::update_endpoints`).
//! * Resident memory with the snapshot and a published table is printed first.
//!
//! Run: `cargo bench --bench discovery`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use sluice::config::PoolConfig;
use sluice::discovery::{translate, LastGood, Publisher, Retained, TranslateOptions};
use sluice::lifecycle::Lifecycle;
use sluice::routing::RoutingTable;

const SERVICES: usize = 10_000;
const PODS_PER_SERVICE: usize = 10;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn bench(c: &mut Criterion) {
    let before = rss_mib();
    let snapshot = fixtures::scale_snapshot(SERVICES, PODS_PER_SERVICE);
    let registry = Arc::new(Retained::new(PoolConfig::default()));
    let table = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
    let publisher = Publisher::new(
        table.clone(),
        registry.clone(),
        TranslateOptions::default(),
        Arc::new(Lifecycle::default()),
    );
    publisher.publish(&snapshot, &[]);
    let loaded = table.load();
    assert_eq!(loaded.stats.routes, SERVICES);
    assert_eq!(loaded.endpoint_count(), SERVICES * PODS_PER_SERVICE);
    println!(
        "scale: {SERVICES} Ingresses, {SERVICES} Services, {} endpoints: resident memory {:.0} MiB (process {:.0} MiB before)",
        loaded.endpoint_count(),
        rss_mib(),
        before
    );
    drop(loaded);

    let mut group = c.benchmark_group("discovery");
    group.sample_size(10);
    group.bench_function("full_build", |b| {
        b.iter(|| {
            black_box(translate(
                &snapshot,
                &TranslateOptions::default(),
                &registry,
                &LastGood::default(),
            ))
        })
    });

    // One Service's pods change: its slice is replaced in the store, the source
    // takes a snapshot and updates the published table in place.
    let changed = 4_242;
    let service = BTreeSet::from([(format!("ns-{}", changed % 100), format!("svc-{changed}"))]);
    let mut store = snapshot.clone();
    let mut generation = 0u8;
    group.sample_size(50);
    group.bench_function("endpoint_change", |b| {
        b.iter(|| {
            generation = (generation + 1) % 4;
            store.endpoint_slices[changed] =
                Arc::new(fixtures::slice(changed, PODS_PER_SERVICE, generation).into());
            let current = store.clone();
            publisher.update_endpoints(&current, &service);
        })
    });
    group.finish();
    let route = table.load();
    let route = route
        .route(&format!("app-{changed}.example.com"), "/")
        .unwrap();
    assert_eq!(route.backend.endpoints().len(), PODS_PER_SERVICE);
}

criterion_group!(benches, bench);
criterion_main!(benches);
