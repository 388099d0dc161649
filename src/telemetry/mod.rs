//! Metrics: the names (one place for all of them) and the Prometheus recorder
//! that `/metrics` renders. Everything sluice counts goes through the `metrics`
//! facade, so recording is a handle update, not a registry lookup per event.

pub mod access_log;
pub mod requests;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

// Requests.
pub const REQUESTS: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";

pub const ACCESS_LOG_DROPPED: &str = "sluice_access_log_dropped_total";

// Control plane.
pub const CONFIG_SWAPS: &str = "sluice_config_swaps_total";
pub const CONFIG_LAST_SWAP_SUCCESS: &str = "sluice_config_last_swap_success";
pub const CONFIG_LAST_SWAP_TIMESTAMP: &str = "sluice_config_last_swap_timestamp_seconds";
pub const CONFIG_BUILD_DURATION: &str = "sluice_config_build_duration_seconds";
pub const ENDPOINT_UPDATES: &str = "sluice_endpoint_updates_total";
pub const TABLE_ROUTES: &str = "sluice_table_routes";
pub const TABLE_BACKENDS: &str = "sluice_table_backends";
pub const TABLE_ENDPOINTS: &str = "sluice_table_endpoints";
/// Current warnings (skipped Ingresses, rules, files) by reason.
pub const CONFIG_WARNINGS: &str = "sluice_config_warnings";
pub const WATCH_ERRORS: &str = "sluice_watch_errors_total";
pub const CONFIG_RELOADS: &str = "sluice_config_file_reloads_total";

// Balancing and retries.
pub const BALANCER_PANICS: &str = "sluice_balancer_panic_total";
pub const BREAKER_TRANSITIONS: &str = "sluice_breaker_transitions_total";
pub const RETRIES: &str = "sluice_retries_total";
pub const RETRIES_DENIED: &str = "sluice_retries_denied_total";

// Policies.
pub const RATE_LIMITED: &str = "sluice_rate_limited_total";
pub const CANARY_REQUESTS: &str = "sluice_canary_requests_total";

// TLS.
pub const TLS_HANDSHAKES: &str = "sluice_tls_handshakes_total";
pub const TLS_CERT_EXPIRY: &str = "sluice_tls_certificate_expiry_timestamp_seconds";

/// Seconds, 5 ms to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Seconds; from 100 µs (an endpoint update) to 10 s (a huge rebuild).
const BUILD_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(CONFIG_BUILD_DURATION.into()),
                BUILD_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(REQUEST_DURATION.into()),
                    REQUEST_BUCKETS,
                )
            })
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if something else installed a recorder first; then our
        // handle renders nothing, which is visible, not fatal.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "Requests by Ingress, Service, method, status class and canary."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time to the response head, by Ingress, Service and canary."
    );
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "Access log lines dropped because the writer fell behind."
    );
    describe_counter!(CONFIG_SWAPS, "Routing tables published (full rebuilds).");
    describe_gauge!(
        CONFIG_LAST_SWAP_SUCCESS,
        "1 if the last rebuild was published."
    );
    describe_gauge!(
        CONFIG_LAST_SWAP_TIMESTAMP,
        Unit::Seconds,
        "When the last table was published (Unix time)."
    );
    describe_histogram!(
        CONFIG_BUILD_DURATION,
        Unit::Seconds,
        "Time to translate objects into a routing table."
    );
    describe_counter!(
        ENDPOINT_UPDATES,
        "In-place endpoint updates after pod changes."
    );
    describe_gauge!(TABLE_ROUTES, "Routes in the current table.");
    describe_gauge!(
        TABLE_BACKENDS,
        "Backends (Service ports) in the current table."
    );
    describe_gauge!(TABLE_ENDPOINTS, "Ready endpoints in the current table.");
    describe_gauge!(
        CONFIG_WARNINGS,
        "Current warnings: skipped Ingresses, rules and files, by reason."
    );
    describe_counter!(
        WATCH_ERRORS,
        "Kubernetes watch failures (each is retried with backoff)."
    );
    describe_counter!(CONFIG_RELOADS, "Config file reloads, by result.");
    describe_counter!(
        BALANCER_PANICS,
        "Requests sent while every endpoint of the backend was ejected."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Circuit breaker transitions, by new state (denied: the ejection limit held)."
    );
    describe_counter!(RETRIES, "Requests sent again to another endpoint.");
    describe_counter!(
        RETRIES_DENIED,
        "Retries refused by the backend's retry budget."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by an Ingress's rate limit, by Ingress."
    );
    describe_counter!(
        CANARY_REQUESTS,
        "Requests sent to a canary, by canary Ingress."
    );
    describe_counter!(
        TLS_HANDSHAKES,
        "TLS handshakes by result and protocol version."
    );
    describe_gauge!(
        TLS_CERT_EXPIRY,
        Unit::Seconds,
        "When each served certificate expires (Unix time), by host and Secret."
    );
}
