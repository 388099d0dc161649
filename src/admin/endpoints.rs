//! What each endpoint looks like to the balancer right now: read at scrape time
//! (and by the admin API) from the live table, so the request path pays nothing
//! for these gauges and endpoints that leave the table leave the scrape with it.

use std::fmt::Write as _;

use tokio::time::Instant;

use crate::balance::breaker::BreakerState;
use crate::balance::pick::DEFAULT_LATENCY;
use crate::balance::policy::DEFAULT_DECAY;
use crate::routing::{Backend, RoutingTable};

use crate::telemetry::{
    ENDPOINT_BREAKER_STATE, ENDPOINT_IN_FLIGHT, ENDPOINT_LATENCY_EWMA, UPSTREAM_CONNECTIONS_IDLE,
};

/// One endpoint of a backend, as of now.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    pub address: String,
    /// The latency estimate the balancer compares (`balance::ewma`).
    pub ewma_seconds: f64,
    pub in_flight: u32,
    pub breaker: BreakerState,
    /// Requests in the breaker's window (about the last 10 s).
    pub recent_requests: f64,
    /// This endpoint's part of the backend's recent requests (0 to 1).
    pub share: f64,
    pub idle_connections: usize,
}

pub fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Open => "open",
    }
}

pub fn view(backend: &Backend) -> Vec<EndpointView> {
    let now = Instant::now();
    let set = backend.endpoint_set();
    let typical = backend.state.stats.typical_latency(now, DEFAULT_LATENCY);
    let mut views: Vec<EndpointView> = set
        .endpoints
        .iter()
        .map(|e| {
            let stats = &e.state.stats;
            let nanos = stats.nanos(now);
            EndpointView {
                address: e.addr().to_string(),
                ewma_seconds: stats.latency.estimate(nanos, DEFAULT_DECAY, typical) / 1e9,
                in_flight: stats.in_flight(),
                breaker: stats.breaker.state(),
                recent_requests: stats.breaker.recent_requests(nanos),
                share: 0.0,
                idle_connections: e.state.idle_connections(),
            }
        })
        .collect();
    let total: f64 = views.iter().map(|v| v.recent_requests).sum();
    if total > 0.0 {
        for v in &mut views {
            v.share = v.recent_requests / total;
        }
    }
    views
}

/// The per-endpoint gauge families, in Prometheus' text format, appended to the
/// recorder's output on each scrape.
pub fn render(table: &RoutingTable, out: &mut String) {
    const FAMILIES: [(&str, &str); 4] = [
        (
            ENDPOINT_LATENCY_EWMA,
            "The balancer's latency estimate of each endpoint.",
        ),
        (ENDPOINT_IN_FLIGHT, "Requests in flight on each endpoint."),
        (
            ENDPOINT_BREAKER_STATE,
            "Each endpoint's circuit breaker: 0 closed, 1 half-open, 2 open (ejected).",
        ),
        (
            UPSTREAM_CONNECTIONS_IDLE,
            "Idle keep-alive connections pooled for each endpoint.",
        ),
    ];
    let mut samples: [String; 4] = Default::default();
    for backend in table.backends() {
        let name = &backend.name;
        for v in view(backend) {
            let labels = format!(
                "namespace=\"{}\",service=\"{}\",port=\"{}\",endpoint=\"{}\"",
                escape(&name.namespace),
                escape(&name.service),
                escape(&name.port),
                v.address
            );
            let breaker = match v.breaker {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            let _ = writeln!(
                samples[0],
                "{}{{{labels}}} {}",
                FAMILIES[0].0, v.ewma_seconds
            );
            let _ = writeln!(samples[1], "{}{{{labels}}} {}", FAMILIES[1].0, v.in_flight);
            let _ = writeln!(samples[2], "{}{{{labels}}} {breaker}", FAMILIES[2].0);
            let _ = writeln!(
                samples[3],
                "{}{{{labels}}} {}",
                FAMILIES[3].0, v.idle_connections
            );
        }
    }
    for ((name, help), samples) in FAMILIES.iter().zip(&samples) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{samples}");
    }
}

/// Label values in the text format escape backslash, quote and newline.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}
