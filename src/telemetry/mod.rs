//! Layer 0, a leaf. Metrics: the names (one place for all of them) and the Prometheus recorder
//! that `/metrics` renders. Everything sluice counts goes through the `metrics`
//! facade, so recording is a handle update, not a registry lookup per event.

pub mod access_log;
pub mod connections;
pub mod requests;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Requests.
pub const REQUESTS: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub const UPSTREAM_RESPONSE_DURATION: &str = "sluice_upstream_response_duration_seconds";
pub const UPSTREAM_CONNECT_DURATION: &str = "sluice_upstream_connect_duration_seconds";
pub const REQUEST_SIZE: &str = "sluice_request_size_bytes";
pub const RESPONSE_SIZE: &str = "sluice_response_size_bytes";
/// Request bodies read whole before going upstream, by where they went
/// (`memory`, `file`, or `streamed` when the spool could not take them).
pub const REQUEST_BODIES_BUFFERED: &str = "sluice_request_bodies_buffered_total";
/// `mirror-target` copies, by `result`: `answered`, `failed`, or `dropped`
/// (too many in flight).
pub const MIRROR_REQUESTS: &str = "sluice_mirror_requests_total";

// Connections.
pub const DOWNSTREAM_CONNECTIONS: &str = "sluice_downstream_connections";
pub const DOWNSTREAM_CONNECTIONS_REFUSED: &str = "sluice_downstream_connections_refused_total";
pub const UPSTREAM_CONNECTIONS_OPEN: &str = "sluice_upstream_connections_open";
pub const UPSTREAM_CONNECTION_USES: &str = "sluice_upstream_connection_uses_total";
pub const UPSTREAM_CONNECTIONS_IDLE: &str = "sluice_upstream_connections_idle";

// Per endpoint, read from the table at scrape time (see `endpoints`).
pub const ENDPOINT_LATENCY_EWMA: &str = "sluice_endpoint_latency_ewma_seconds";
pub const ENDPOINT_IN_FLIGHT: &str = "sluice_endpoint_in_flight";
pub const ENDPOINT_BREAKER_STATE: &str = "sluice_endpoint_breaker_state";

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
pub const BREAKER_TRIPS: &str = "sluice_breaker_trips_total";
pub const RETRIES: &str = "sluice_retries_total";
pub const RETRIES_DENIED: &str = "sluice_retries_denied_total";

// Policies.
pub const RATE_LIMITED: &str = "sluice_rate_limited_total";
/// `auth-url` answers, by `result`: `allowed`, `denied` (401, 403), `error`.
pub const AUTH_REQUESTS: &str = "sluice_auth_requests_total";
pub const AUTH_DURATION: &str = "sluice_auth_request_duration_seconds";
pub const CANARY_REQUESTS: &str = "sluice_canary_requests_total";

// TLS.
pub const TLS_HANDSHAKES: &str = "sluice_tls_handshakes_total";
/// Client certificates judged (`auth-tls-*`), by `result`: `success`,
/// `failed`, `none`.
pub const TLS_CLIENT_CERTIFICATES: &str = "sluice_tls_client_certificates_total";
pub const TLS_CERT_EXPIRY: &str = "sluice_tls_certificate_expiry_timestamp_seconds";
/// Failed TLS handshakes with pods, by reason.
pub const UPSTREAM_TLS_FAILURES: &str = "sluice_upstream_tls_handshake_failures_total";

/// Every family sluice exports, for checks of dashboards and alerts.
pub const FAMILIES: &[&str] = &[
    REQUESTS,
    REQUEST_DURATION,
    UPSTREAM_RESPONSE_DURATION,
    UPSTREAM_CONNECT_DURATION,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    REQUEST_BODIES_BUFFERED,
    MIRROR_REQUESTS,
    DOWNSTREAM_CONNECTIONS,
    DOWNSTREAM_CONNECTIONS_REFUSED,
    UPSTREAM_CONNECTIONS_OPEN,
    UPSTREAM_CONNECTION_USES,
    UPSTREAM_CONNECTIONS_IDLE,
    ENDPOINT_LATENCY_EWMA,
    ENDPOINT_IN_FLIGHT,
    ENDPOINT_BREAKER_STATE,
    ACCESS_LOG_DROPPED,
    CONFIG_SWAPS,
    CONFIG_LAST_SWAP_SUCCESS,
    CONFIG_LAST_SWAP_TIMESTAMP,
    CONFIG_BUILD_DURATION,
    ENDPOINT_UPDATES,
    TABLE_ROUTES,
    TABLE_BACKENDS,
    TABLE_ENDPOINTS,
    CONFIG_WARNINGS,
    WATCH_ERRORS,
    CONFIG_RELOADS,
    BALANCER_PANICS,
    BREAKER_TRANSITIONS,
    BREAKER_TRIPS,
    RETRIES,
    RETRIES_DENIED,
    RATE_LIMITED,
    AUTH_REQUESTS,
    AUTH_DURATION,
    CANARY_REQUESTS,
    TLS_HANDSHAKES,
    TLS_CLIENT_CERTIFICATES,
    TLS_CERT_EXPIRY,
    UPSTREAM_TLS_FAILURES,
];

