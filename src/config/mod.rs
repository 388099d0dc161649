//! Layer 5, under the sources and the pipeline that both read it: the config
//! file, typed. Listen addresses, client connection handling and the global
//! proxy defaults.
//!
//! Keys and defaults follow the ingress-nginx ConfigMap (`proxy-read-timeout`,
//! `upstream-keepalive-connections`, ...) so operators recognise them. Per-Ingress
//! annotations override the proxy defaults; command-line flags override the addresses.
//!
//! Every value is parsed once, when the file is read (a balancer name into an
//! `Algorithm`, a breaker rule into its expression, address lists into
//! `CidrList`s), so a bad value is an error naming its key and nothing parses
//! it again. A reload applies every key except those in `RESTART_ONLY`: those
//! configure what is made once at start, and a reload that changes one says so
//! in the log and in `/api/config` (`ConfigState`).

mod configmap;
mod route_defaults;

pub use configmap::{data_of, ForeignKey};
use route_defaults::parse_header_list;
pub use route_defaults::{parse_secret_ref, parse_status_list, ProxyDefaults};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::balance::expr::BreakerRule;
use crate::balance::policy::{self as balance_policy, Algorithm};
use crate::policy::access::Blocklist;
use crate::policy::canary::CidrList;
use crate::policy::retry::{self, NextUpstream};
use crate::policy::upstream_deny::UpstreamDeny;
use crate::telemetry::requests::{MetricsOptions, StatusLabel};
use crate::units;

pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:80";
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:10254";
pub const DEFAULT_HTTPS_ADDR: &str = "0.0.0.0:443";
/// ingress-nginx's `hsts-max-age`: a year.
pub const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(31_536_000);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BODY_SIZE: u64 = 1 << 20;
pub use crate::upstream::pool::{
    PoolConfig, DEFAULT_UPSTREAM_KEEPALIVE_CONNECTIONS, DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS,
    DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
};
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(75);
pub const DEFAULT_KEEP_ALIVE_REQUESTS: u32 = 1_000;
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 32 << 10;
/// ingress-nginx's `client-header-timeout`.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// ingress-nginx's `max-worker-connections`.
pub const DEFAULT_MAX_WORKER_CONNECTIONS: usize = 16_384;
/// ingress-nginx's `http2-max-concurrent-streams`.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;
pub const DEFAULT_HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// nginx closes a quiet WebSocket after `proxy-read-timeout`; an hour suits
/// WebSockets better while still freeing abandoned ones.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MANIFESTS_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// hyper refuses HTTP/1 read buffers below 8 KiB; a smaller header limit is raised to it.
const MIN_HEADER_SIZE: u64 = 8 << 10;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The config file, flat like the ingress-nginx ConfigMap it mirrors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `namespace/name` of the TLS Secret for handshakes no Ingress covers
    /// (else a self-signed certificate made at start).
    pub default_ssl_certificate: Option<String>,
    /// Send `Strict-Transport-Security` on HTTPS responses.
    pub hsts: bool,
    #[serde(with = "units::duration")]
    pub hsts_max_age: Duration,
    pub hsts_include_subdomains: bool,
    /// Add `preload` to `Strict-Transport-Security`.
    pub hsts_preload: bool,
    /// The default of the `ssl-redirect` annotation: plain HTTP to a TLS host
    /// gets a 308 to HTTPS.
    pub ssl_redirect: bool,
    /// The default of the `force-ssl-redirect` annotation: every plain HTTP
    /// request gets a 308 to HTTPS.
    pub force_ssl_redirect: bool,
    /// Honour `ssl-passthrough` annotations (ingress-nginx's
    /// `--enable-ssl-passthrough`; also a command-line flag here).
    pub enable_ssl_passthrough: bool,

    #[serde(with = "units::duration")]
    pub proxy_connect_timeout: Duration,
    /// Between two reads from the upstream, including the wait for the response head.
    #[serde(with = "units::duration")]
    pub proxy_read_timeout: Duration,
    /// Between two writes to the upstream.
    #[serde(with = "units::duration")]
    pub proxy_send_timeout: Duration,
    /// Request body limit in bytes; 0 means unlimited.
    #[serde(with = "units::size")]
    pub proxy_body_size: u64,
    /// `on` (as ingress-nginx): a request body is read whole before the
    /// request goes to a pod (except to HTTP/2 backends, whose streams must
    /// flow); `off`: it streams. The `proxy-request-buffering` annotation's default.
    pub proxy_request_buffering: OnOff,
    /// Bytes of a buffered body kept in memory; the rest is spooled to a file.
    #[serde(with = "units::size")]
    pub client_body_buffer_size: u64,
    /// The longest wait for a client's next body bytes while buffering (408).
    #[serde(with = "units::duration")]
    pub client_body_timeout: Duration,
    /// Where buffered bodies beyond memory are spooled (anonymous files);
    /// none: the system's temporary directory.
    pub client_body_temp_path: Option<std::path::PathBuf>,
    /// Bytes spooled at once by all requests; beyond, a body streams.
    #[serde(with = "units::size")]
    pub client_body_temp_limit: u64,

    /// Idle upstream connections kept per endpoint.
    pub upstream_keepalive_connections: usize,
    #[serde(with = "units::duration")]
    pub upstream_keepalive_timeout: Duration,
    pub upstream_keepalive_requests: u32,

    /// Idle time allowed between two client requests, and for reading a request head.
    #[serde(with = "units::duration")]
    pub keep_alive: Duration,
    pub keep_alive_requests: u32,
    /// Time for a new connection's first bytes (a client that connects and sends
    /// nothing is closed), and for a request head to arrive.
    #[serde(with = "units::duration")]
    pub client_header_timeout: Duration,
    /// Client connections open at once; more are closed at accept (0: no cap).
    pub max_worker_connections: usize,
    /// Streams one HTTP/2 client connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive pings to idle clients; one unanswered for as long again
    /// closes the connection.
    #[serde(with = "units::duration")]
    pub http2_ping_interval: Duration,
    /// A WebSocket (or other upgraded connection) with no byte either way for this
    /// long is closed.
    #[serde(with = "units::duration")]
    pub tunnel_idle_timeout: Duration,
    /// Largest request head accepted (HTTP/1 buffer, HTTP/2 header list).
    #[serde(with = "units::size")]
    pub max_header_size: u64,

    /// How long `/healthz` reports 503 while still accepting, so the edge tier notices.
    #[serde(with = "units::duration")]
    pub shutdown_grace_period: Duration,
    /// How long in-flight requests and open WebSockets get after accepting stops.
    #[serde(with = "units::duration")]
    pub drain_timeout: Duration,
    /// Serves requests that match no Ingress: `namespace/service:port`.
    pub default_backend: Option<String>,
    /// Believe `X-Forwarded-For/Proto/Host/Port` from peers in `proxy-real-ip-cidr`
    /// (the edge tier in front); from anyone else they are replaced.
    pub use_forwarded_headers: bool,
    /// The edge tier's addresses, comma-separated; empty trusts nobody.
    #[serde(with = "units::parsed")]
    pub proxy_real_ip_cidr: CidrList,
    /// Every client connection starts with a PROXY protocol (v1 or v2) header; the
    /// address it declares is believed from peers in `proxy-real-ip-cidr`.
    pub use_proxy_protocol: bool,
    /// `Upgrade` protocols tunnelled to pods, comma-separated; others are removed.
    pub allowed_upgrades: String,
    /// How often the manifests directory is checked for changes.
    #[serde(with = "units::duration")]
    pub manifests_poll_interval: Duration,

    /// `ewma`, `round_robin` or `least_request`.
    #[serde(with = "units::parsed")]
    pub load_balance: Algorithm,
    /// How fast latency estimates forget (the EWMA decay window).
    #[serde(with = "units::duration")]
    pub ewma_decay: Duration,
    /// New endpoints ramp up to a full share over this time.
    #[serde(with = "units::duration")]
    pub slow_start: Duration,
    /// When to open an endpoint's breaker, in Traefik's expression language.
    #[serde(with = "units::parsed")]
    pub circuit_breaker: BreakerRule,
    /// Never eject more than this percentage of a backend's endpoints.
    pub max_ejection_percent: u8,
    /// When to try another endpoint: `error`, `timeout`, `http_502`, `http_503`,
    /// `http_504`, `off`. Empty: only requests that never reached an upstream.
    #[serde(with = "units::parsed")]
    pub proxy_next_upstream: NextUpstream,
    /// Attempts in all (0: as many as there are endpoints).
    pub proxy_next_upstream_tries: u32,
    /// No retry after this long since the first attempt (0: no limit).
    #[serde(with = "units::duration")]
    pub proxy_next_upstream_timeout: Duration,
    /// Retries may add at most this share of a backend's requests (over 10 s)...
    pub retry_budget_ratio: f64,
    /// ...plus this many per second.
    pub retry_budget_min_per_second: u32,
    /// Statuses the default backend answers instead, on every route without
    /// its own `custom-http-errors` (comma-separated, as ingress-nginx).
    pub custom_http_errors: String,
    /// Response headers of the pods that clients never see (comma-separated).
    pub hide_headers: String,
    /// Pass the pods' `Server` header to clients (as ingress-nginx, hidden
    /// by default).
    pub allow_backend_server_header: bool,
    /// `namespace/name` of a ConfigMap of response headers set on every
    /// route's answers.
    pub add_headers: Option<String>,
    /// `namespace/name` of a ConfigMap of request headers set on every
    /// route's upstream requests (values may use nginx's `$variables`).
    pub proxy_set_headers: Option<String>,
    /// The default of an Ingress's `whitelist-source-range`: when not empty,
    /// only these client addresses are served.
    #[serde(with = "units::parsed")]
    pub whitelist_source_range: CidrList,
    /// The default of an Ingress's `denylist-source-range`.
    #[serde(with = "units::parsed")]
    pub denylist_source_range: CidrList,
    /// Client addresses refused everywhere (403).
    #[serde(with = "units::parsed")]
    pub block_cidrs: CidrList,
    /// `User-Agent`s refused everywhere, comma-separated (`~` / `~*` for a
    /// regular expression, as nginx's `map`).
    pub block_user_agents: String,
    /// `Referer`s refused everywhere, likewise.
    pub block_referers: String,
    /// Send `X-Original-URI` (the request URI as the client sent it) to the pods.
    pub proxy_add_original_uri_header: bool,
    /// Rule paths that no `auth-url` (global or an Ingress's) guards, by
    /// prefix, comma-separated: ACME challenges by default, as ingress-nginx.
    pub no_auth_locations: String,
    /// The response headers an Ingress's `custom-headers` may set
    /// (comma-separated; none by default, as ingress-nginx).
    pub global_allowed_response_headers: String,
    /// Bytes a second for each response, on routes without their own
    /// `limit-rate` annotation (0: no limit), as ingress-nginx's ConfigMap.
    pub limit_rate: u64,
    /// Bytes of each response sent at full speed before `limit-rate`.
    pub limit_rate_after: u64,
    /// Lets non-loopback clients use the admin API with `Authorization: Bearer ...`.
    pub admin_token: Option<String>,
    /// `stdout`, `off`, or a file path (reopened on SIGUSR1).
    pub access_log: String,
    /// `json`, or a text template with `$method`, `$path`, `$status`... variables.
    pub access_log_format: String,
    /// Instances that share a `limit-scope: cluster` rate limit.
    pub limit_cluster_instances: u32,
    /// The status of a request over a rate limit.
    pub limit_rejected_status: u16,
    /// The status of a request over `limit-connections`.
    pub limit_conn_status_code: u16,
    /// Count requests per route (`sluice_requests_total` and its histograms).
    pub request_metrics: bool,
    /// The `status` label: `code` (200) or `class` (2xx, fewer series).
    pub request_metrics_status: StatusLabel,
    /// Whether a host's rules may come from several namespaces (`shared`, as
    /// ingress-nginx) or only from the first to route it (`namespace`).
    pub host_ownership: HostOwnership,
    /// Gateway API: the GatewayClasses naming this controller are sluice's.
    pub gateway_controller_name: String,
    /// Gateway API: the ports HTTP and HTTPS listeners name to be served
    /// (the ports the nodes publish, whatever sluice binds).
    pub gateway_http_port: u16,
    pub gateway_https_port: u16,
    /// Pod address ranges never sent to, comma-separated, on top of the
    /// loopback, link-local, unspecified and multicast ones refused in a cluster.
    #[serde(with = "units::parsed")]
    pub upstream_deny_cidrs: CidrList,
    /// Pod address ranges allowed even so (exceptions to both), comma-separated.
    #[serde(with = "units::parsed")]
    pub upstream_allow_cidrs: CidrList,
    /// The file's ingress-nginx ConfigMap keys that have no sluice key, with
    /// their status (`configmap`). Never read from the file itself.
    #[serde(skip_deserializing)]
    pub ingress_nginx_keys: Vec<ForeignKey>,
}

