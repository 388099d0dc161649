//! Layer 7, wiring. Config reloads: the file (a ConfigMap volume in a cluster) is checked for
//! changes, or the ConfigMap named by `--configmap` is watched through the API; a valid new version takes effect without a restart, an invalid one is
//! logged and the last good one stays.
//!
//! Route defaults (timeouts, body size, default backend) rebuild the table; proxy
//! settings swap atomically. The keys in `config::RESTART_ONLY` (listen
//! addresses, client connection settings, upstream pool sizes, the access log)
//! keep their running values until the next restart; the log says so for each,
//! and `/api/config` lists them as `restart_needed`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use tokio_util::sync::CancellationToken;

use crate::config::{parse_secret_ref, Config, ConfigState};
use crate::discovery::gateway::GatewayOptions;
use crate::discovery::manifests::Stamp;
use crate::discovery::{parse_backend_ref, ClassSelection, Publisher, TranslateOptions};
use crate::proxy::{Proxy, ProxySettings};
use arc_swap::ArcSwap;

pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `cluster`: objects come from the apiserver (tenants), not from a manifests
/// directory the operator wrote, so special pod addresses are refused.
pub fn translate_options(
    config: &Config,
    class: &ClassSelection,
    cluster: bool,
) -> TranslateOptions {
    TranslateOptions {
        upstream_deny: config.upstream_deny(cluster),
        host_ownership: config.host_ownership,
        defaults: config.proxy_defaults(),
        default_backend: config
            .default_backend
            .as_deref()
            .and_then(parse_backend_ref),
        default_certificate: config
            .default_ssl_certificate
            .as_deref()
            .and_then(parse_secret_ref),
        cluster_instances: config.limit_cluster_instances,
        class: class.clone(),
        metrics: config.metrics_options(),
        ingress_nginx_keys: config.ingress_nginx_keys.clone(),
        ssl_passthrough: config.enable_ssl_passthrough,
        gateway: GatewayOptions {
            controller_name: config.gateway_controller_name.clone(),
            http_port: config.gateway_http_port,
            https_port: config.gateway_https_port,
        },
    }
}

pub fn proxy_settings(config: &Config) -> ProxySettings {
    let hsts = config.hsts.then(|| {
        let mut value = format!("max-age={}", config.hsts_max_age.as_secs());
        if config.hsts_include_subdomains {
            value += "; includeSubDomains";
        }
        if config.hsts_preload {
            value += "; preload";
        }
        value
    });
    ProxySettings {
        use_forwarded_headers: config.use_forwarded_headers,
        real_ip_from: config.proxy_real_ip_cidr.0.clone(),
        tunnel_idle_timeout: config.tunnel_idle_timeout,
        allowed_upgrades: config
            .allowed_upgrades
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect(),
        keep_alive_requests: config.keep_alive_requests,
        hsts: hsts.and_then(|v| http::HeaderValue::try_from(v).ok()),
        limit_status: http::StatusCode::from_u16(config.limit_rejected_status)
            .unwrap_or(http::StatusCode::TOO_MANY_REQUESTS),
        limit_conn_status: http::StatusCode::from_u16(config.limit_conn_status_code)
            .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
        allow_backend_server_header: config.allow_backend_server_header,
        // Checked by `validate`.
        blocklist: config.blocklist().ok().flatten().map(std::sync::Arc::new),
        client_body_timeout: config.client_body_timeout,
        spool: crate::upstream::buffered::Spool {
            dir: config
                .client_body_temp_path
                .clone()
                .unwrap_or_else(std::env::temp_dir),
            limit: config.client_body_temp_limit,
        },
    }
}

/// Where the config comes from, to reload it when it changes.
#[derive(Clone)]
pub enum ConfigSource {
    /// A file (a ConfigMap volume in a cluster), polled.
    File(PathBuf),
    /// A ConfigMap (`--configmap NAMESPACE/NAME`), watched through the API:
    /// its `data` is read as the config file.
    ConfigMap {
        client: kube::Client,
        namespace: String,
        name: String,
        /// The config as read at start (`read_configmap`), before any
        /// command-line override.
        read: Box<Config>,
    },
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::ConfigMap {
                namespace, name, ..
            } => write!(f, "ConfigMap {namespace}/{name}"),
        }
    }
}

