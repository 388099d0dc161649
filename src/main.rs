//! Layer 9, the top. The `sluice` command: serve a manifests directory, or `sluice demo`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use sluice::config::Config;
use sluice::discovery::kube::{KubeOptions, DEFAULT_DEBOUNCE};
use sluice::discovery::status::{StatusOptions, RETRY_PERIOD};
use sluice::discovery::translate::{DEFAULT_CONTROLLER_CLASS, DEFAULT_INGRESS_CLASS};
use sluice::discovery::ClassSelection;
use sluice::reload::ConfigSource;
use sluice::server::{Options, Server, Source};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: each request allocates and frees hyper's
/// read buffers (8 KB and more), which glibc serves from its slow paths
/// (`malloc_consolidate`). See benches/README.md for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A Kubernetes L7 ingress proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start demo upstreams on loopback and serve config/demo/ in front of them.
    Demo(Box<RunArgs>),
    /// Report what sluice will do with ingress-nginx's Ingresses and ConfigMap:
    /// each annotation's and key's status, and per Ingress whether it is served
    /// unchanged, with differences, not at all, or fails closed. Exits with 2
    /// when any Ingress would fail closed or not be served.
    Migrate(MigrateArgs),
    /// The admission webhook's certificate without cert-manager, as
    /// ingress-nginx's kube-webhook-certgen makes it (a one-shot Job in
    /// deploy/admission-webhook): keeps the TLS Secret while its
    /// certificate is good for 30 days more, else makes a new CA and
    /// certificate; then sets that CA as the caBundle of every webhook of
    /// the ValidatingWebhookConfiguration.
    WebhookCertificate(WebhookCertificateArgs),
}

