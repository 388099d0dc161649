//! ReferenceGrant: a reference from a Gateway API object to an object of
//! another namespace (a route's `backendRefs`, a listener's
//! `certificateRefs`) holds only where the target's namespace grants it.
//! A grant is read as the spec says: `from` by group, kind and namespace;
//! `to` by group, kind and, when given, name.

use std::sync::Arc;

use crate::discovery::gateway::{ReferenceGrant, GROUP};

pub(super) struct Grants<'a> {
    grants: &'a [Arc<ReferenceGrant>],
}

/// The referring object: its kind (of the Gateway API group) and namespace.
pub(super) struct From<'a> {
    pub(super) kind: &'a str,
    pub(super) namespace: &'a str,
}

impl<'a> Grants<'a> {
    pub(super) fn new(grants: &'a [Arc<ReferenceGrant>]) -> Grants<'a> {
        Grants { grants }
    }

    /// Whether `from` may refer to the core object `kind` `namespace/name`.
    /// The same namespace needs no grant.
    pub(super) fn permit(&self, from: &From<'_>, kind: &str, namespace: &str, name: &str) -> bool {
        if from.namespace == namespace {
            return true;
        }
        self.grants
            .iter()
            .filter(|g| g.metadata.namespace.as_deref() == Some(namespace))
            .any(|g| {
                let by = g.spec.from.iter().any(|f| {
                    f.group == GROUP && f.kind == from.kind && f.namespace == from.namespace
                });
                let to = g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                });
                by && to
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::manifests::snapshot_from_str;

    #[test]
    fn only_what_the_target_namespace_grants_is_permitted() {
        let (snapshot, warnings) = snapshot_from_str(
            r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: web, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service, name: web}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: edge}]
  to: [{group: "", kind: Secret}]
"#,
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let grants = Grants::new(&snapshot.reference_grants);
        let route = From {
            kind: "HTTPRoute",
            namespace: "apps",
        };
        assert!(grants.permit(&route, "Service", "backends", "web"));
        assert!(!grants.permit(&route, "Service", "backends", "db"));
        assert!(!grants.permit(&route, "Secret", "backends", "web"));
        assert!(grants.permit(&route, "Service", "apps", "anything"));
        let elsewhere = From {
            kind: "HTTPRoute",
            namespace: "other",
        };
        assert!(!grants.permit(&elsewhere, "Service", "backends", "web"));
        let gateway = From {
            kind: "Gateway",
            namespace: "edge",
        };
        assert!(grants.permit(&gateway, "Secret", "certs", "any-name"));
        assert!(!grants.permit(&gateway, "Service", "backends", "web"));
    }
}
