//! The Gateway API status sluice would write: each object's conditions as
//! the spec names them (`Accepted`, `Programmed`, `ResolvedRefs`), for the
//! Gateways of its classes, their listeners, and the HTTPRoutes attached to
//! them. Computed by `translate` with the table, shown in `/api/routes`.

use serde::Serialize;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectStatus {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Condition>,
    /// Listeners (Gateway) or parents (HTTPRoute).
    pub parts: Vec<PartStatus>,
}
