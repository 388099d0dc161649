//! Route lookup in a table of 10,000 hosts and 50,000 paths (five per host:
//! `/`, `/api`, `/api/v1`, `/static` and an Exact `/login`), the per-request
//! cost of finding where a request goes.
//!
//! Run: `cargo bench --bench routing`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::config::PoolConfig;
use sluice::discovery::{translate, LastGood, Retained, Snapshot, TranslateOptions};
use std::hint::black_box;

const HOSTS: usize = 10_000;
const PATHS: [(&str, &str); 5] = [
    ("/", "Prefix"),
    ("/api", "Prefix"),
    ("/api/v1", "Prefix"),
    ("/static", "Prefix"),
    ("/login", "Exact"),
];

fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.ingress_classes.push(fixtures::sluice_class());
    for i in 0..HOSTS {
        snapshot.ingresses.push(fixtures::ingress(
            &format!("ing-{i}"),
            "default",
            &format!("app-{i}.example.com"),
            &format!("svc-{i}"),
            &PATHS,
        ));
    }
    snapshot
}

fn bench(c: &mut Criterion) {
    let registry = Retained::new(PoolConfig::default());
    let translation = translate(
        &snapshot(),
        &TranslateOptions::default(),
        &registry,
        &LastGood::default(),
    );
    let table = translation.table;
    assert_eq!(table.stats.routes, HOSTS * PATHS.len());
    let mut group = c.benchmark_group("route_lookup");
    for (name, host, path) in [
        ("prefix_root", "app-4242.example.com", "/index.html"),
        ("prefix_deep", "app-4242.example.com", "/api/v1/users/42"),
        ("exact", "app-4242.example.com", "/login"),
        ("host_with_port", "app-4242.example.com:8080", "/api/orders"),
        ("unknown_host", "nowhere.example.org", "/api"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| table.route(black_box(host), black_box(path)).is_some());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
