//! Layer 8, wiring: binds the listeners, loads the first table, runs discovery, and drains.
//!
//! `start` returns once sluice is serving; `Server::shutdown` begins the same drain
//! that SIGTERM does: `/healthz` fails at once, accepting continues for the
//! `shutdown-grace-period` so the edge tier notices, then in-flight requests and
//! tunnels get up to `drain-timeout` to finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::webhook::WebhookOptions;
use crate::admin::AdminState;
use crate::config::{Config, ConfigState};
use crate::discovery::kube::{self, KubeOptions};
use crate::discovery::manifests::{self, ManifestsDir};
use crate::discovery::Retained;
use crate::discovery::{events, status};
use crate::discovery::{ClassSelection, DiscoveryError, Publisher};
use crate::lifecycle::Lifecycle;
use crate::proxy::{listener, tls, Proxy};
use crate::reload::{self, ConfigSource, ConfigWatch};
use crate::routing::RoutingTable;
use crate::telemetry::access_log::{self, AccessLog};
use ::kube::runtime::events::Reporter;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot open the access log {path}")]
    AccessLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub config: Config,
    /// Where `config` came from; it is reloaded when it changes.
    pub config_source: Option<ConfigSource>,
    pub source: Source,
    pub class: ClassSelection,
    /// The validating admission webhook: where it listens, and its
    /// certificate (`admin::webhook`).
    pub webhook: Option<(SocketAddr, WebhookOptions)>,
}

/// Where the Kubernetes objects come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory of YAML manifests.
    Manifests(PathBuf),
    /// The cluster's apiserver.
    Kubernetes(Box<KubeOptions>),
}

#[derive(Debug)]
pub struct Server {
    access_log: AccessLog,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub webhook_addr: Option<SocketAddr>,
    table: Arc<ArcSwap<RoutingTable>>,
    lifecycle: Arc<Lifecycle>,
    begin_drain: CancellationToken,
    done: JoinHandle<()>,
}

impl Server {
    pub async fn start(options: Options) -> Result<Server, StartError> {
        let config = options.config.clone();
        let cluster = matches!(options.source, Source::Kubernetes(_));
        let http = bind(config.http_addr).await?;
        let https = bind(config.https_addr).await?;
        let admin = bind(config.admin_addr).await?;
        let http_addr = local_addr(&http, config.http_addr)?;
        let https_addr = local_addr(&https, config.https_addr)?;
        let admin_addr = local_addr(&admin, config.admin_addr)?;

        crate::telemetry::prometheus();
        tls::install_provider();
        let lifecycle = Arc::new(Lifecycle::default());
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
        let publisher = Publisher::new(
            table.clone(),
            Arc::new(Retained::new(config.pool_config())),
            reload::translate_options(&config, &options.class, cluster),
            lifecycle.clone(),
        );
        let stop_background = CancellationToken::new();
        let publisher =
            start_discovery(&options.source, publisher, &config, &stop_background).await?;
        tokio::spawn(crate::discovery::reap_retired(
            publisher.clone(),
            stop_background.clone(),
        ));
        tokio::spawn(crate::discovery::resolve::run(
            publisher.clone(),
            stop_background.clone(),
        ));

        // The file as it was at start (before command-line overrides), to tell
        // what a reload changed.
        let file = match &options.config_source {
            Some(ConfigSource::File(path)) => Config::from_file(path).ok(),
            Some(ConfigSource::ConfigMap { read, .. }) => Some((**read).clone()),
            None => None,
        };
        let config_state = Arc::new(ArcSwap::from_pointee(ConfigState::new(
            config.clone(),
            file.clone(),
        )));
        let admin_state = Arc::new(AdminState {
            lifecycle: lifecycle.clone(),
            table: table.clone(),
            publisher: publisher.clone(),
            config: config_state.clone(),
        });
        tokio::spawn(crate::admin::serve(
            admin,
            admin_state,
            stop_background.clone(),
        ));
        let mut webhook_addr = None;
        if let Some((addr, webhook)) = &options.webhook {
            let listener = bind(*addr).await?;
            webhook_addr = Some(local_addr(&listener, *addr)?);
            tokio::spawn(crate::admin::webhook::serve(
                listener,
                webhook.clone(),
                publisher.clone(),
                stop_background.clone(),
            ));
        }

        let access_log = AccessLog::start(
            access_log::Target::parse(&config.access_log),
            &config.access_log_format,
        )
        .map_err(|source| StartError::AccessLog {
            path: config.access_log.clone(),
            source,
        })?;
        let proxy = Arc::new(Proxy {
            access_log: access_log.clone(),
            table: table.clone(),
            settings: ArcSwap::from_pointee(reload::proxy_settings(&config)),
            lifecycle: lifecycle.clone(),
            tunnels: TaskTracker::new(),
        });
        if let Some(source) = &options.config_source {
            let watch = ConfigWatch {
                source: source.clone(),
                started: file.clone(),
                file: file.unwrap_or_else(|| config.clone()),
                state: config_state.clone(),
                class: options.class.clone(),
                cluster,
                publisher,
                proxy: proxy.clone(),
                interval: reload::POLL_INTERVAL,
            };
            tokio::spawn(watch.run(stop_background.clone()));
        }
        let stop_accepting = CancellationToken::new();
        let close_connections = CancellationToken::new();
        let connections = TaskTracker::new();
        let builder = Arc::new(listener::connection_builder(&config));
        let limits = listener::ConnectionLimits::new(&config);
        let tls = Arc::new(tls::Acceptor::new(table.clone()).map_err(StartError::Tls)?);
        let mut accept_loops = Vec::new();
        for (listener, tls) in [(http, None), (https, Some(tls))] {
            accept_loops.push(tokio::spawn(listener::serve(
                listener,
                tls,
                builder.clone(),
                proxy.clone(),
                limits.clone(),
                stop_accepting.clone(),
                close_connections.clone(),
                connections.clone(),
            )));
        }
        tracing::info!(%http_addr, %https_addr, %admin_addr, source = ?options.source, "sluice is serving");

        let server_access_log = proxy.access_log.clone();
        let begin_drain = CancellationToken::new();
        let drain = {
            let begin_drain = begin_drain.clone();
            let lifecycle = lifecycle.clone();
            async move {
                begin_drain.cancelled().await;
                // As the config runs at the time of the drain: both reload.
                let config = config_state.load_full().running.clone();
                lifecycle.start_draining();
                tracing::info!(
                    grace_period = ?config.shutdown_grace_period,
                    "draining: /healthz now fails; still accepting during the grace period"
                );
                tokio::time::sleep(config.shutdown_grace_period).await;
                stop_accepting.cancel();
                for accept_loop in accept_loops {
                    let _ = accept_loop.await;
                }
                close_connections.cancel();
                connections.close();
                proxy.tunnels.close();
                let finished = tokio::time::timeout(config.drain_timeout, async {
                    connections.wait().await;
                    proxy.tunnels.wait().await;
                })
                .await;
                match finished {
                    Ok(()) => tracing::info!("drained: all requests and tunnels finished"),
                    Err(_) => tracing::warn!(
                        connections = connections.len(),
                        tunnels = proxy.tunnels.len(),
                        "drain timeout reached; closing what is left"
                    ),
                }
                stop_background.cancel();
            }
        };
        let done = tokio::spawn(drain);
        Ok(Server {
            access_log: server_access_log,
            http_addr,
            https_addr,
            admin_addr,
            webhook_addr,
            table,
            lifecycle,
            begin_drain,
            done,
        })
    }

