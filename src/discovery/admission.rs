//! The validating admission webhook's verdict (issue #23): an Ingress,
//! HTTPRoute, GRPCRoute or Gateway being created or updated is translated
//! with the current snapshot, by the same code as the proxy, and denied
//! when sluice would not serve it as written: skipped, a rule refused or
//! answering 500, a listener unserved, failing closed, or in conflict with
//! another object. Whatever the proxy would merely warn
//! about comes back as admission `warnings`, which `kubectl` prints.
//!
//! Only the part of the snapshot that can change the verdict is translated
//! (`scope`): milliseconds at 10,000 Ingresses, not a full build.
//!
//! An object of another class, or another kind, is allowed untouched. So
//! is one sluice cannot judge (a request it cannot read): a sluice outage
//! or bug must never block a cluster, so the webhook says why and allows.

mod scope;

use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::gateway::{Gateway, GrpcRoute, HttpRoute};
use super::{translate, LastGood, ObjectRef, Retained, Snapshot, TranslateOptions};

/// Warning reasons that mean the object, or one of its rules or
/// listeners, would not be served as written: these deny.
pub const DENY: &[&str] = &[
    // Ingresses.
    "invalid-annotation",
    "invalid-ingress",
    "internal-error",
    "fail-closed",
    "conflict",
    "host-owned",
    "tls-host-refused",
    "canary-without-main",
    "canary-cross-namespace",
    "invalid-path",
    "invalid-backend",
    // Gateway API routes (a rule skipped or answering 500) and listeners.
    "invalid-match",
    "unsupported-match",
    "unsupported-filter",
    "ref-not-permitted",
    "backend-not-found",
    "no-backend",
    "invalid-timeout",
    "gateway-listener",
];

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why, when denied (each denying warning, one a line).
    pub message: String,
    /// What sluice would warn about, for `kubectl` to print.
    pub warnings: Vec<String>,
}

impl Decision {
    fn allow(warnings: Vec<String>) -> Decision {
        Decision {
            allowed: true,
            message: String::new(),
            warnings,
        }
    }
}

/// The verdict on an AdmissionReview's `request`, against `snapshot` as the
/// proxy translates it with `options`.
pub fn decide(request: &Value, snapshot: &Snapshot, options: &TranslateOptions) -> Decision {
    match Review::read(request) {
        Ok(review) => review.judge(review.scope(snapshot), options),
        Err(untouched) => untouched,
    }
}

/// An object to judge: an Ingress, HTTPRoute, GRPCRoute or Gateway being
/// created or updated.
pub struct Review {
    object: Object,
    at: ObjectRef,
}

/// The object under review, read as the snapshot holds its kind.
pub(super) enum Object {
    Ingress(Arc<Ingress>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    Gateway(Arc<Gateway>),
}

impl Review {
    /// The object of an AdmissionReview's `request`; otherwise the answer:
    /// allowed untouched (another operation or kind), or allowed with a
    /// warning (an object sluice cannot read).
    pub fn read(request: &Value) -> Result<Review, Decision> {
        let operation = request["operation"].as_str().unwrap_or_default();
        let kind = request["kind"]["kind"].as_str().unwrap_or_default();
        if !matches!(operation, "CREATE" | "UPDATE") {
            return Err(Decision::allow(Vec::new()));
        }
        let namespace = request["object"]["metadata"]["namespace"]
            .as_str()
            .or_else(|| request["namespace"].as_str())
            .unwrap_or("default")
            .to_owned();
        let mut value = request["object"].clone();
        value["metadata"]["namespace"] = Value::String(namespace);
        // The apiserver stamps a new object before validating webhooks see
        // it. One without a stamp (a client posting reviews itself) is the
        // newest, as it will be: never older than the Ingress it collides
        // with, whatever its name.
        if operation == "CREATE" && value["metadata"]["creationTimestamp"].is_null() {
            let now = k8s_openapi::jiff::Timestamp::now();
            value["metadata"]["creationTimestamp"] = json!(now.to_string());
        }
        let read = match kind {
            "Ingress" => typed(value, "Ingress", Object::Ingress, |o| &o.metadata),
            "HTTPRoute" => typed(value, "HTTPRoute", Object::HttpRoute, |o| &o.metadata),
            "GRPCRoute" => typed(value, "GRPCRoute", Object::GrpcRoute, |o| &o.metadata),
            "Gateway" => typed(value, "Gateway", Object::Gateway, |o| &o.metadata),
            _ => return Err(Decision::allow(Vec::new())),
        };
        read.map_err(|e| {
            let why = format!("sluice could not read this {kind} ({e}); allowed unjudged");
            Decision::allow(vec![why])
        })
    }

