//! `Backend::pick`: the cost of choosing an endpoint, for 3, 100 and 1,000
//! endpoints, single-threaded and with two threads picking from the same backend
//! at once, for peak-EWMA P2C next to plain round-robin.
//!
//! Run: `cargo bench --bench balance`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice::balance::policy::{Algorithm, BalancePolicy};
use sluice::balance::window::Outcome;
use sluice::balance::ThreadRandom;
use sluice::config::PoolConfig;
use sluice::discovery::Retained;
use sluice::routing::{Backend, BackendRef, Endpoint, Protocol};

fn backend(n: usize, registry: &Retained) -> Arc<Backend> {
    let endpoints = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080));
            Endpoint {
                state: registry.endpoints(&"default".into(), &[addr], Protocol::Http1)[0].clone(),
            }
        })
        .collect();
    let name = BackendRef {
        namespace: "bench".into(),
        service: "app".into(),
        port: "80".into(),
        via_service_ip: false,
    };
    Arc::new(Backend::new(
        name,
        Protocol::Http1,
        endpoints,
        Arc::default(),
    ))
}

fn pick(backend: &Backend, policy: &BalancePolicy) -> Option<sluice::routing::Pick> {
    backend.pick(
        policy,
        None,
        &[],
        tokio::time::Instant::now(),
        &mut ThreadRandom,
    )
}

fn policy(algorithm: Algorithm) -> BalancePolicy {
    BalancePolicy {
        algorithm,
        slow_start: Duration::ZERO,
        ..BalancePolicy::default()
    }
}

fn bench(c: &mut Criterion) {
    // Tokio's clock, used by the balancer, needs no runtime when not paused.
    let registry = Retained::new(PoolConfig::default());
    let mut group = c.benchmark_group("pick_endpoint");
    for n in [3usize, 100, 1000] {
        let backend = backend(n, &registry);
        for (name, algorithm) in [
            ("ewma", Algorithm::Ewma),
            ("round_robin", Algorithm::RoundRobin),
        ] {
            let policy = policy(algorithm);
            // Give every endpoint a latency estimate, as in steady state.
            for _ in 0..n * 2 {
                let pick = pick(&backend, &policy).unwrap();
                backend.record(
                    &policy,
                    &pick,
                    Outcome::Response(200),
                    Duration::from_micros(500 + fastrand::u64(..500)),
                    tokio::time::Instant::now(),
                    &mut ThreadRandom,
                );
            }
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/1_thread"), n),
                &n,
                |b, _| b.iter(|| black_box(pick(&backend, &policy))),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/2_threads"), n),
                &n,
                |b, _| {
                    b.iter_custom(|iters| {
                        let barrier = Arc::new(Barrier::new(2));
                        let other = {
                            let (backend, policy, barrier) =
                                (backend.clone(), policy.clone(), barrier.clone());
                            std::thread::spawn(move || {
                                barrier.wait();
                                for _ in 0..iters {
                                    black_box(pick(&backend, &policy));
                                }
                            })
                        };
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(pick(&backend, &policy));
                        }
                        let elapsed = start.elapsed();
                        other.join().unwrap();
                        elapsed
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
