//! The Gateway API status sluice would write: each object's conditions as
//! the spec names them (`Accepted`, `Programmed`, `ResolvedRefs`), for its
//! GatewayClasses, their Gateways and listeners, and the HTTPRoutes attached
//! to them. Computed by `translate` with the table, shown in `/api/routes`,
//! and written to the cluster by the leader (`discovery::gateway_status`).

use serde::Serialize;

/// The `controllerName` of the GatewayClasses sluice serves, unless the
/// config file's `gateway-controller-name` says otherwise.
pub const CONTROLLER_NAME: &str = "sluice.io/gateway-controller";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn holds(kind: &'static str, reason: &'static str) -> Condition {
        Condition {
            kind,
            status: "True",
            reason,
            message: String::new(),
        }
    }

    pub fn fails(kind: &'static str, reason: &'static str, message: String) -> Condition {
        Condition {
            kind,
            status: "False",
            reason,
            message,
        }
    }
}

/// A listener of a Gateway, or a parent of a route, and its conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartStatus {
    pub name: String,
    pub conditions: Vec<Condition>,
    /// A route's parent, as its `parentRefs` entry names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// A listener's: how many routes attach to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_routes: Option<u32>,
}

impl PartStatus {
    /// A listener that serves: its `Programmed` condition holds.
    pub fn programmed(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.kind == "Programmed" && c.status == "True")
    }

    pub fn new(name: String, conditions: Vec<Condition>) -> PartStatus {
        PartStatus {
            name,
            conditions,
            parent: None,
            attached_routes: None,
        }
    }
}

/// A route's `parentRefs` entry: a Gateway, and maybe one of its listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentRef {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectStatus {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` of the object judged: the status's
    /// `observedGeneration`.
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
    /// Listeners (Gateway) or parents (HTTPRoute).
    pub parts: Vec<PartStatus>,
}