/// Keys a reload cannot apply, because what they configure is made once at
/// start: the listeners and how client connections are handled, the upstream
/// pools (sized when a pod is first seen), the access log's target and format,
/// the manifests poller. Every other key takes effect on reload.
pub const RESTART_ONLY: &[&str] = &[
    "http-addr",
    "https-addr",
    "admin-addr",
    "keep-alive",
    "client-header-timeout",
    "max-header-size",
    "max-worker-connections",
    "http2-max-concurrent-streams",
    "http2-ping-interval",
    "use-proxy-protocol",
    "upstream-keepalive-connections",
    "upstream-keepalive-timeout",
    "upstream-keepalive-requests",
    "access-log",
    "access-log-format",
    "manifests-poll-interval",
];

/// The config as it runs and as its file last said, for `/api/config`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigState {
    /// What sluice runs with: the file's values, command-line overrides, and
    /// the restart-only values it started with.
    pub running: Config,
    /// The file as last read successfully (`None` without a file).
    pub file: Option<Config>,
    /// Restart-only keys the file changed since start: they apply at the next
    /// restart.
    pub restart_needed: Vec<&'static str>,
}

impl ConfigState {
    pub fn new(running: Config, file: Option<Config>) -> ConfigState {
        ConfigState {
            running,
            file,
            restart_needed: Vec::new(),
        }
    }
}

