//! Every manifest in deploy/ parses into its Kubernetes type, and the pieces
//! refer to each other correctly.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use sluice::config::Config;
use sluice::discovery::translate::DEFAULT_CONTROLLER_CLASS;

#[derive(Default)]
struct Deploy {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    ingress_classes: Vec<IngressClass>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
}

fn load() -> Deploy {
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/kustomization.yaml").unwrap())
            .unwrap();
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    // Every YAML file in deploy/ is listed, and every listed file exists.
    let mut files: Vec<String> = std::fs::read_dir("deploy")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // The Prometheus rule file is for Prometheus, not for kubectl.
        .filter(|f| {
            f.ends_with(".yaml") && f != "kustomization.yaml" && f != "prometheus-rules.yaml"
        })
        .collect();
    files.sort();
    let mut listed = resources.clone();
    listed.sort();
    assert_eq!(files, listed, "kustomization.yaml resources");

    let mut deploy = Deploy::default();
    for file in &resources {
        let text = std::fs::read_to_string(format!("deploy/{file}")).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            let kind = value["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no kind"))
                .to_owned();
            fn typed<T: serde::de::DeserializeOwned>(file: &str, value: serde_yaml::Value) -> T {
                serde_path_to_error::deserialize(value).unwrap_or_else(|e| panic!("{file}: {e}"))
            }
            match kind.as_str() {
                "Namespace" => deploy.namespaces.push(typed(file, value)),
                "ServiceAccount" => deploy.service_accounts.push(typed(file, value)),
                "ClusterRole" => deploy.cluster_roles.push(typed(file, value)),
                "ClusterRoleBinding" => deploy.cluster_role_bindings.push(typed(file, value)),
                "Role" => deploy.roles.push(typed(file, value)),
                "RoleBinding" => deploy.role_bindings.push(typed(file, value)),
                "IngressClass" => deploy.ingress_classes.push(typed(file, value)),
                "ConfigMap" => deploy.config_maps.push(typed(file, value)),
                "DaemonSet" => deploy.daemon_sets.push(typed(file, value)),
                other => panic!("{file}: unexpected kind {other}"),
            }
        }
    }
    deploy
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn deploy_manifests_fit_together() {
    let deploy = load();
    let namespace = deploy.namespaces[0].metadata.name.clone().unwrap();
    let ds = &deploy.daemon_sets[0];
    assert_eq!(ds.metadata.namespace.as_deref(), Some(namespace.as_str()));
    let pod = ds.spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];

    // ServiceAccount and RBAC.
    let sa = &deploy.service_accounts[0];
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let bound = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && Some(&s.name) == sa.metadata.name.as_ref()
                && s.namespace.as_deref() == Some(namespace.as_str())
        })
    };
    let crb = &deploy.cluster_role_bindings[0];
    assert!(bound(&crb.subjects));
    let cluster_role = deploy
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&crb.role_ref.name))
        .unwrap();
    let rules = cluster_role.rules.as_deref().unwrap();
    for (group, resource) in [
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("", "services"),
        ("", "secrets"),
        ("", "namespaces"),
        ("", "configmaps"),
        ("discovery.k8s.io", "endpointslices"),
        ("gateway.networking.k8s.io", "gatewayclasses"),
        ("gateway.networking.k8s.io", "gateways"),
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "grpcroutes"),
        ("gateway.networking.k8s.io", "referencegrants"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                allows(rules, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    assert!(allows(
        rules,
        "networking.k8s.io",
        "ingresses/status",
        "patch"
    ));
    assert!(allows(rules, "events.k8s.io", "events", "create"));
    for status in [
        "gatewayclasses/status",
        "gateways/status",
        "httproutes/status",
    ] {
        for verb in ["get", "patch"] {
            let allowed = allows(rules, "gateway.networking.k8s.io", status, verb);
            assert!(allowed, "{verb} {status}");
        }
    }
    assert!(
        !allows(rules, "gateway.networking.k8s.io", "httproutes", "patch"),
        "read-only on routes"
    );
    assert!(
        !allows(rules, "", "secrets", "update"),
        "read-only on Secrets"
    );
    let rb = &deploy.role_bindings[0];
    assert!(bound(&rb.subjects));
    let role = deploy
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&rb.role_ref.name))
        .unwrap();
    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace.as_str()));
    let role_rules = role.rules.as_deref().unwrap();
    for verb in ["get", "create", "update"] {
        assert!(
            allows(role_rules, "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    assert!(allows(role_rules, "", "pods", "list"));

    // IngressClass names our controller.
    let class = &deploy.ingress_classes[0];
    assert_eq!(
        class.spec.as_ref().unwrap().controller.as_deref(),
        Some(DEFAULT_CONTROLLER_CLASS)
    );
    let class_arg = format!(
        "--ingress-class={}",
        class.metadata.name.as_deref().unwrap()
    );
    assert!(container.args.iter().flatten().any(|a| *a == class_arg));

    // The ConfigMap is mounted where --config points, and holds a valid config.
    let config_map = &deploy.config_maps[0];
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.is_some())
        .unwrap();
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        config_map.metadata.name.clone().unwrap()
    );
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .unwrap();
    let data: &BTreeMap<String, String> = config_map.data.as_ref().unwrap();
    let (key, text) = data.iter().next().unwrap();
    let config_arg = format!("--config={}/{key}", mount.mount_path);
    assert!(
        container.args.iter().flatten().any(|a| *a == config_arg),
        "{config_arg}"
    );
    let config = Config::from_yaml(text).unwrap();

    // Ports and probes match the config.
    let port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
    };
    assert_eq!(
        port("http").container_port,
        i32::from(config.http_addr.port())
    );
    assert_eq!(
        port("admin").container_port,
        i32::from(config.admin_addr.port())
    );
    assert_eq!(
        port("https").container_port,
        i32::from(config.https_addr.port())
    );
    for p in ["http", "https", "admin"] {
        assert_eq!(
            port(p).host_port,
            Some(port(p).container_port),
            "hostNetwork: hostPort = containerPort"
        );
    }
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into())
        );
        get.path.clone().unwrap()
    };
    assert_eq!(probe_path(&container.readiness_probe), "/readyz");
    assert_eq!(probe_path(&container.liveness_probe), "/healthz");

    // Host networking, drain time, rolling updates.
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let drain = config.shutdown_grace_period + config.drain_timeout;
    assert!(pod.termination_grace_period_seconds.unwrap() as u64 > drain.as_secs());
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"));
    let sysctl = pod.init_containers.as_ref().unwrap()[0]
        .command
        .as_ref()
        .unwrap()
        .join(" ");
    for setting in [
        "net.core.somaxconn=32768",
        "net.ipv4.ip_local_port_range=\"1024 65000\"",
        "net.ipv4.tcp_tw_reuse=1",
        "fs.file-max=1048576",
    ] {
        assert!(sysctl.contains(setting), "{setting}");
    }
    let strategy = ds.spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    // Pods carry the labels the status writer selects by default.
    let labels = ds
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("sluice")
    );
}

