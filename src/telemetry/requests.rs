//! Per-route request metrics, resolved ahead of the request path.
//!
//! Each route (and its canary side) owns one `RequestMetrics`: a slot per
//! (method, status class) holding the counter handle, created on first use, and a
//! latency histogram. Recording a request is then an index computation and an
//! atomic add: no label set is hashed or allocated per request.
//!
//! Statuses are counted by class (`2xx`...): bounded cardinality whatever the
//! applications answer.

use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use metrics::{Counter, Histogram, Label};

use super::{REQUESTS, REQUEST_DURATION};

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug)]
pub struct RequestMetrics {
    labels: Vec<Label>,
    counters: [OnceLock<Counter>; METHODS.len() * CLASSES.len()],
    duration: Histogram,
}

impl RequestMetrics {
    pub fn new(namespace: &str, ingress: &str, service: &str, canary: bool) -> RequestMetrics {
        let labels = vec![
            Label::new("namespace", namespace.to_owned()),
            Label::new("ingress", ingress.to_owned()),
            Label::new("service", service.to_owned()),
            Label::new("canary", if canary { "true" } else { "false" }),
        ];
        let duration = metrics::histogram!(REQUEST_DURATION, labels.clone());
        RequestMetrics {
            labels,
            counters: std::array::from_fn(|_| OnceLock::new()),
            duration,
        }
    }

    pub fn record(&self, method: &Method, status: StatusCode, duration: Duration) {
        let method_index = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let class_index = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let slot = &self.counters[method_index * CLASSES.len() + class_index];
        slot.get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.push(Label::new("method", METHODS[method_index]));
            labels.push(Label::new("status", CLASSES[class_index]));
            metrics::counter!(REQUESTS, labels)
        })
        .increment(1);
        self.duration.record(duration.as_secs_f64());
    }
}