/// `host-ownership` in the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostOwnership {
    /// As ingress-nginx: paths of one host merge across namespaces (the oldest
    /// Ingress keeps a contested path); the certificate comes from the namespace
    /// that routed the host first.
    #[default]
    Shared,
    /// The first namespace to route a host owns it: other namespaces' rules for
    /// it are refused unless the owner lists them in `sluice.io/allow-namespaces`.
    Namespace,
}

/// An nginx switch: `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: parse_addr(DEFAULT_HTTP_ADDR),
            https_addr: parse_addr(DEFAULT_HTTPS_ADDR),
            admin_addr: parse_addr(DEFAULT_ADMIN_ADDR),
            default_ssl_certificate: None,
            // As ingress-nginx: HTTPS answers carry Strict-Transport-Security.
            hsts: true,
            hsts_max_age: DEFAULT_HSTS_MAX_AGE,
            hsts_include_subdomains: true,
            hsts_preload: false,
            ssl_redirect: true,
            force_ssl_redirect: false,
            enable_ssl_passthrough: false,
            proxy_connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            proxy_read_timeout: DEFAULT_READ_TIMEOUT,
            proxy_send_timeout: DEFAULT_SEND_TIMEOUT,
            proxy_body_size: DEFAULT_BODY_SIZE,
            proxy_request_buffering: OnOff::On,
            // ingress-nginx's `client-body-buffer-size`.
            client_body_buffer_size: 8 << 10,
            client_body_timeout: Duration::from_secs(60),
            client_body_temp_path: None,
            client_body_temp_limit: 1 << 30,
            upstream_keepalive_connections: DEFAULT_UPSTREAM_KEEPALIVE_CONNECTIONS,
            upstream_keepalive_timeout: DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
            upstream_keepalive_requests: DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS,
            keep_alive: DEFAULT_KEEP_ALIVE,
            keep_alive_requests: DEFAULT_KEEP_ALIVE_REQUESTS,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            client_header_timeout: DEFAULT_CLIENT_HEADER_TIMEOUT,
            max_worker_connections: DEFAULT_MAX_WORKER_CONNECTIONS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_ping_interval: DEFAULT_HTTP2_PING_INTERVAL,
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            shutdown_grace_period: DEFAULT_SHUTDOWN_GRACE_PERIOD,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            default_backend: None,
            use_forwarded_headers: false,
            proxy_real_ip_cidr: CidrList::default(),
            allowed_upgrades: "websocket".into(),
            use_proxy_protocol: false,
            manifests_poll_interval: DEFAULT_MANIFESTS_POLL_INTERVAL,
            load_balance: Algorithm::default(),
            ewma_decay: balance_policy::DEFAULT_DECAY,
            slow_start: balance_policy::DEFAULT_SLOW_START,
            circuit_breaker: balance_policy::default_breaker(),
            max_ejection_percent: balance_policy::DEFAULT_MAX_EJECTION_PERCENT,
            proxy_next_upstream: NextUpstream::default(),
            proxy_next_upstream_tries: retry::DEFAULT_TRIES,
            proxy_next_upstream_timeout: Duration::ZERO,
            retry_budget_ratio: retry::DEFAULT_BUDGET_RATIO,
            retry_budget_min_per_second: retry::DEFAULT_BUDGET_MIN_PER_SECOND,
            custom_http_errors: String::new(),
            hide_headers: String::new(),
            allow_backend_server_header: false,
            add_headers: None,
            proxy_set_headers: None,
            global_allowed_response_headers: String::new(),
            proxy_add_original_uri_header: false,
            no_auth_locations: "/.well-known/acme-challenge".into(),
            whitelist_source_range: CidrList::default(),
            denylist_source_range: CidrList::default(),
            block_cidrs: CidrList::default(),
            block_user_agents: String::new(),
            block_referers: String::new(),
            limit_rate: 0,
            limit_rate_after: 0,
            admin_token: None,
            access_log: "stdout".into(),
            access_log_format: "json".into(),
            limit_cluster_instances: 1,
            // ingress-nginx's `limit-req-status-code`.
            limit_rejected_status: 503,
            limit_conn_status_code: 503,
            request_metrics: true,
            request_metrics_status: StatusLabel::Code,
            host_ownership: HostOwnership::Shared,
            gateway_controller_name: crate::routing::gateway_status::CONTROLLER_NAME.into(),
            gateway_http_port: 80,
            gateway_https_port: 443,
            upstream_deny_cidrs: CidrList::default(),
            upstream_allow_cidrs: CidrList::default(),
            ingress_nginx_keys: Vec::new(),
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    // The constants above are valid literals; the fallback only guards against typos.
    s.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: "<inline>".into(),
            message,
        };
        // An empty file is a valid "all defaults" config.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let (value, foreign) = configmap::normalize(value, &Config::default().keys());
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            parse_err(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        })?;
        config.ingress_nginx_keys = foreign;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.proxy_connect_timeout.is_zero() {
            return invalid("proxy-connect-timeout", "must be greater than zero");
        }
        if let Err(message) = parse_status_list(&self.custom_http_errors) {
            return invalid("custom-http-errors", &message);
        }
        for (key, value) in [
            ("add-headers", &self.add_headers),
            ("proxy-set-headers", &self.proxy_set_headers),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| parse_secret_ref(v).is_none())
            {
                return invalid(key, "expected namespace/name of a ConfigMap");
            }
        }
        if let Err(message) = self.blocklist() {
            return invalid("block-user-agents", &message);
        }
        if let Err(message) = parse_header_list(&self.hide_headers) {
            return invalid("hide-headers", &message);
        }
        if self.proxy_read_timeout.is_zero() {
            return invalid("proxy-read-timeout", "must be greater than zero");
        }
        if self.proxy_send_timeout.is_zero() {
            return invalid("proxy-send-timeout", "must be greater than zero");
        }
        if self.upstream_keepalive_requests == 0 {
            return invalid("upstream-keepalive-requests", "must be at least 1");
        }
        if self.keep_alive.is_zero() {
            return invalid("keep-alive", "must be greater than zero");
        }
        if self.client_header_timeout.is_zero() {
            return invalid("client-header-timeout", "must be greater than zero");
        }
        if self.tunnel_idle_timeout.is_zero() {
            return invalid("tunnel-idle-timeout", "must be greater than zero");
        }
        if self.http2_max_concurrent_streams == 0 {
            return invalid("http2-max-concurrent-streams", "must be at least 1");
        }
        if self.keep_alive_requests == 0 {
            return invalid("keep-alive-requests", "must be at least 1");
        }
        if self.max_ejection_percent > 100 {
            return invalid("max-ejection-percent", "must be at most 100");
        }
        if !(0.0..=10.0).contains(&self.retry_budget_ratio) {
            return invalid("retry-budget-ratio", "must be between 0 and 10");
        }
        if self.limit_cluster_instances == 0 {
            return invalid("limit-cluster-instances", "must be at least 1");
        }
        if !(400..600).contains(&self.limit_rejected_status) {
            return invalid("limit-rejected-status", "must be a 4xx or 5xx status");
        }
        if !(400..600).contains(&self.limit_conn_status_code) {
            return invalid("limit-conn-status-code", "must be a 4xx or 5xx status");
        }
        if self.ewma_decay.is_zero() {
            return invalid("ewma-decay", "must be greater than zero");
        }
        if self.manifests_poll_interval.is_zero() {
            return invalid("manifests-poll-interval", "must be greater than zero");
        }
        if let Some(secret) = &self.default_ssl_certificate {
            if parse_secret_ref(secret).is_none() {
                return invalid("default-ssl-certificate", "expected namespace/name");
            }
        }
        if let Some(backend) = &self.default_backend {
            if crate::routing::parse_backend_ref(backend).is_none() {
                return invalid("default-backend", "expected namespace/service:port");
            }
        }
        Ok(())
    }

    /// The restart-only keys whose values differ between `self` and `next`.
    pub fn restart_only_changes(&self, next: &Config) -> Vec<&'static str> {
        let (before, after) = (self.keys(), next.keys());
        RESTART_ONLY
            .iter()
            .copied()
            .filter(|key| before.get(*key) != after.get(*key))
            .collect()
    }

    /// What runs after a reload to `next`: its values, except the restart-only
    /// ones, which stay as they run now.
    pub fn reloaded(&self, next: &Config) -> Config {
        let running = self.keys();
        let mut merged = next.keys();
        for key in RESTART_ONLY {
            if let Some(value) = running.get(*key) {
                merged.insert((*key).to_owned(), value.clone());
            }
        }
        // Both halves are valid configs, so the merge is too; the fallback
        // (keep running as is) only guards against a bug here.
        let mut reloaded: Config = serde_json::from_value(serde_json::Value::Object(merged))
            .unwrap_or_else(|_| self.clone());
        reloaded.ingress_nginx_keys = next.ingress_nginx_keys.clone();
        reloaded
    }

    /// The config as the file's keys and values (without the ingress-nginx
    /// keys found in it, which are not keys of their own).
    fn keys(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("ingress-nginx-keys");
                map
            }
            _ => serde_json::Map::new(),
        }
    }

    /// The HTTP/1 read buffer limit handed to hyper, which has a floor of 8 KiB.
    pub fn max_header_bytes(&self) -> usize {
        usize::try_from(self.max_header_size.max(MIN_HEADER_SIZE)).unwrap_or(usize::MAX)
    }

    pub fn metrics_options(&self) -> MetricsOptions {
        MetricsOptions {
            enabled: self.request_metrics,
            status: self.request_metrics_status,
        }
    }

    /// `block-cidrs`, `block-user-agents`, `block-referers`.
    pub fn blocklist(&self) -> Result<Option<Blocklist>, String> {
        Blocklist::parse(
            &self.block_cidrs.0,
            &self.block_user_agents,
            &self.block_referers,
        )
    }

    /// Which pod addresses are never sent to; `cluster`: the objects come from
    /// the apiserver, where tenants write them.
    pub fn upstream_deny(&self, cluster: bool) -> UpstreamDeny {
        UpstreamDeny {
            special: cluster,
            cidrs: self.upstream_deny_cidrs.0.clone(),
            allowed: self.upstream_allow_cidrs.0.clone(),
        }
    }

    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            upstream_keepalive_connections: self.upstream_keepalive_connections,
            upstream_keepalive_timeout: self.upstream_keepalive_timeout,
            upstream_keepalive_requests: self.upstream_keepalive_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingress_nginx_configmap_turns_request_buffering_off() {
        let c = Config::from_yaml(
            "proxy-request-buffering: \"off\"\nclient-body-buffer-size: \"16k\"\nclient-body-timeout: \"5\"\n",
        )
        .unwrap();
        assert!(!c.proxy_defaults().request_buffering);
        assert_eq!(c.client_body_buffer_size, 16 << 10);
        assert_eq!(c.client_body_timeout, Duration::from_secs(5));
        assert!(Config::from_yaml("proxy-request-buffering: maybe\n").is_err());
    }

    #[test]
    fn defaults_match_ingress_nginx() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.proxy_body_size, 1 << 20);
        assert_eq!(c.upstream_keepalive_connections, 320);
        assert_eq!(c.keep_alive, Duration::from_secs(75));
        assert_eq!(c.http_addr.port(), 80);
        assert_eq!(c.admin_addr.port(), 10254);
        // Trust nobody's forwarded headers, merge hosts across namespaces.
        assert!(c.proxy_real_ip_cidr.0.is_empty());
        assert_eq!(c.host_ownership, HostOwnership::Shared);
        assert_eq!(c.max_worker_connections, 16_384);
        assert_eq!(c.client_header_timeout, Duration::from_secs(60));
        // Request bodies are read whole first, 8k of them in memory.
        let defaults = c.proxy_defaults();
        assert!(defaults.request_buffering);
        assert_eq!(defaults.client_body_buffer_size, 8 << 10);
        assert_eq!(c.allowed_upgrades, "websocket");
    }

    #[test]
    fn production_example_parses() {
        let text = include_str!("../../config/production.yaml");
        let c = Config::from_yaml(text).unwrap();
        assert_eq!(c.proxy_connect_timeout, Duration::from_secs(1));
        assert_eq!(c.proxy_read_timeout, Duration::from_secs(3));
        assert_eq!(c.proxy_send_timeout, Duration::from_secs(3));
        assert_eq!(c.upstream_keepalive_connections, 200);
        assert_eq!(c.upstream_keepalive_timeout, Duration::from_secs(100));
        assert_eq!(c.upstream_keepalive_requests, 10_000);
        assert_eq!(c.keep_alive_requests, 10_000);
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::from_yaml("proxy-read-timeout: soon")
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy-read-timeout"), "{err}");
        let err = Config::from_yaml("proxy-raed-timeout: 1s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy-raed-timeout"), "{err}");
        let err = Config::from_yaml("keep-alive-requests: 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep-alive-requests"), "{err}");
        let err = Config::from_yaml("default-backend: nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("default-backend"), "{err}");
        for (text, field) in [
            ("load-balance: fastest", "load-balance"),
            ("circuit-breaker: Latency() >", "circuit-breaker"),
            ("proxy-next-upstream: sometimes", "proxy-next-upstream"),
            ("proxy-real-ip-cidr: 10.0.0.0/33", "proxy-real-ip-cidr"),
            ("upstream-deny-cidrs: nodes", "upstream-deny-cidrs"),
            ("host-ownership: mine", "host-ownership"),
            ("client-header-timeout: 0s", "client-header-timeout"),
        ] {
            let err = Config::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    /// Every restart-only key is a key of the file; changing one is reported,
    /// and a reload keeps its running value while applying the rest.
    #[test]
    fn a_reload_applies_all_but_the_restart_only_keys() {
        let running = Config::default();
        let keys = running.keys();
        for key in RESTART_ONLY {
            assert!(keys.contains_key(*key), "{key} is not a config key");
        }
        let next = Config::from_yaml(
            "keep-alive: 5s\nhttp-addr: 127.0.0.1:8080\nproxy-read-timeout: 7s\nload-balance: round_robin\n",
        )
        .unwrap();
        assert_eq!(
            running.restart_only_changes(&next),
            ["http-addr", "keep-alive"]
        );
        let reloaded = running.reloaded(&next);
        assert_eq!(reloaded.keep_alive, running.keep_alive);
        assert_eq!(reloaded.http_addr, running.http_addr);
        assert_eq!(reloaded.proxy_read_timeout, Duration::from_secs(7));
        assert_eq!(reloaded.load_balance, Algorithm::RoundRobin);
        // Everything else round-trips unchanged.
        assert_eq!(next.reloaded(&next), next);
        let file = Config::from_yaml(include_str!("../../config/production.yaml")).unwrap();
        assert_eq!(file.reloaded(&file), file);
    }

    /// A ConfigMap's quoted values load where a number or boolean is wanted,
    /// ingress-nginx's own keys are sorted out, and a key nobody knows is an
    /// error naming it.
    #[test]
    fn ingress_nginx_configmap_values_load() {
        let c = Config::from_yaml(
            "hsts: \"false\"\nkeep-alive-requests: \"500\"\nretry-budget-ratio: \"0.5\"\nproxy-read-timeout: \"30\"\nlimit-req-status-code: \"503\"\nworker-processes: \"4\"\ndisable-access-log: \"true\"\nadmin-token: \"123\"\n",
        )
        .unwrap();
        assert!(!c.hsts);
        assert_eq!(c.keep_alive_requests, 500);
        assert_eq!(c.retry_budget_ratio, 0.5);
        assert_eq!(c.proxy_read_timeout, Duration::from_secs(30));
        assert_eq!(c.limit_rejected_status, 503);
        assert_eq!(c.access_log, "off");
        assert_eq!(c.admin_token.as_deref(), Some("123"));
        assert_eq!(c.ingress_nginx_keys.len(), 1);
        assert_eq!(c.ingress_nginx_keys[0].status, "no effect");
        let err = Config::from_yaml("hsts: \"maybe\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hsts"), "{err}");
        let err = Config::from_yaml("gzip-levle: \"5\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gzip-levle"), "{err}");
        let example = include_str!("../../config/ingress-nginx-configmap.yaml");
        let c = Config::from_yaml(example).unwrap();
        assert_eq!(c.proxy_body_size, 50 << 20);
        assert_eq!(c.reloaded(&c), c);
    }

    #[test]
    fn fuzzed_config_files_never_panic() {
        crate::fuzz::texts(
            &[
                include_str!("../../config/production.yaml"),
                "proxy-read-timeout: 3s\nload-balance: ewma\ncircuit-breaker: NetworkErrorRatio() > 0.5\n",
                "default-backend: ns/svc:80\nkeep-alive: 75\nproxy-body-size: 8m\n",
            ],
            crate::fuzz::iterations(5_000),
            |text| {
                if let Ok(config) = Config::from_yaml(text) {
                    config.proxy_defaults();
                }
            },
        );
    }
}
