//! The admission webhook's decision at scale: 10,000 Ingresses, 10,000
//! Services, 100,000 endpoints. Each iteration does what the webhook does for
//! one review: takes the part of the publisher's snapshot that can change the
//! verdict and judges the object against it (`discovery::admission`).
//!
//! * `update_allowed`: an UPDATE of one Ingress adding a path, allowed.
//! * `create_conflicting`: a CREATE in another namespace of a host and path
//!   an older Ingress serves, denied.
//! * `update_allowed_whole_snapshot`: the first, judged against the whole
//!   snapshot instead of its scope: what the webhook did before, for the
//!   ratio.
//!
//! Run: `cargo bench --bench admission`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use sluice::config::PoolConfig;
use sluice::discovery::admission::Review;
use sluice::discovery::{Publisher, Retained, TranslateOptions};
use sluice::lifecycle::Lifecycle;
use sluice::routing::RoutingTable;

const SERVICES: usize = 10_000;
const PODS_PER_SERVICE: usize = 10;

/// The `request` of an AdmissionReview for an Ingress routing `host` to
/// `service` on `paths`.
fn review(
    operation: &str,
    namespace: &str,
    name: &str,
    host: &str,
    service: &str,
    paths: &[&str],
) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|path| {
            json!({"path": path, "pathType": "Prefix",
                   "backend": {"service": {"name": service, "port": {"number": 80}}}})
        })
        .collect();
    json!({
        "uid": "4242",
        "operation": operation,
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
        "namespace": namespace,
        "object": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"ingressClassName": "sluice",
                     "rules": [{"host": host, "http": {"paths": paths}}]},
        },
    })
}

fn bench(c: &mut Criterion) {
    let snapshot = fixtures::scale_snapshot(SERVICES, PODS_PER_SERVICE);
    let table = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
    let publisher = Publisher::new(
        table,
        Arc::new(Retained::new(PoolConfig::default())),
        TranslateOptions::default(),
        Arc::new(Lifecycle::default()),
    );
    publisher.publish(&snapshot, &[]);

    let update = review(
        "UPDATE",
        "ns-42",
        "ing-4242",
        "app-4242.example.com",
        "svc-4242",
        &["/", "/v2"],
    );
    let conflicting = review(
        "CREATE",
        "ns-7",
        "taker",
        "app-4242.example.com",
        "svc-7",
        &["/"],
    );
    // What the webhook does with a review's request.
    let judge = |request: &Value| {
        let review = Review::read(request).unwrap_or_else(|_| panic!("unread"));
        let (snapshot, options) = publisher.admission_scope(&review).unwrap();
        review.judge(snapshot, &options)
    };
    // The verdicts the timings are for.
    let allowed = judge(&update);
    assert!(allowed.allowed, "{allowed:?}");
    let denied = judge(&conflicting);
    assert!(!denied.allowed, "{denied:?}");
    assert!(denied.message.contains("conflict"), "{denied:?}");

    let mut group = c.benchmark_group("admission");
    group.sample_size(20);
    group.bench_function("update_allowed", |b| b.iter(|| black_box(judge(&update))));
    group.bench_function("create_conflicting", |b| {
        b.iter(|| black_box(judge(&conflicting)))
    });
    // The reference: the same review judged against every Ingress.
    let mut whole = snapshot.clone();
    let index = whole
        .ingresses
        .iter()
        .position(|i| i.metadata.name.as_deref() == Some("ing-4242"))
        .unwrap();
    whole.ingresses[index] = Arc::new(serde_json::from_value(update["object"].clone()).unwrap());
    let review = Review::read(&update).unwrap_or_else(|_| panic!("unread"));
    let options = TranslateOptions::default();
    assert_eq!(review.judge(whole.clone(), &options), allowed);
    group.bench_function("update_allowed_whole_snapshot", |b| {
        b.iter(|| black_box(review.judge(whole.clone(), &options)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
