//! Per-route request metrics, resolved ahead of the request path.
//!
//! Each route (and its canary side) owns one `RequestMetrics`, labelled
//! `namespace`, `ingress`, `service` and `canary` when the table is built. Its
//! histogram handles are resolved on the route's first request, and each
//! (method, status) counter on its first occurrence; after that, recording is a
//! short scan of a few slots and atomic adds: no label set is hashed or allocated
//! per request. Requests that match no route share one instance with empty labels.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, StatusCode};
use metrics::{Counter, Histogram, Label};
use serde::{Deserialize, Serialize};

use super::{
    REQUESTS, REQUEST_DURATION, REQUEST_SIZE, RESPONSE_SIZE, UPSTREAM_CONNECT_DURATION,
    UPSTREAM_RESPONSE_DURATION,
};

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What the `status` label holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusLabel {
    /// The code (`200`, `503`).
    #[default]
    Code,
    /// The class (`2xx`, `5xx`): bounded cardinality whatever the applications answer.
    Class,
}

/// How requests are counted; from the config file, fixed per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricsOptions {
    /// Off: routes record nothing (to measure what recording costs).
    pub enabled: bool,
    pub status: StatusLabel,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            enabled: true,
            status: StatusLabel::Code,
        }
    }
}

#[derive(Debug)]
pub struct RequestMetrics {
    options: MetricsOptions,
    labels: Vec<Label>,
    /// (method index, status label) -> counter. Copied on the rare insert, so
    /// readers never lock.
    counters: ArcSwap<Vec<(u16, u16, Counter)>>,
    histograms: OnceLock<Histograms>,
}

#[derive(Debug)]
struct Histograms {
    duration: Histogram,
    upstream_response: Histogram,
    upstream_connect: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

impl RequestMetrics {
    pub fn new(
        namespace: &str,
        ingress: &str,
        service: &str,
        canary: bool,
        options: MetricsOptions,
    ) -> RequestMetrics {
        let labels = vec![
            Label::new("namespace", namespace.to_owned()),
            Label::new("ingress", ingress.to_owned()),
            Label::new("service", service.to_owned()),
            Label::new("canary", if canary { "true" } else { "false" }),
        ];
        RequestMetrics {
            options,
            labels,
            counters: ArcSwap::default(),
            histograms: OnceLock::new(),
        }
    }

    /// For requests that match no route (and problems found before routing).
    pub fn unrouted(options: MetricsOptions) -> Arc<RequestMetrics> {
        Arc::new(RequestMetrics::new("", "", "", false, options))
    }

    fn histograms(&self) -> Option<&Histograms> {
        if !self.options.enabled {
            return None;
        }
        Some(self.histograms.get_or_init(|| {
            let h = |name: &'static str| metrics::histogram!(name, self.labels.clone());
            Histograms {
                duration: h(REQUEST_DURATION),
                upstream_response: h(UPSTREAM_RESPONSE_DURATION),
                upstream_connect: h(UPSTREAM_CONNECT_DURATION),
                request_size: h(REQUEST_SIZE),
                response_size: h(RESPONSE_SIZE),
            }
        }))
    }

    /// A request's answer (its head): the count and the time it took.
    pub fn record(&self, method: &Method, status: StatusCode, duration: Duration) {
        let Some(histograms) = self.histograms() else {
            return;
        };
        histograms.duration.record(duration.as_secs_f64());
        let method = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1) as u16;
        let status = match self.options.status {
            StatusLabel::Code => status.as_u16(),
            StatusLabel::Class => (status.as_u16() / 100).clamp(1, 5),
        };
        let counters = self.counters.load();
        if let Some((_, _, counter)) = counters
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            counter.increment(1);
            return;
        }
        drop(counters);
        self.new_counter(method, status).increment(1);
    }

    /// The first request with this method and status: resolve and keep its counter.
    fn new_counter(&self, method: u16, status: u16) -> Counter {
        let mut labels = self.labels.clone();
        labels.push(Label::new("method", METHODS[usize::from(method)]));
        let status_label = match self.options.status {
            StatusLabel::Code => status.to_string(),
            StatusLabel::Class => CLASSES[usize::from(status.clamp(1, 5)) - 1].to_owned(),
        };
        labels.push(Label::new("status", status_label));
        let counter = metrics::counter!(REQUESTS, labels);
        self.counters.rcu(|counters| {
            let mut counters = Vec::clone(counters);
            if !counters
                .iter()
                .any(|(m, s, _)| *m == method && *s == status)
            {
                counters.push((method, status, counter.clone()));
            }
            counters
        });
        counter
    }

    /// One upstream attempt, from picking the endpoint to its response head.
    pub fn record_upstream_response(&self, duration: Duration) {
        if let Some(h) = self.histograms() {
            h.upstream_response.record(duration.as_secs_f64());
        }
    }

    /// A new upstream connection made for this request (TCP, and the h2 handshake).
    pub fn record_upstream_connect(&self, duration: Duration) {
        if let Some(h) = self.histograms() {
            h.upstream_connect.record(duration.as_secs_f64());
        }
    }

    /// Request body bytes received from the client.
    pub fn record_request_size(&self, bytes: u64) {
        if let Some(h) = self.histograms() {
            h.request_size.record(bytes as f64);
        }
    }

    /// Response body bytes sent to the client.
    pub fn record_response_size(&self, bytes: u64) {
        if let Some(h) = self.histograms() {
            h.response_size.record(bytes as f64);
        }
    }
}

impl Default for RequestMetrics {
    /// The unrouted metrics of an empty table (before the first build).
    fn default() -> Self {
        RequestMetrics::new("", "", "", false, MetricsOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_resolved_once_per_method_and_status() {
        let m = RequestMetrics::new("ns", "ing", "svc", false, MetricsOptions::default());
        for _ in 0..3 {
            m.record(&Method::GET, StatusCode::OK, Duration::ZERO);
            m.record(&Method::GET, StatusCode::NOT_FOUND, Duration::ZERO);
        }
        m.record(
            &Method::from_bytes(b"PURGE").unwrap(),
            StatusCode::OK,
            Duration::ZERO,
        );
        let slots: Vec<(u16, u16)> = m.counters.load().iter().map(|(m, s, _)| (*m, *s)).collect();
        assert_eq!(slots, [(0, 200), (0, 404), (9, 200)]);
    }

    #[test]
    fn classes_bound_the_status_label() {
        let options = MetricsOptions {
            enabled: true,
            status: StatusLabel::Class,
        };
        let m = RequestMetrics::new("ns", "ing", "svc", false, options);
        m.record(&Method::GET, StatusCode::OK, Duration::ZERO);
        m.record(&Method::GET, StatusCode::NO_CONTENT, Duration::ZERO);
        m.record(&Method::GET, StatusCode::BAD_GATEWAY, Duration::ZERO);
        let slots: Vec<u16> = m.counters.load().iter().map(|(_, s, _)| *s).collect();
        assert_eq!(slots, [2, 5]);
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let options = MetricsOptions {
            enabled: false,
            ..MetricsOptions::default()
        };
        let m = RequestMetrics::new("ns", "ing", "svc", false, options);
        m.record(&Method::GET, StatusCode::OK, Duration::ZERO);
        assert!(m.counters.load().is_empty());
        assert!(m.histograms.get().is_none());
    }
}