#[derive(Debug, Args)]
struct WebhookCertificateArgs {
    /// Kubeconfig file for the cluster [default: $KUBECONFIG, else in-cluster].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The namespace of the Secret and of the webhook's Service.
    #[arg(long, value_name = "NAME", default_value = "sluice")]
    namespace: String,
    /// The TLS Secret the DaemonSet mounts.
    #[arg(long, value_name = "NAME", default_value = "sluice-webhook-cert")]
    secret_name: String,
    /// The Service the apiserver calls (the certificate names
    /// SERVICE.NAMESPACE.svc).
    #[arg(long, value_name = "NAME", default_value = "sluice-webhook")]
    service: String,
    /// The ValidatingWebhookConfiguration whose caBundle is set.
    #[arg(long, value_name = "NAME", default_value = "sluice")]
    webhook_configuration: String,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// Read the Ingresses (and Services, IngressClasses, Secrets) from this
    /// directory, e.g. `kubectl get ingress,ingressclass,service -A -o yaml`;
    /// without it, they are listed from the cluster.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// Kubeconfig file for the cluster [default: $KUBECONFIG, else in-cluster].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The ingress-nginx ConfigMap, as sluice's config file: a file (the
    /// manifest or its data), or `NAMESPACE/NAME` read from the cluster.
    #[arg(long, value_name = "FILE|NS/NAME")]
    configmap: Option<String>,
    /// The Ingresses to judge: those of this IngressClass (and legacy annotation).
    #[arg(long, value_name = "NAME", default_value = "nginx")]
    ingress_class: String,
    /// ... and those whose IngressClass names this controller.
    #[arg(long, value_name = "NAME", default_value = "k8s.io/ingress-nginx")]
    controller_class: String,
    /// Also judge Ingresses that name no class.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    output: String,
    /// Print every ingress-nginx key's status as Markdown tables instead.
    #[arg(long)]
    table: bool,
    /// Print the HTTPRoutes each Ingress amounts to instead, as YAML (those
    /// without one are named in comments, with the reason).
    #[arg(long)]
    http_routes: bool,
    /// The Gateway the suggested HTTPRoutes attach to (its `http` and
    /// `https` listeners).
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = "sluice/sluice")]
    gateway: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Serve the Kubernetes objects in this directory (Ingress, IngressClass,
    /// Service, EndpointSlice) instead of watching a cluster; edits are picked up
    /// while running.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// Config file (YAML); see config/production.yaml. An ingress-nginx
    /// ConfigMap (manifest or data) is read as is.
    #[arg(long, value_name = "FILE", conflicts_with = "configmap")]
    config: Option<PathBuf>,
    /// Read the config from this ConfigMap's data and apply its edits as they
    /// happen (cluster mode; ingress-nginx's flag of the same name).
    #[arg(long, value_name = "NS/NAME", conflicts_with = "manifests")]
    configmap: Option<String>,
    /// Plaintext HTTP/1.1 + h2c listener [default: 0.0.0.0:80, or the config file's].
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// TLS listener, HTTP/2 and HTTP/1.1 by ALPN [default: 0.0.0.0:443, or the config file's].
    #[arg(long, value_name = "ADDR")]
    https_addr: Option<SocketAddr>,
    /// TLS Secret (`namespace/name`) for handshakes no Ingress covers.
    #[arg(long, value_name = "NS/NAME")]
    default_ssl_certificate: Option<String>,
    /// Admin listener: /healthz, /readyz [default: 0.0.0.0:10254, or the config file's].
    #[arg(long, value_name = "ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Serve the validating admission webhook (AdmissionReview v1 over TLS)
    /// here, as ingress-nginx's flag.
    #[arg(long, value_name = "ADDR", requires_all = ["validating_webhook_certificate", "validating_webhook_key"])]
    validating_webhook: Option<SocketAddr>,
    /// The webhook's certificate (PEM); read again when it changes.
    #[arg(long, value_name = "FILE")]
    validating_webhook_certificate: Option<PathBuf>,
    /// The webhook's private key (PEM).
    #[arg(long, value_name = "FILE")]
    validating_webhook_key: Option<PathBuf>,
    /// Serve Ingresses whose IngressClass names this controller.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONTROLLER_CLASS)]
    controller_class: String,
    /// Our IngressClass name (and the legacy `kubernetes.io/ingress.class` value).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    /// Also serve Ingresses that name no class at all.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// Honour `ssl-passthrough` annotations (as ingress-nginx's flag).
    #[arg(long)]
    enable_ssl_passthrough: bool,
    /// Kubeconfig file [default: $KUBECONFIG, else the in-cluster service account].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces (repeatable or comma-separated) [default: all].
    #[arg(long, value_name = "NS")]
    watch_namespace: Vec<String>,
    /// Serve only namespaces whose labels match this selector, e.g. `tenant=a`.
    #[arg(long, value_name = "SELECTOR")]
    watch_namespace_selector: Option<String>,
    /// Write our addresses to the status of our Ingresses (one replica does, by Lease).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    update_status: bool,
    /// Addresses to publish in Ingress status (repeatable or comma-separated)
    /// [default: the node IPs of the pods matching --status-pod-selector].
    #[arg(long, value_name = "ADDR")]
    publish_status_address: Vec<String>,
    /// Labels of the sluice pods, whose nodes' IPs are published.
    #[arg(
        long,
        value_name = "SELECTOR",
        default_value = "app.kubernetes.io/name=sluice"
    )]
    status_pod_selector: String,
    /// Name of the Lease that elects the status writer (in $POD_NAMESPACE).
    #[arg(long, value_name = "NAME", default_value = "sluice-leader")]
    election_id: String,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
}