    /// What of `snapshot` can change the verdict, with this version of the
    /// object in place of the stored one (`scope`).
    pub fn scope(&self, snapshot: &Snapshot) -> Snapshot {
        scope::scope(snapshot, &self.object, &self.at)
    }

    /// The verdict against `snapshot` (the object's `scope`).
    pub fn judge(&self, snapshot: Snapshot, options: &TranslateOptions) -> Decision {
        let translation = translate(
            &snapshot,
            options,
            &Retained::default(),
            &LastGood::default(),
        );
        let object = &self.at;
        // Ours: an Ingress of our class; a route or Gateway sluice judged (it
        // has a status), being of our Gateways or classes.
        let ours = match object.kind {
            "Ingress" => translation.ours.contains(object),
            _ => translation.table.gateway_api.iter().any(|s| {
                s.kind == object.kind && s.namespace == object.namespace && s.name == object.name
            }),
        };
        if !ours {
            return Decision::allow(Vec::new());
        }
        let (denied, warned): (Vec<_>, Vec<_>) = translation
            .warnings
            .iter()
            .filter(|w| w.object.as_ref() == Some(object))
            .partition(|w| DENY.contains(&w.reason));
        let text = |w: &super::Warning| match &w.field {
            Some(field) => format!("{} ({field}): {}", w.reason, w.message),
            None => format!("{}: {}", w.reason, w.message),
        };
        let warnings = warned.into_iter().map(text).collect();
        if denied.is_empty() {
            return Decision::allow(warnings);
        }
        Decision {
            allowed: false,
            message: denied.into_iter().map(text).collect::<Vec<_>>().join("\n"),
            warnings,
        }
    }
}

/// `value` read as `T`, and where it is.
fn typed<T: DeserializeOwned>(
    value: Value,
    kind: &'static str,
    wrap: fn(Arc<T>) -> Object,
    meta: fn(&T) -> &ObjectMeta,
) -> Result<Review, serde_json::Error> {
    let object: T = serde_json::from_value(value)?;
    let at = ObjectRef {
        kind,
        namespace: meta(&object).namespace.clone().unwrap_or_default(),
        name: meta(&object).name.clone().unwrap_or_default(),
    };
    Ok(Review {
        object: wrap(Arc::new(object)),
        at,
    })
}

/// The AdmissionReview v1 answer to `review`.
pub fn respond(review: &Value, decision: &Decision) -> Value {
    let mut response = json!({
        "uid": review["request"]["uid"],
        "allowed": decision.allowed,
    });
    if !decision.allowed {
        response["status"] =
            json!({"code": 403, "reason": "Forbidden", "message": decision.message});
    }
    if !decision.warnings.is_empty() {
        response["warnings"] = json!(decision.warnings);
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::gateway::gateway_yaml;
    use crate::discovery::manifests::snapshot_from_str;
    use crate::discovery::ClassSelection;

    const CLUSTER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: sluice}
spec: {controller: sluice.io/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: sluice
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

    fn options() -> TranslateOptions {
        TranslateOptions {
            class: ClassSelection {
                ingress_class: "sluice".into(),
                controller_class: "sluice.io/ingress-controller".into(),
                watch_without_class: false,
            },
            ..TranslateOptions::default()
        }
    }

    fn review(object: Value) -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "operation": "CREATE",
            "namespace": object["metadata"]["namespace"],
            "object": object,
        })
    }

    fn ingress(name: &str, class: &str, host: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": "shop", "annotations": annotations,
                "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}]},
        })
    }

    #[test]
    fn verdicts_follow_what_the_proxy_would_do() {
        let (snapshot, _) = snapshot_from_str(CLUSTER);
        let decide = |object| decide(&review(object), &snapshot, &options());
        // A plain Ingress of our class: allowed, nothing to say.
        let plain = decide(ingress("blog", "sluice", "blog.example", json!({})));
        assert_eq!(plain, Decision::allow(Vec::new()));
        // A bad annotation would skip it: denied, with the proxy's words.
        let broken = decide(ingress(
            "blog",
            "sluice",
            "blog.example",
            json!({"nginx.ingress.kubernetes.io/proxy-read-timeout": "never"}),
        ));
        assert!(!broken.allowed);
        assert!(broken.message.contains("proxy-read-timeout"), "{broken:?}");
        // The path an older Ingress holds: a conflict, denied.
        let taken = decide(ingress("thief", "sluice", "shop.example", json!({})));
        assert!(
            !taken.allowed && taken.message.starts_with("conflict"),
            "{taken:?}"
        );
        // Created without a stamp, it is still the newer, whatever its name.
        let mut unstamped = ingress("a-thief", "sluice", "shop.example", json!({}));
        unstamped["metadata"]
            .as_object_mut()
            .map(|m| m.remove("creationTimestamp"));
        let taken = decide(unstamped);
        assert!(
            !taken.allowed && taken.message.starts_with("conflict"),
            "{taken:?}"
        );
        // An annotation sluice only warns about: allowed, with a warning.
        let warned = decide(ingress(
            "blog",
            "sluice",
            "blog.example",
            json!({"nginx.ingress.kubernetes.io/use-gzip": "true"}),
        ));
        assert!(warned.allowed && !warned.warnings.is_empty(), "{warned:?}");
        // Another class's Ingress, another kind, a delete: untouched.
        let theirs = decide(ingress("x", "nginx", "shop.example", json!({})));
        assert_eq!(theirs, Decision::allow(Vec::new()));
        let mut delete = review(ingress("x", "sluice", "shop.example", json!({})));
        delete["operation"] = json!("DELETE");
        assert!(super::decide(&delete, &snapshot, &options()).allowed);
        // An update of the owner itself is no conflict with itself.
        let mut update = review(ingress("shop", "sluice", "shop.example", json!({})));
        update["operation"] = json!("UPDATE");
        assert!(super::decide(&update, &snapshot, &options()).allowed);
        // What cannot be read is allowed, and says so.
        let unreadable = decide(json!({"metadata": {"name": 5}}));
        assert!(unreadable.allowed && !unreadable.warnings.is_empty());
    }

    #[test]
    fn gateway_api_objects_of_our_classes_are_judged_too() {
        let gateway = gateway_yaml(
            "sluice",
            "shop",
            "edge",
            &["{name: http, port: 80, protocol: HTTP}"],
        );
        let (snapshot, _) = snapshot_from_str(&format!("{CLUSTER}{gateway}"));
        let judge = |kind: &str, object: Value| {
            let request = json!({"kind": {"kind": kind}, "operation": "CREATE", "object": object});
            decide(&request, &snapshot, &options())
        };
        let route = |parent: &str, filters: Value| {
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": "shop"},
                "spec": {"parentRefs": [{"name": parent}], "hostnames": ["route.example"],
                    "rules": [{"filters": filters, "backendRefs": [{"name": "web", "port": 80}]}]},
            })
        };
        assert!(judge("HTTPRoute", route("edge", json!([]))).allowed);
        let extension = json!([{"type": "ExtensionRef", "extensionRef": {"group": "x", "kind": "F", "name": "f"}}]);
        let refused = judge("HTTPRoute", route("edge", extension.clone()));
        assert!(
            !refused.allowed && refused.message.starts_with("unsupported-filter"),
            "{refused:?}"
        );
        // A route of another controller's Gateway: untouched.
        assert_eq!(
            judge("HTTPRoute", route("theirs", extension)),
            Decision::allow(Vec::new())
        );
        let odd_port = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "shop"},
            "spec": {"gatewayClassName": "sluice", "listeners": [{"name": "alt", "port": 8080, "protocol": "HTTP"}]},
        });
        let denied = judge("Gateway", odd_port);
        assert!(
            !denied.allowed && denied.message.contains("8080"),
            "{denied:?}"
        );
    }

    #[test]
    fn the_answer_is_an_admission_review() {
        let answer = respond(
            &json!({"request": {"uid": "abc"}}),
            &Decision {
                allowed: false,
                message: "conflict: taken".into(),
                warnings: vec!["w".into()],
            },
        );
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["response"]["uid"], "abc");
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["message"], "conflict: taken");
        assert_eq!(answer["response"]["warnings"][0], "w");
    }
}
