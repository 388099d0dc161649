//! Which Ingresses are ours: by IngressClass, the legacy annotation, or the
//! default class, so several fleets can share a cluster.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::discovery::Snapshot;

pub const DEFAULT_INGRESS_CLASS: &str = "sluice";
pub const DEFAULT_CONTROLLER_CLASS: &str = "sluice.io/ingress-controller";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Which Ingresses are ours, so several fleets can share a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSelection {
    pub ingress_class: String,
    pub controller_class: String,
    pub watch_without_class: bool,
}

impl Default for ClassSelection {
    fn default() -> Self {
        ClassSelection {
            ingress_class: DEFAULT_INGRESS_CLASS.into(),
            controller_class: DEFAULT_CONTROLLER_CLASS.into(),
            watch_without_class: false,
        }
    }
}

/// Our Ingresses, oldest first (on a conflict the first to claim a rule keeps it),
/// and how many belong to someone else.
pub(super) fn select_ours<'s>(
    snapshot: &'s Snapshot,
    class: &ClassSelection,
) -> (Vec<&'s Arc<Ingress>>, usize) {
    let ours_by_name = |name: &str| {
        snapshot.ingress_classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                    == Some(&class.controller_class)
        })
    };
    let default_class = snapshot.ingress_classes.iter().any(|c| {
        c.metadata.name.as_deref() == Some(&class.ingress_class)
            && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                == Some(&class.controller_class)
            && annotation(&c.metadata, DEFAULT_CLASS_ANNOTATION) == Some("true")
    });
    let is_ours = |ingress: &Ingress| {
        if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return ours_by_name(name);
        }
        if let Some(legacy) = annotation(&ingress.metadata, LEGACY_CLASS_ANNOTATION) {
            return legacy == class.ingress_class;
        }
        default_class || class.watch_without_class
    };
    let mut ours: Vec<&Arc<Ingress>> = snapshot.ingresses.iter().filter(|i| is_ours(i)).collect();
    let ignored = snapshot.ingresses.len() - ours.len();
    ours.sort_by(|a, b| {
        let key = |i: &'s Ingress| {
            let m = &i.metadata;
            (
                m.creation_timestamp.as_ref(),
                m.namespace.as_deref(),
                m.name.as_deref(),
            )
        };
        key(a).cmp(&key(b))
    });
    (ours, ignored)
}

pub(super) fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}