const DEMO_MANIFESTS: &str = "config/demo";
const DEMO_HTTP_ADDR: &str = "127.0.0.1:8080";
const DEMO_ADMIN_ADDR: &str = "127.0.0.1:10254";
const DEMO_HTTPS_ADDR: &str = "127.0.0.1:8443";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Before anything speaks TLS: the Kubernetes client may connect (to read
    // `--configmap`, or for `sluice migrate`) before the server starts.
    sluice::proxy::tls::install_provider();
    let cli = Cli::parse();
    let (args, demo) = match cli.command {
        Some(Command::Demo(args)) => (*args, true),
        Some(Command::Migrate(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::process::exit(runtime.block_on(migrate(&args))?)
        }
        Some(Command::WebhookCertificate(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            return runtime.block_on(webhook_certificate(args));
        }
        None => (cli.run, false),
    };
    // One worker thread: a current-thread runtime, which skips the work-stealing
    // scheduler's bookkeeping (benches/README.md has the measurement).
    let mut runtime = match args.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    runtime.build()?.block_on(run(args, demo))
}

async fn run(args: RunArgs, demo: bool) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None if demo => demo_config()?,
        None => Config::default(),
    };
    let manifests = args
        .manifests
        .or_else(|| demo.then(|| PathBuf::from(DEMO_MANIFESTS)));
    // Set by the DaemonSet from the downward API.
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| hostname());
    let pod_namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let source = match manifests {
        Some(dir) if !dir.is_dir() => bail!(
            "manifests directory {} does not exist (run from the repository root for the demo)",
            dir.display()
        ),
        Some(dir) => Source::Manifests(dir),
        None => Source::Kubernetes(Box::new(KubeOptions {
            kubeconfig: args.kubeconfig,
            namespaces: split_list(&args.watch_namespace),
            namespace_selector: args.watch_namespace_selector,
            debounce: DEFAULT_DEBOUNCE,
            identity: identity.clone(),
            status: args.update_status.then(|| StatusOptions {
                publish_addresses: split_list(&args.publish_status_address),
                pod_selector: args.status_pod_selector,
                namespace: pod_namespace,
                lease_name: args.election_id,
                identity,
                retry_period: RETRY_PERIOD,
            }),
        })),
    };
    // Installed before anything is served, so an early SIGTERM still drains.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    if demo {
        sluice::demo::start_pods()
            .await
            .context("starting demo upstreams")?;
    }
    let class = ClassSelection {
        ingress_class: args.ingress_class,
        controller_class: args.controller_class,
        watch_without_class: args.watch_ingress_without_class,
    };
    let config_source = match (&args.config, &args.configmap, &source) {
        (Some(path), _, _) => Some(ConfigSource::File(path.clone())),
        (None, Some(reference), Source::Kubernetes(kube_options)) => {
            let Some((namespace, name)) = sluice::config::parse_secret_ref(reference) else {
                bail!("--configmap {reference:?}: expected NAMESPACE/NAME");
            };
            let client = sluice::discovery::kube::connect(kube_options).await?;
            config = sluice::reload::read_configmap(client.clone(), &namespace, &name)
                .await
                .map_err(anyhow::Error::msg)?;
            Some(ConfigSource::ConfigMap {
                client,
                namespace,
                name,
                read: Box::new(config.clone()),
            })
        }
        _ => None,
    };
    // Command-line addresses (and flags) win over the config's.
    if args.enable_ssl_passthrough {
        config.enable_ssl_passthrough = true;
    }
    if let Some(addr) = args.http_addr {
        config.http_addr = addr;
    }
    if let Some(addr) = args.admin_addr {
        config.admin_addr = addr;
    }
    if let Some(addr) = args.https_addr {
        config.https_addr = addr;
    }
    if let Some(secret) = args.default_ssl_certificate.clone() {
        config.default_ssl_certificate = Some(secret);
        config.validate()?;
    }
    let webhook = match (
        args.validating_webhook,
        &args.validating_webhook_certificate,
        &args.validating_webhook_key,
    ) {
        (Some(addr), Some(certificate), Some(key)) => Some((
            addr,
            sluice::admin::webhook::WebhookOptions {
                certificate: certificate.clone(),
                key: key.clone(),
            },
        )),
        _ => None,
    };
    let server = Server::start(Options {
        config,
        config_source,
        source,
        class,
        webhook,
    })
    .await?;
    if demo {
        print_demo_help(&server);
    }

    let mut rotate = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM received"); break }
            _ = interrupt.recv() => { tracing::info!("SIGINT received"); break }
            _ = rotate.recv() => server.reopen_access_log(),
        }
    }
    server.shutdown();
    tokio::select! {
        () = server.wait() => Ok(()),
        _ = terminate.recv() => exit_now(),
        _ = interrupt.recv() => exit_now(),
    }
}

/// Values of a repeatable, comma-separated flag.
/// `sluice webhook-certificate`: what it did, a line per object.
async fn webhook_certificate(args: WebhookCertificateArgs) -> anyhow::Result<()> {
    use sluice::discovery::webhook_certificate::{provision, SecretOutcome, Target};
    let options = KubeOptions {
        kubeconfig: args.kubeconfig,
        ..KubeOptions::default()
    };
    let client = sluice::discovery::kube::connect(&options).await?;
    let target = Target {
        namespace: args.namespace,
        secret: args.secret_name,
        service: args.service,
        webhook_configuration: args.webhook_configuration,
    };
    let (secret, patched) = provision(client, &target, std::time::SystemTime::now()).await?;
    let secret_name = format!("Secret {}/{}", target.namespace, target.secret);
    match secret {
        SecretOutcome::Kept => println!("{secret_name}: kept, its certificate is good"),
        SecretOutcome::Created => println!("{secret_name}: created, with a new CA"),
        SecretOutcome::Replaced(why) => {
            println!("{secret_name}: replaced, with a new CA ({why})")
        }
    }
    let webhooks = format!(
        "ValidatingWebhookConfiguration {}",
        target.webhook_configuration
    );
    match patched {
        0 => println!("{webhooks}: already trusts the CA"),
        n => println!("{webhooks}: caBundle set on {n} webhook(s)"),
    }
    Ok(())
}

