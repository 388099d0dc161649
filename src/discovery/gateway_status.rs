//! Gateway API status, written by the replica that holds the status Lease
//! (`status`): the conditions `translate` computed for sluice's
//! GatewayClasses, Gateways (with their listeners and the nodes' addresses)
//! and the HTTPRoutes attached to them, each with `observedGeneration`.
//!
//! What was written is remembered, so an unchanged status is not written
//! again. An HTTPRoute's `parents` may hold other controllers' entries:
//! they are kept, and only sluice's are replaced (or removed once the route
//! no longer attaches to a Gateway of sluice's).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::gateway::{Gateway, GatewayClass, GrpcRoute, HttpRoute, GROUP};
use crate::routing::gateway_status::{Condition, ObjectStatus, PartStatus};

/// `(kind, namespace, name)` of an object whose status was written.
type Key = (&'static str, String, String);

/// Writes what changed since the last call; `written` keeps what was
/// written, by object.
pub async fn write(
    client: &Client,
    (statuses, controller): (&[ObjectStatus], &str),
    addresses: &[String],
    written: &mut BTreeMap<Key, Value>,
) -> Result<(), kube::Error> {
    let now = Timestamp::now().to_string();
    let mut current = BTreeMap::new();
    for status in statuses {
        let key = (status.kind, status.namespace.clone(), status.name.clone());
        let body = body(status, addresses, controller);
        if written.get(&key) != Some(&body) {
            patch(client, (status.kind, controller), &key, &body, &now).await?;
        }
        current.insert(key, body);
    }
    // Routes that no longer attach to sluice's Gateways lose sluice's entries.
    for (key, _) in written.iter().filter(|(k, _)| !current.contains_key(*k)) {
        if key.0 == "HTTPRoute" || key.0 == "GRPCRoute" {
            let nothing = json!({"parents": []});
            patch(client, (key.0, controller), key, &nothing, &now).await?;
        }
    }
    *written = current;
    Ok(())
}

/// The status as the spec lays it out, without the times (which are added
/// when written, so an unchanged status compares equal).
fn body(status: &ObjectStatus, addresses: &[String], controller: &str) -> Value {
    let generation = status.generation;
    let conditions = |c: &[Condition]| -> Vec<Value> {
        c.iter()
            .map(|c| json!({"type": c.kind, "status": c.status, "reason": c.reason, "message": c.message, "observedGeneration": generation}))
            .collect()
    };
    match status.kind {
        "Gateway" => {
            let addresses: Vec<Value> = addresses
                .iter()
                .map(|a| match a.parse::<IpAddr>() {
                    Ok(_) => json!({"type": "IPAddress", "value": a}),
                    Err(_) => json!({"type": "Hostname", "value": a}),
                })
                .collect();
            let listeners: Vec<Value> = status
                .parts
                .iter()
                .map(|l| {
                    json!({
                        "name": l.name,
                        "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}],
                        "attachedRoutes": l.attached_routes.unwrap_or(0),
                        "conditions": conditions(&l.conditions),
                    })
                })
                .collect();
            json!({"addresses": addresses, "conditions": conditions(&status.conditions), "listeners": listeners})
        }
        "HTTPRoute" | "GRPCRoute" => {
            let parents: Vec<Value> = status
                .parts
                .iter()
                .filter_map(|p| parent(p, controller, &conditions))
                .collect();
            json!({"parents": parents})
        }
        _ => json!({"conditions": conditions(&status.conditions)}),
    }
}

fn parent(
    part: &PartStatus,
    controller: &str,
    conditions: &dyn Fn(&[Condition]) -> Vec<Value>,
) -> Option<Value> {
    let parent = part.parent.as_ref()?;
    let mut reference = json!({"group": GROUP, "kind": "Gateway", "namespace": parent.namespace, "name": parent.name});
    if let Some(section) = &parent.section_name {
        reference["sectionName"] = json!(section);
    }
    if let Some(port) = parent.port {
        reference["port"] = json!(port);
    }
    Some(
        json!({"parentRef": reference, "controllerName": controller, "conditions": conditions(&part.conditions)}),
    )
}

/// Every condition gets `lastTransitionTime` (the schema requires it).
fn stamped(mut body: Value, now: &str) -> Value {
    fn stamp(value: &mut Value, now: &str) {
        match value {
            Value::Object(map) => {
                if map.contains_key("observedGeneration") && map.contains_key("reason") {
                    map.insert("lastTransitionTime".into(), json!(now));
                }
                map.values_mut().for_each(|v| stamp(v, now));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| stamp(v, now)),
            _ => {}
        }
    }
    stamp(&mut body, now);
    body
}

async fn patch(
    client: &Client,
    (kind, controller): (&str, &str),
    (_, namespace, name): &Key,
    body: &Value,
    now: &str,
) -> Result<(), kube::Error> {
    let resource = match kind {
        "GatewayClass" => ApiResource::erase::<GatewayClass>(&()),
        "Gateway" => ApiResource::erase::<Gateway>(&()),
        "GRPCRoute" => ApiResource::erase::<GrpcRoute>(&()),
        _ => ApiResource::erase::<HttpRoute>(&()),
    };
    let api = match kind {
        "GatewayClass" => Api::<DynamicObject>::all_with(client.clone(), &resource),
        _ => Api::namespaced_with(client.clone(), namespace, &resource),
    };
    let status = match kind {
        "HTTPRoute" | "GRPCRoute" => {
            // Other controllers' entries stay; sluice's are replaced.
            let current = match api.get_status(name).await {
                Ok(object) => object.data["status"]["parents"].clone(),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut parents: Vec<Value> = current
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["controllerName"] != controller)
                .cloned()
                .collect();
            let ours = stamped(body["parents"].clone(), now);
            parents.extend(ours.as_array().into_iter().flatten().cloned());
            json!({"parents": parents})
        }
        _ => stamped(body.clone(), now),
    };
    let result = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        // Deleted meanwhile, or its CRD is gone: nothing to write.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::gateway::CONTROLLER_NAME;
    use crate::routing::gateway_status::ParentRef;

    #[test]
    fn a_route_status_names_its_parents_and_generation() {
        let status = ObjectStatus {
            kind: "HTTPRoute",
            namespace: "apps".into(),
            name: "web".into(),
            generation: Some(3),
            conditions: Vec::new(),
            parts: vec![PartStatus {
                parent: Some(ParentRef {
                    namespace: "edge".into(),
                    name: "gw".into(),
                    section_name: Some("http".into()),
                    port: None,
                }),
                ..PartStatus::new(
                    "Gateway edge/gw/http".into(),
                    vec![Condition::holds("Accepted", "Accepted")],
                )
            }],
        };
        let body = stamped(body(&status, &[], CONTROLLER_NAME), "2026-12-02T00:00:00Z");
        let parent = &body["parents"][0];
        assert_eq!(parent["parentRef"]["sectionName"], "http");
        assert_eq!(parent["controllerName"], CONTROLLER_NAME);
        let condition = &parent["conditions"][0];
        assert_eq!(condition["observedGeneration"], 3);
        assert_eq!(condition["lastTransitionTime"], "2026-12-02T00:00:00Z");
    }
}
