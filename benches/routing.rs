//! Route lookup in a table of 10,000 hosts and 50,000 paths (five per host:
//! `/`, `/api`, `/api/v1`, `/static` and an Exact `/login`), the per-request
//! cost of finding where a request goes.
//!
//! And one host with 1,000 paths, as `Prefix` paths and as ingress-nginx's
//! regex paths (`use-regex`), which are compiled into one set per host.
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

/// One host with 1,000 paths: `/app-N` as `Prefix`, or `/app-N/[0-9]+` as
/// regular expressions.
fn many_paths(regex: bool) -> sluice::routing::RoutingTable {
    let paths: Vec<(String, &str)> = (0..1_000)
        .map(|i| match regex {
            false => (format!("/app-{i}"), "Prefix"),
            true => (format!("/app-{i}/[0-9]+"), "ImplementationSpecific"),
        })
        .collect();
    let paths: Vec<(&str, &str)> = paths.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    let mut ingress = fixtures::ingress("many", "default", "many.example.com", "svc", &paths);
    if regex {
        let annotations = [(
            "nginx.ingress.kubernetes.io/use-regex".to_owned(),
            "true".to_owned(),
        )];
        std::sync::Arc::make_mut(&mut ingress).metadata.annotations = Some(annotations.into());
    }
    let mut snapshot = Snapshot::default();
    snapshot.ingress_classes.push(fixtures::sluice_class());
    snapshot.ingresses.push(ingress);
    let registry = Retained::new(PoolConfig::default());
    let translation = translate(
        &snapshot,
        &TranslateOptions::default(),
        &registry,
        &LastGood::default(),
    );
    assert_eq!(translation.table.stats.routes, 1_000);
    translation.table
}

fn bench_many_paths(c: &mut Criterion) {
    let prefix = many_paths(false);
    let regex = many_paths(true);
    let mut group = c.benchmark_group("one_host_1000_paths");
    for (name, table, path) in [
        ("prefix_hit_middle", &prefix, "/app-500/123"),
        ("prefix_miss", &prefix, "/nothing/here"),
        ("regex_hit_middle", &regex, "/app-500/123"),
        ("regex_miss", &regex, "/nothing/here"),
    ] {
        assert_eq!(
            table.route("many.example.com", path).is_some(),
            name.contains("hit"),
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                table
                    .route(black_box("many.example.com"), black_box(path))
                    .is_some()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_many_paths);
criterion_main!(benches);