/// Every alert uses metrics sluice exports, and the expiry alert fires at 14 days.
#[test]
fn alert_rules_use_exported_metrics() {
    let text = std::fs::read_to_string("deploy/prometheus-rules.yaml").unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_owned();
            let expr = rule["expr"].as_str().unwrap();
            assert_uses_exported_metrics(&name, expr);
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name} has no summary"
            );
            alerts.push((name, expr.to_owned()));
        }
    }
    let expiry = alerts
        .iter()
        .find(|(n, _)| n == "SluiceCertificateExpiresSoon")
        .unwrap();
    assert!(expiry.1.contains("14 * 24 * 3600"), "{}", expiry.1);
}

/// Prometheus itself accepts the rule file.
#[test]
fn promtool_accepts_the_alert_rules() {
    promtool_check_rules(std::path::Path::new("deploy/prometheus-rules.yaml"));
}

/// Every Grafana panel queries metrics sluice exports, in PromQL that Prometheus
/// accepts (each query is checked by promtool as a recording rule).
#[test]
fn grafana_dashboard_queries_are_valid() {
    let text = std::fs::read_to_string("deploy/grafana/sluice.json").unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    let mut count = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert_uses_exported_metrics(panel["title"].as_str().unwrap(), expr);
            rules += &format!(
                "      - record: sluice:grafana:{count}\n        expr: {}\n",
                serde_json::to_string(expr).unwrap()
            );
            count += 1;
        }
    }
    for needed in [
        "sluice_requests_total",
        "sluice_request_duration_seconds_bucket",
        "sluice_breaker_transitions_total",
        "sluice_config_swaps_total",
    ] {
        assert!(text.contains(needed), "the dashboard shows {needed}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rules).unwrap();
    promtool_check_rules(file.path());
}

/// The query names at least one metric, and only metrics sluice exports.
fn assert_uses_exported_metrics(what: &str, expr: &str) {
    // Histogram series name their base metric plus a suffix.
    let metrics: Vec<&str> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sluice_") && !w.starts_with("sluice_grafana"))
        .map(|w| w.strip_suffix("_bucket").unwrap_or(w))
        .collect();
    assert!(!metrics.is_empty(), "{what} uses no sluice metric");
    for metric in metrics {
        assert!(
            sluice::telemetry::FAMILIES.contains(&metric),
            "{what} uses {metric}, which sluice does not export"
        );
    }
}

/// Prometheus' own check of a rule file (installed by scripts/test).
fn promtool_check_rules(path: &std::path::Path) {
    let output = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .expect("promtool is installed by scripts/test");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
}

/// The optional Gateway API component: the standard-channel CRDs of one
/// pinned release, and a GatewayClass naming sluice's controller.
#[test]
fn the_gateway_api_component_pins_its_crds_and_names_our_controller() {
    let text = std::fs::read_to_string("deploy/gateway-api/kustomization.yaml").unwrap();
    let component: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(component["kind"], "Component");
    let resources: Vec<&str> = component["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let crds = resources
        .iter()
        .find(|r| r.starts_with("https://"))
        .unwrap();
    assert!(
        crds.contains("/releases/download/v") && crds.ends_with("/standard-install.yaml"),
        "a pinned release's standard channel: {crds}"
    );
    for local in resources.iter().filter(|r| !r.starts_with("https://")) {
        let text = std::fs::read_to_string(format!("deploy/gateway-api/{local}")).unwrap();
        let class: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(class["kind"], "GatewayClass");
        assert_eq!(
            class["spec"]["controllerName"].as_str(),
            Some(sluice::discovery::gateway::CONTROLLER_NAME)
        );
    }
}

/// The optional admission webhook component fits together and with the
/// DaemonSet: the patch keeps the base arguments, the Service reaches the
/// port sluice serves, the webhook calls that Service on ingress-nginx's
/// path, and both ways of getting the certificate (the Job, cert-manager)
/// name it and land it where sluice reads it.
#[test]
fn the_admission_webhook_component_fits_the_daemonset() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Service;
    use serde_yaml::Value as Yaml;
    let read =
        |file: &str| std::fs::read_to_string(format!("deploy/admission-webhook/{file}")).unwrap();
    let list = |component: &Yaml, field: &str| -> Vec<String> {
        component[field]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    };
    let component = |file: &str| -> Yaml {
        let component: Yaml = serde_yaml::from_str(&read(file)).unwrap();
        assert_eq!(component["kind"], "Component", "{file}");
        component
    };
    let common = component("common/kustomization.yaml");
    assert_eq!(
        list(&common, "resources"),
        ["service.yaml", "validatingwebhook.yaml"]
    );
    let with_job = component("kustomization.yaml");
    assert_eq!(list(&with_job, "components"), ["common"]);
    assert_eq!(list(&with_job, "resources"), ["certificate-job.yaml"]);
    let with_cert_manager = component("cert-manager/kustomization.yaml");
    assert_eq!(list(&with_cert_manager, "components"), ["../common"]);
    assert_eq!(list(&with_cert_manager, "resources"), ["certificate.yaml"]);

    let base: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/daemonset.yaml").unwrap()).unwrap();
    let patch: Yaml = serde_yaml::from_str(&read("common/daemonset-patch.yaml")).unwrap();
    let pod = |ds: &Yaml| ds["spec"]["template"]["spec"].clone();
    let strings = |v: &Yaml| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let args = strings(&pod(&patch)["containers"][0]["args"]);
    for arg in strings(&pod(&base)["containers"][0]["args"]) {
        assert!(
            args.contains(&arg),
            "the patch replaces args, and drops {arg}"
        );
    }
    let flag = |args: &[String], name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("--{name}"))
            .to_owned()
    };
    let port: i32 = flag(&args, "validating-webhook")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let service: Service = serde_yaml::from_str(&read("common/service.yaml")).unwrap();
    let service_port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(
        service_port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port))
    );
    let webhook: ValidatingWebhookConfiguration =
        serde_yaml::from_str(&read("common/validatingwebhook.yaml")).unwrap();
    let hook = &webhook.webhooks.as_ref().unwrap()[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    let reference = hook.client_config.service.as_ref().unwrap();
    assert_eq!(Some(&reference.name), service.metadata.name.as_ref());
    assert_eq!(
        Some(&reference.namespace),
        service.metadata.namespace.as_ref()
    );
    assert_eq!(reference.path.as_deref(), Some("/networking/v1/ingresses"));
    // The Secret the DaemonSet mounts, where sluice reads it.
    let volumes = pod(&patch)["volumes"].clone();
    let volume = volumes.as_sequence().unwrap()[0].clone();
    let secret = volume["secret"]["secretName"].as_str().unwrap().to_owned();
    assert_eq!(
        volume["secret"]["optional"], true,
        "sluice starts before the Secret exists"
    );
    let mounts = pod(&patch)["containers"][0]["volumeMounts"].clone();
    let mount = mounts
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap()
        .clone();
    let path = mount["mountPath"].as_str().unwrap();
    assert_eq!(
        flag(&args, "validating-webhook-certificate"),
        format!("{path}/tls.crt")
    );
    assert_eq!(
        flag(&args, "validating-webhook-key"),
        format!("{path}/tls.key")
    );
    let docs = |file: &str| -> Vec<Yaml> {
        serde_yaml::Deserializer::from_str(&read(file))
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    };
    let of_kind = |docs: &[Yaml], kind: &str| -> Yaml {
        docs.iter()
            .find(|v| v["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };

    // The Job: it names the Service, the Secret and the webhook, and may
    // do what `sluice webhook-certificate` does to them, and no more.
    let job_docs = docs("certificate-job.yaml");
    let job = of_kind(&job_docs, "Job");
    let job_pod = pod(&job);
    let job_args = strings(&job_pod["containers"][0]["args"]);
    assert_eq!(job_args[0], "webhook-certificate");
    assert_eq!(
        job_pod["containers"][0]["image"],
        pod(&base)["containers"][0]["image"]
    );
    assert_eq!(flag(&job_args, "namespace"), reference.namespace);
    assert_eq!(flag(&job_args, "service"), reference.name);
    assert_eq!(flag(&job_args, "secret-name"), secret);
    let configuration = webhook.metadata.name.clone().unwrap();
    assert_eq!(flag(&job_args, "webhook-configuration"), configuration);
    let account = job_pod["serviceAccountName"].as_str().unwrap();
    let rules = |kind: &str| -> Vec<PolicyRule> {
        let role = of_kind(&job_docs, kind);
        serde_yaml::from_value(role["rules"].clone()).unwrap()
    };
    for (binding, role) in [
        ("RoleBinding", "Role"),
        ("ClusterRoleBinding", "ClusterRole"),
    ] {
        let binding = of_kind(&job_docs, binding);
        assert_eq!(binding["subjects"][0]["name"], account);
        assert_eq!(binding["roleRef"]["kind"], role);
        assert_eq!(
            binding["roleRef"]["name"],
            of_kind(&job_docs, role)["metadata"]["name"]
        );
    }
    let named = |rules: &[PolicyRule], resource: &str, verb: &str, name: &str| {
        rules.iter().any(|r| {
            r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
                && r.resource_names
                    .as_ref()
                    .is_none_or(|n| n.iter().any(|n| n == name))
        })
    };
    let role = rules("Role");
    for verb in ["get", "update", "create"] {
        assert!(named(&role, "secrets", verb, &secret), "{verb} secrets");
    }
    assert!(
        !named(&role, "secrets", "get", "another-secret"),
        "every Secret readable"
    );
    let cluster_role = rules("ClusterRole");
    for verb in ["get", "update"] {
        assert!(named(
            &cluster_role,
            "validatingwebhookconfigurations",
            verb,
            &configuration
        ));
    }
    assert!(!named(
        &cluster_role,
        "validatingwebhookconfigurations",
        "update",
        "another"
    ));

    // cert-manager: the same Secret, naming the Service, and its CA
    // injected into this webhook.
    let certificate = of_kind(&docs("cert-manager/certificate.yaml"), "Certificate");
    let dns = format!("{}.{}.svc", reference.name, reference.namespace);
    assert_eq!(
        certificate["spec"]["dnsNames"][0].as_str(),
        Some(dns.as_str())
    );
    assert_eq!(
        certificate["spec"]["secretName"].as_str(),
        Some(secret.as_str())
    );
    let inject: Yaml = serde_yaml::from_str(&read("cert-manager/inject-ca.yaml")).unwrap();
    assert_eq!(
        inject["metadata"]["name"].as_str(),
        Some(configuration.as_str())
    );
    let from = format!(
        "{}/{}",
        certificate["metadata"]["namespace"].as_str().unwrap(),
        certificate["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(
        inject["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str(),
        Some(from.as_str())
    );
}