    /// Reopens the access log file (SIGUSR1, after logrotate moved it).
    pub fn reopen_access_log(&self) {
        self.access_log.reopen();
    }

    /// The table requests are routed with right now.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Starts draining (what SIGTERM does); `wait` returns when it is over.
    pub fn shutdown(&self) {
        self.begin_drain.cancel();
    }

    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts the source of Kubernetes objects; returns the publisher it feeds.
async fn start_discovery(
    source: &Source,
    publisher: Publisher,
    config: &Config,
    stop: &CancellationToken,
) -> Result<Arc<Publisher>, StartError> {
    match source {
        Source::Manifests(dir) => {
            // The first table is in place before the first request is accepted.
            let publisher = Arc::new(publisher);
            let mut manifests = ManifestsDir::new(dir);
            manifests.scan()?;
            let (snapshot, warnings) = manifests.snapshot();
            publisher.publish(&snapshot, &warnings);
            publisher.lifecycle.set_synced();
            let interval = config.manifests_poll_interval;
            tokio::spawn(manifests::watch(
                manifests,
                interval,
                publisher.clone(),
                stop.clone(),
            ));
            Ok(publisher)
        }
        Source::Kubernetes(kube_options) => {
            // Serving starts at once; /healthz and /readyz say 503 until the
            // watchers have listed everything and the first table is published.
            let client = kube::connect(kube_options).await?;
            let (warnings, warnings_rx) = mpsc::unbounded_channel();
            let publisher = Arc::new(publisher.with_warning_events(warnings));
            let reporter = Reporter {
                controller: "sluice".into(),
                instance: Some(kube_options.identity.clone()),
            };
            let leading = kube_options.status.as_ref().map(|status_options| {
                let leading = Arc::new(AtomicBool::new(false));
                tokio::spawn(status::run(
                    client.clone(),
                    status_options.clone(),
                    publisher.clone(),
                    leading.clone(),
                    stop.clone(),
                ));
                leading
            });
            tokio::spawn(events::record(
                client.clone(),
                reporter,
                leading,
                warnings_rx,
            ));
            let options = (**kube_options).clone();
            tokio::spawn(kube::watch(
                client,
                options,
                publisher.clone(),
                stop.clone(),
            ));
            Ok(publisher)
        }
    }
}