/// `sluice migrate`: the report, and its exit status.
async fn migrate(args: &MigrateArgs) -> anyhow::Result<i32> {
    if args.table {
        print!("{}", sluice::migrate::table());
        return Ok(0);
    }
    let configmap_file = args
        .configmap
        .as_deref()
        .is_some_and(|c| std::path::Path::new(c).is_file());
    let needs_cluster = args.manifests.is_none() || (args.configmap.is_some() && !configmap_file);
    let cluster = if needs_cluster {
        let options = KubeOptions {
            kubeconfig: args.kubeconfig.clone(),
            ..KubeOptions::default()
        };
        Some(sluice::discovery::kube::connect(&options).await?)
    } else {
        None
    };
    let configmap = match &args.configmap {
        Some(path) if configmap_file => {
            Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?)
        }
        Some(reference) => {
            let Some((namespace, name)) = sluice::config::parse_secret_ref(reference) else {
                bail!("--configmap {reference:?}: neither a file nor NAMESPACE/NAME");
            };
            let Some(client) = cluster.clone() else {
                bail!("no cluster");
            };
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client, &namespace);
            let read = api
                .get(&name)
                .await
                .with_context(|| format!("reading ConfigMap {reference}"))?;
            Some(sluice::reload::configmap_text(&read))
        }
        None => None,
    };
    let config = match &configmap {
        Some(text) => Config::from_yaml(text).context("the ConfigMap")?,
        None => Config::default(),
    };
    let (snapshot, source_warnings) = match &args.manifests {
        Some(dir) => {
            let mut manifests = sluice::discovery::manifests::ManifestsDir::new(dir);
            manifests.scan()?;
            manifests.snapshot()
        }
        None => {
            let Some(client) = cluster else {
                bail!("no cluster");
            };
            let snapshot = sluice::migrate::cluster_snapshot(client)
                .await
                .context("listing the cluster's objects")?;
            (snapshot, Vec::new())
        }
    };
    let class = ClassSelection {
        ingress_class: args.ingress_class.clone(),
        controller_class: args.controller_class.clone(),
        watch_without_class: args.watch_ingress_without_class,
    };
    let Some(gateway) = args.gateway.split_once('/') else {
        bail!("--gateway {:?}: expected NAMESPACE/NAME", args.gateway);
    };
    let report = sluice::migrate::report(
        &snapshot,
        &source_warnings,
        &config,
        configmap.as_deref(),
        &class,
        gateway,
    );
    if args.http_routes {
        print!("{}", sluice::migrate::render_http_routes(&report));
        return Ok(0);
    }
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        "text" => print!("{}", sluice::migrate::render(&report)),
        other => bail!("--output {other:?}: expected text or json"),
    }
    Ok(if report.closes_anything() { 2 } else { 0 })
}

fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "sluice".into())
}

fn exit_now() -> ! {
    tracing::warn!("second signal: exiting without waiting for the drain");
    std::process::exit(1)
}

fn demo_config() -> anyhow::Result<Config> {
    Ok(Config {
        http_addr: DEMO_HTTP_ADDR.parse()?,
        admin_addr: DEMO_ADMIN_ADDR.parse()?,
        https_addr: DEMO_HTTPS_ADDR.parse()?,
        // Ctrl-C should not wait for an edge tier that does not exist.
        shutdown_grace_period: Duration::ZERO,
        drain_timeout: Duration::from_secs(5),
        ..Config::default()
    })
}

fn print_demo_help(server: &Server) {
    let http = server.http_addr;
    let https = server.https_addr;
    let admin = server.admin_addr;
    println!(
        r#"
sluice demo is serving config/demo/ on http://{http} (admin on http://{admin})

Try:
  curl -H 'Host: demo.local' http://{http}/                  # web: two pods, round-robin
  curl -H 'Host: demo.local' http://{http}/api/orders        # api: one pod slow, one failing 20%
    curl --http2-prior-knowledge -H 'Host: demo.local' http://{http}/   # h2c on the same port
  curl -k -H 'Host: demo.local' https://{https}/                 # TLS (a self-signed certificate)
  curl -H 'Host: unknown.example' http://{http}/             # 404: no Ingress for this host
  curl http://{admin}/healthz

Edit config/demo/*.yaml while it runs: changes are served within a second, no restart.
Ctrl-C to stop.
"#
    );
}