/// A ConfigMap's `data` as config-file text.
pub fn configmap_text(configmap: &ConfigMap) -> String {
    match &configmap.data {
        Some(data) if !data.is_empty() => serde_yaml::to_string(data).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Reads the config from a ConfigMap once (at start, so that restart-only
/// keys apply too).
pub async fn read_configmap(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Config, String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, namespace);
    let configmap = api
        .get(name)
        .await
        .map_err(|e| format!("reading ConfigMap {namespace}/{name}: {e}"))?;
    Config::from_yaml(&configmap_text(&configmap))
        .map_err(|e| format!("ConfigMap {namespace}/{name}: {e}"))
}

pub struct ConfigWatch {
    pub source: ConfigSource,
    /// The file as it was at start, if it could be read then.
    pub started: Option<Config>,
    /// The file as last read successfully.
    pub file: Config,
    /// What runs, shared with the admin API.
    pub state: Arc<ArcSwap<ConfigState>>,
    pub class: ClassSelection,
    /// Objects come from the apiserver (see `translate_options`).
    pub cluster: bool,
    pub publisher: Arc<Publisher>,
    pub proxy: Arc<Proxy>,
    pub interval: Duration,
}

impl ConfigWatch {
    pub async fn run(self, stop: CancellationToken) {
        match self.source.clone() {
            ConfigSource::File(path) => self.poll_file(path, stop).await,
            ConfigSource::ConfigMap {
                client,
                namespace,
                name,
                ..
            } => self.watch_configmap(client, namespace, name, stop).await,
        }
    }

    /// Applies every new version of the ConfigMap; a deleted one leaves the
    /// last good config running, and so does an invalid one.
    async fn watch_configmap(
        mut self,
        client: kube::Client,
        namespace: String,
        name: String,
        stop: CancellationToken,
    ) {
        use futures_util::StreamExt;
        use kube::runtime::WatchStreamExt;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &namespace);
        let config =
            kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut changes = kube::runtime::watcher(api, config)
            .applied_objects()
            .boxed();
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = changes.next() => next,
            };
            match next {
                None => return,
                // The watcher retries by itself, with backoff.
                Some(Err(error)) => tracing::warn!(%error, "watching the config ConfigMap"),
                Some(Ok(configmap)) if configmap.metadata.name.as_deref() == Some(&name) => {
                    self.load(Config::from_yaml(&configmap_text(&configmap)))
                        .await
                }
                Some(Ok(_)) => {}
            }
        }
    }

    async fn poll_file(mut self, path: PathBuf, stop: CancellationToken) {
        let mut stamp = Stamp::of_path(&path);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            let now = Stamp::of_path(&path);
            if now == stamp {
                continue;
            }
            stamp = now;
            self.load(Config::from_file(&path)).await;
        }
    }

    /// A new version read: applied if valid, else the last good one stays.
    async fn load(&mut self, read: Result<Config, crate::config::ConfigError>) {
        match read {
            Ok(config) => {
                metrics::counter!(crate::telemetry::CONFIG_RELOADS, "result" => "success")
                    .increment(1);
                self.apply(config).await
            }
            Err(error) => {
                metrics::counter!(crate::telemetry::CONFIG_RELOADS, "result" => "invalid")
                    .increment(1);
                tracing::warn!(source = %self.source, %error, "config not reloaded; keeping the last good one")
            }
        }
    }

    async fn apply(&mut self, file: Config) {
        if file == self.file {
            return;
        }
        for field in self.file.restart_only_changes(&file) {
            tracing::warn!(field, "config change takes effect at the next restart");
        }
        let running = self.state.load().running.reloaded(&file);
        self.proxy
            .settings
            .store(Arc::new(proxy_settings(&running)));
        // The rebuild runs in the background, like every other table build.
        let publisher = self.publisher.clone();
        let options = translate_options(&running, &self.class, self.cluster);
        if let Err(error) =
            crate::discovery::in_background(move || publisher.set_options(options)).await
        {
            tracing::error!(%error, "rebuilding the table for the new config failed");
        }
        let restart_needed = self
            .started
            .as_ref()
            .map(|started| started.restart_only_changes(&file))
            .unwrap_or_default();
        self.state.store(Arc::new(ConfigState {
            running,
            file: Some(file.clone()),
            restart_needed,
        }));
        tracing::info!(source = %self.source, "config reloaded");
        self.file = file;
    }
}