/// Seconds, 5 ms to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Seconds, 0.5 ms (a connect on the node's network) to 5 s.
const CONNECT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Bytes, 64 B to 64 MiB by factors of 4.
const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// How often histogram samples are folded into their buckets between scrapes:
/// the recorder keeps raw samples until then, so without this, memory grows with
/// traffic when nobody scrapes.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Seconds; from 100 µs (an endpoint update) to 10 s (a huge rebuild).
const BUILD_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let buckets = [
            (CONFIG_BUILD_DURATION, BUILD_BUCKETS),
            (REQUEST_DURATION, REQUEST_BUCKETS),
            (UPSTREAM_RESPONSE_DURATION, REQUEST_BUCKETS),
            (AUTH_DURATION, REQUEST_BUCKETS),
            (UPSTREAM_CONNECT_DURATION, CONNECT_BUCKETS),
            (REQUEST_SIZE, SIZE_BUCKETS),
            (RESPONSE_SIZE, SIZE_BUCKETS),
        ];
        let recorder = buckets
            .iter()
            .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
                builder.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
            })
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the metrics upkeep thread");
        }
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
        "Requests by Ingress, Service, method, status (code or class) and canary; empty Ingress: no route matched."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time to the response head, by Ingress, Service and canary."
    );
    describe_histogram!(
        UPSTREAM_RESPONSE_DURATION,
        Unit::Seconds,
        "Each upstream attempt, from picking the pod to its response head."
    );
    describe_histogram!(
        UPSTREAM_CONNECT_DURATION,
        Unit::Seconds,
        "New upstream connections: TCP connect (and h2c handshake)."
    );
    describe_histogram!(
        REQUEST_SIZE,
        Unit::Bytes,
        "Request body bytes received from clients."
    );
    describe_histogram!(
        RESPONSE_SIZE,
        Unit::Bytes,
        "Response body bytes sent to clients."
    );
    describe_gauge!(
        DOWNSTREAM_CONNECTIONS,
        "Open client connections by protocol: http1 and h2c in plaintext, tls (HTTP/1.1) and h2 over TLS."
    );
    describe_counter!(
        DOWNSTREAM_CONNECTIONS_REFUSED,
        "Client connections closed at once: max-worker-connections were open, or no first bytes came within client-header-timeout."
    );
    describe_gauge!(
        UPSTREAM_CONNECTIONS_OPEN,
        "Open upstream connections by protocol (in use or idle)."
    );
    describe_counter!(
        UPSTREAM_CONNECTION_USES,
        "Upstream HTTP/1.1 requests by connection: new or reused from the keep-alive pool."
    );
    describe_counter!(
        BREAKER_TRIPS,
        "Circuit breakers opened, by backend (namespace, service)."
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
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads (the file, or the --configmap ConfigMap), by result."
    );
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
        AUTH_REQUESTS,
        "Requests asked of an auth-url service, by result (allowed, denied, error)."
    );
    describe_histogram!(
        AUTH_DURATION,
        Unit::Seconds,
        "Time an auth-url service took to answer."
    );
    describe_counter!(
        REQUEST_BODIES_BUFFERED,
        "Request bodies read whole before going to a pod, by where they went (memory, file, streamed)."
    );
    describe_counter!(
        MIRROR_REQUESTS,
        "mirror-target copies, by result (answered, failed, dropped)."
    );
    describe_counter!(
        CANARY_REQUESTS,
        "Requests sent to a canary, by canary Ingress."
    );
    describe_counter!(
        TLS_HANDSHAKES,
        "TLS handshakes by result and protocol version."
    );
    describe_counter!(
        TLS_CLIENT_CERTIFICATES,
        "Client certificates judged after handshakes for hosts that ask for them, by result (success, failed, none)."
    );
    describe_counter!(
        UPSTREAM_TLS_FAILURES,
        "Failed TLS handshakes with pods, by reason (certificate, protocol, io)."
    );
    describe_gauge!(
        TLS_CERT_EXPIRY,
        Unit::Seconds,
        "When each served certificate expires (Unix time), by host and Secret."
    );
}
