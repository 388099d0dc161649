//! Layer 8, wiring. `sluice migrate`: what sluice will do with a fleet's
//! Ingresses and its ingress-nginx ConfigMap, before it serves them.
//!
//! The verdicts come from the code that serves: the objects are translated by
//! `discovery::translate` with the options the proxy would use, and each
//! annotation and ConfigMap key is judged by the registry
//! (`compat::registry`). Per Ingress: served unchanged, served with
//! differences, not served (skipped), or failing closed (403).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::compat::registry::{self, Key};
use crate::config::Config;
use crate::discovery::annotations::{sluice_reads, split_key};
use crate::discovery::{translate, ClassSelection, LastGood, Retained, Snapshot, Warning};
use crate::reload::translate_options;

pub mod http_route;

/// What sluice will make of one Ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Unchanged,
    Differences,
    NotServed,
    FailsClosed,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Unchanged => "served unchanged",
            Verdict::Differences => "served with differences",
            Verdict::NotServed => "not served",
            Verdict::FailsClosed => "fails closed (403)",
        }
    }
}

/// One key and what sluice does with it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub key: String,
    pub status: &'static str,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngressReport {
    pub namespace: String,
    pub name: String,
    pub verdict: Verdict,
    pub annotations: Vec<KeyReport>,
    /// The warnings sluice will report for this Ingress.
    pub warnings: Vec<String>,
    /// The HTTPRoutes it amounts to (`http_route`), when it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<serde_json::Value>,
    /// Why it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_http_route: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ingresses: Vec<IngressReport>,
    pub configmap: Vec<KeyReport>,
    /// Warnings that belong to no Ingress (config keys, unreadable files).
    pub warnings: Vec<String>,
    pub summary: Summary,
}

/// How many Ingresses got each verdict.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub unchanged: usize,
    pub differences: usize,
    pub not_served: usize,
    pub fails_closed: usize,
}

impl Report {
    /// Whether any Ingress would not be served as before: 403 or skipped.
    pub fn closes_anything(&self) -> bool {
        self.ingresses
            .iter()
            .any(|i| matches!(i.verdict, Verdict::FailsClosed | Verdict::NotServed))
    }
}

/// Reasons that mean the whole Ingress is not served.
const NOT_SERVED: &[&str] = &["invalid-annotation", "invalid-ingress", "internal-error"];

/// Reasons about the cluster's state rather than the Ingress (a Service not
/// among the manifests given): listed, but no difference in meaning.
const STATE: &[&str] = &[
    "service-not-found",
    "service-port-not-found",
    "endpoint-refused",
];

