//! Balancing, simulated: pods with jittered latencies, clients that send one
//! request after another, and the real `pick` and `record` in between. The clock
//! and the randomness are the simulation's, so every run is the same on any
//! machine; several seeds stand for several runs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::pick::{pick, record, Candidate, Ring};
use super::policy::BalancePolicy;
use super::window::Outcome;
use super::{BackendStats, EndpointStats};

/// A simulated pod; also the candidate `pick`'s own tests use.
pub(super) struct Pod {
    pub(super) addr: SocketAddr,
    pub(super) stats: EndpointStats,
    /// Mean latency; each answer takes 0.5x to 1.5x of it.
    mean: Duration,
}

/// Pod `i` (at 10.0.0.i+1), known since `since`.
pub(super) fn pod(i: usize, since: Instant, mean: Duration) -> Pod {
    Pod {
        addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
        stats: EndpointStats::new(since),
        mean,
    }
}

impl Candidate for Pod {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn stats(&self) -> &EndpointStats {
        &self.stats
    }
}

struct Sim {
    pods: Vec<Pod>,
    backend: BackendStats,
    ring: Ring,
    policy: BalancePolicy,
    now: Instant,
    random: fastrand::Rng,
}

impl Sim {
    fn new(means_ms: &[u64], seed: u64) -> Sim {
        let start = Instant::now();
        Sim {
            pods: means_ms
                .iter()
                .enumerate()
                .map(|(i, &ms)| pod(i, start, Duration::from_millis(ms)))
                .collect(),
            backend: BackendStats::new(0, start),
            ring: Ring::default(),
            policy: BalancePolicy {
                slow_start: Duration::ZERO,
                ..BalancePolicy::default()
            },
            now: start,
            random: fastrand::Rng::with_seed(seed),
        }
    }

    /// `requests` requests from `clients` clients, each sending its next as soon
    /// as its last is answered. Returns how many each pod got.
    fn run(&mut self, requests: usize, clients: usize) -> Vec<usize> {
        let mut counts = vec![0; self.pods.len()];
        // (finish time, pod, took, probe), earliest first.
        let mut in_flight = BinaryHeap::new();
        let mut sent = 0;
        for _ in 0..clients.min(requests) {
            self.send(&mut in_flight, &mut counts);
            sent += 1;
        }
        while let Some(Reverse((finish, pod, took, probe))) = in_flight.pop() {
            self.now = finish;
            let endpoint = &self.pods[pod];
            endpoint.stats.end_request();
            let pods = &self.pods;
            let _ = record(
                endpoint,
                || pods.as_slice(),
                &self.backend,
                &self.policy,
                probe,
                Outcome::Response(200),
                took,
                self.now,
                &mut self.random,
            );
            if sent < requests {
                self.send(&mut in_flight, &mut counts);
                sent += 1;
            }
        }
        counts
    }

    fn send(
        &mut self,
        in_flight: &mut BinaryHeap<Reverse<(Instant, usize, Duration, bool)>>,
        counts: &mut [usize],
    ) {
        let choice = pick(
            &self.pods,
            &self.ring,
            &self.backend,
            &self.policy,
            None,
            &[],
            self.now,
            &mut self.random,
        )
        .unwrap();
        let pod = &self.pods[choice.index];
        pod.stats.begin_request();
        counts[choice.index] += 1;
        let took = pod.mean.mul_f64(0.5 + self.random.f64());
        in_flight.push(Reverse((self.now + took, choice.index, took, choice.probe)));
    }

    /// Time passes with no traffic.
    fn idle(&mut self, time: Duration) {
        self.now += time;
    }
}

/// Every count within `low..=high` times the fair share of `total / n`.
fn even(counts: &[usize], low: f64, high: f64) -> bool {
    let fair = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    counts
        .iter()
        .all(|&c| (low * fair..=high * fair).contains(&(c as f64)))
}

const SEEDS: std::ops::Range<u64> = 1..21;

#[test]
fn identical_pods_get_even_shares() {
    for seed in SEEDS {
        for clients in [1, 8] {
            let mut sim = Sim::new(&[4; 10], seed);
            let counts = sim.run(2_000, clients);
            assert!(
                even(&counts, 0.75, 1.25),
                "seed {seed}, {clients} in flight: {counts:?}"
            );
        }
    }
}

#[test]
fn a_hundred_sequential_requests_reach_every_pod() {
    for seed in SEEDS {
        let mut sim = Sim::new(&[4; 10], seed);
        let counts = sim.run(100, 1);
        assert!(counts.iter().all(|&c| c > 0), "seed {seed}: {counts:?}");
    }
}

#[test]
fn a_slow_pod_is_avoided_and_returns_when_it_recovers() {
    for seed in SEEDS {
        let mut means = [4; 10];
        means[0] = 40;
        let mut sim = Sim::new(&means, seed);
        sim.run(500, 8); // learn
        let counts = sim.run(2_000, 8);
        let total: usize = counts.iter().sum();
        assert!(
            (counts[0] as f64) < 0.05 * total as f64,
            "seed {seed}: the slow pod {counts:?}"
        );
        let fair = total as f64 / 10.0;
        assert!(
            counts[1..].iter().all(|&c| c as f64 >= 0.5 * fair),
            "seed {seed}: {counts:?}"
        );

        // It recovers. A few decay windows later (quiet or busy), its share is fair.
        sim.pods[0].mean = Duration::from_millis(4);
        sim.idle(sim.policy.decay * 3);
        sim.run(2_000, 8);
        let counts = sim.run(2_000, 8);
        assert!(
            even(&counts, 0.75, 1.25),
            "seed {seed}, recovered: {counts:?}"
        );
    }
}

/// A table rebuilt in the middle hands the same states back, maybe in another
/// order: shares stay even.
#[test]
fn a_rebuild_in_the_middle_changes_nothing() {
    for seed in SEEDS {
        let mut sim = Sim::new(&[4; 10], seed);
        let mut counts = sim.run(1_000, 8);
        sim.pods.reverse();
        counts.reverse();
        sim.ring = Ring::default();
        let more = sim.run(1_000, 8);
        for (c, m) in counts.iter_mut().zip(more) {
            *c += m;
        }
        assert!(even(&counts, 0.75, 1.25), "seed {seed}: {counts:?}");
    }
}