/// The report for `snapshot` (with what its source skipped), as sluice
/// would serve it with `config` and `class`; `configmap` is the config
/// file's text, to report each of its keys.
pub fn report(
    snapshot: &Snapshot,
    source_warnings: &[Warning],
    config: &Config,
    configmap: Option<&str>,
    class: &ClassSelection,
    gateway: http_route::GatewayName<'_>,
) -> Report {
    let options = translate_options(config, class, false);
    let snapshot = &with_class(snapshot, class);
    let translation = translate(
        snapshot,
        &options,
        &Retained::default(),
        &LastGood::default(),
    );
    let closed_by_config = translation
        .warnings
        .iter()
        .any(|w| w.object.is_none() && w.reason == "fail-closed");
    let by_ref: BTreeMap<_, &Ingress> = snapshot
        .ingresses
        .iter()
        .map(|i| {
            let key = (
                i.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                i.metadata.name.clone().unwrap_or_default(),
            );
            (key, &**i)
        })
        .collect();
    let mut ingresses = Vec::new();
    for object in &translation.ours {
        let warnings: Vec<&Warning> = translation
            .warnings
            .iter()
            .filter(|w| w.object.as_ref() == Some(object))
            .collect();
        // A skipped Ingress is not served at all (404), whatever else it asks.
        let verdict = if warnings.iter().any(|w| NOT_SERVED.contains(&w.reason)) {
            Verdict::NotServed
        } else if closed_by_config || warnings.iter().any(|w| w.reason == "fail-closed") {
            Verdict::FailsClosed
        } else if warnings.iter().all(|w| STATE.contains(&w.reason)) {
            Verdict::Unchanged
        } else {
            Verdict::Differences
        };
        let ingress = by_ref.get(&(object.namespace.clone(), object.name.clone()));
        let annotations = ingress
            .and_then(|i| i.metadata.annotations.as_ref())
            .map(annotation_reports)
            .unwrap_or_default();
        // Only what is served as before has an equivalent to suggest.
        let suggested = match (ingress, verdict) {
            (Some(ingress), Verdict::Unchanged | Verdict::Differences) => {
                http_route::suggest(ingress, &translation.table, snapshot, gateway)
            }
            _ => Err(format!("it is {}", verdict.label())),
        };
        let (http_routes, no_http_route) = match suggested {
            Ok(routes) => (routes, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        ingresses.push(IngressReport {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            verdict,
            annotations,
            warnings: warnings.iter().map(|w| short(w)).collect(),
            http_routes,
            no_http_route,
        });
    }
    let mut summary = Summary::default();
    for ingress in &ingresses {
        *match ingress.verdict {
            Verdict::Unchanged => &mut summary.unchanged,
            Verdict::Differences => &mut summary.differences,
            Verdict::NotServed => &mut summary.not_served,
            Verdict::FailsClosed => &mut summary.fails_closed,
        } += 1;
    }
    let warnings = source_warnings
        .iter()
        .chain(translation.warnings.iter().filter(|w| w.object.is_none()))
        .map(ToString::to_string)
        .collect();
    Report {
        ingresses,
        configmap: configmap.map(configmap_reports).unwrap_or_default(),
        warnings,
        summary,
    }
}

/// Exports rarely carry the IngressClass: without one named as asked, the
/// class is taken to be the controller's, as the fleet being migrated has it.
fn with_class(snapshot: &Snapshot, class: &ClassSelection) -> Snapshot {
    let mut snapshot = snapshot.clone();
    let named = snapshot
        .ingress_classes
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some(&class.ingress_class));
    if !named {
        let ingress_class = IngressClass {
            metadata: ObjectMeta {
                name: Some(class.ingress_class.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(class.controller_class.clone()),
                parameters: None,
            }),
        };
        snapshot
            .ingress_classes
            .push(std::sync::Arc::new(ingress_class));
    }
    snapshot
}

/// The objects a report needs, listed once from a cluster: Ingresses,
/// IngressClasses, Services and TLS Secrets (pods are state, not meaning).
pub async fn cluster_snapshot(client: kube::Client) -> Result<Snapshot, kube::Error> {
    use k8s_openapi::api::core::v1::{Secret, Service};
    use kube::api::{Api, ListParams};
    let all = ListParams::default();
    let ingresses = Api::<Ingress>::all(client.clone()).list(&all).await?;
    let classes = Api::<IngressClass>::all(client.clone()).list(&all).await?;
    let services = Api::<Service>::all(client.clone()).list(&all).await?;
    let tls = ListParams::default().fields("type=kubernetes.io/tls");
    let secrets = Api::<Secret>::all(client).list(&tls).await?;
    Ok(Snapshot {
        ingresses: arcs(ingresses.items),
        ingress_classes: arcs(classes.items),
        services: arcs(services.items),
        secrets: arcs(secrets.items),
        ..Snapshot::default()
    })
}

fn arcs<T>(items: Vec<T>) -> Vec<std::sync::Arc<T>> {
    items.into_iter().map(std::sync::Arc::new).collect()
}

/// A warning without the object it is listed under.
fn short(warning: &Warning) -> String {
    match &warning.field {
        Some(field) => format!("{field}: {}", warning.message),
        None => warning.message.clone(),
    }
}

fn annotation_reports(annotations: &BTreeMap<String, String>) -> Vec<KeyReport> {
    let mut reports = Vec::new();
    for key in annotations.keys() {
        let Some((prefix, name)) = split_key(key) else {
            continue;
        };
        let known = registry::annotation(name);
        let (status, note) = match known {
            // A key sluice reads under this prefix keeps the registry's note
            // (a documented difference), or is sluice's own.
            Some(k) if sluice_reads(prefix, name) => (k.status.label(), k.status.note()),
            None if sluice_reads(prefix, name) => ("supported", "a sluice annotation"),
            Some(k) => (k.status.label(), k.status.note()),
            None => (
                "unknown",
                "neither an ingress-nginx annotation nor a sluice one; ignored",
            ),
        };
        reports.push(KeyReport {
            key: key.clone(),
            status,
            note,
        });
    }
    reports
}

/// Each key of a config file (a ConfigMap manifest or its `data`).
fn configmap_reports(text: &str) -> Vec<KeyReport> {
    let Ok(serde_yaml::Value::Mapping(map)) = serde_yaml::from_str::<serde_yaml::Value>(text)
    else {
        return Vec::new();
    };
    crate::config::data_of(map)
        .keys()
        .filter_map(|k| k.as_str())
        .map(|key| {
            let (status, note) = match registry::configmap_key(key) {
                Some(k) => (k.status.label(), k.status.note()),
                None => ("supported", "a sluice config key"),
            };
            KeyReport {
                key: key.to_owned(),
                status,
                note,
            }
        })
        .collect()
}

/// The report as text, for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for ingress in &report.ingresses {
        let _ = writeln!(
            out,
            "Ingress {}/{}: {}",
            ingress.namespace,
            ingress.name,
            ingress.verdict.label()
        );
        for key in &ingress.annotations {
            let _ = writeln!(out, "  {:<55} {:<20} {}", key.key, key.status, key.note);
        }
        for warning in &ingress.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    if !report.configmap.is_empty() {
        let _ = writeln!(out, "ConfigMap:");
        for key in &report.configmap {
            let _ = writeln!(out, "  {:<40} {:<20} {}", key.key, key.status, key.note);
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "Summary: {} Ingresses: {} {}, {} {}, {} {}, {} {}",
        report.ingresses.len(),
        s.unchanged,
        Verdict::Unchanged.label(),
        s.differences,
        Verdict::Differences.label(),
        s.not_served,
        Verdict::NotServed.label(),
        s.fails_closed,
        Verdict::FailsClosed.label(),
    );
    out
}

/// The suggested HTTPRoutes as one YAML file, each Ingress without one
/// named in a comment with the reason.
pub fn render_http_routes(report: &Report) -> String {
    let mut out = String::new();
    for ingress in &report.ingresses {
        let (namespace, name) = (&ingress.namespace, &ingress.name);
        if let Some(why) = &ingress.no_http_route {
            let _ = writeln!(
                out,
                "# Ingress {namespace}/{name}: no HTTPRoute equivalent: {why}"
            );
        }
        for route in &ingress.http_routes {
            let yaml = serde_yaml::to_string(route).unwrap_or_default();
            let _ = write!(out, "---\n# from Ingress {namespace}/{name}\n{yaml}");
        }
    }
    out
}

/// Every ingress-nginx key's status, as the migration guide's tables.
pub fn table() -> String {
    let mut out = String::new();
    for (title, prefix, keys) in [
        (
            "Annotations",
            "nginx.ingress.kubernetes.io/",
            registry::ANNOTATIONS,
        ),
        ("ConfigMap keys", "", registry::CONFIGMAP),
    ] {
        let counts: Vec<String> = registry::counts(keys)
            .iter()
            .map(|(label, n)| format!("{n} {label}"))
            .collect();
        let _ = writeln!(out, "### {title} ({})\n", counts.join("; "));
        let _ = writeln!(out, "| key | status | notes |\n|---|---|---|");
        for Key { name, status } in keys {
            let note = status.note().replace('|', "\\|");
            let _ = writeln!(out, "| `{prefix}{name}` | {} | {note} |", status.label());
        }
        out.push('\n');
    }
    out
}
