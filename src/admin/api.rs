//! The read-only JSON admin API: what sluice serves and why.
//!
//! * `/api/routes`: hosts, paths, backends, and each endpoint's latency estimate,
//!   in-flight requests, breaker state and share of recent traffic; canary sides.
//! * `/api/warnings`: what was skipped (rejected Ingresses and rules) and why.
//! * `/api/config`: the config sluice runs with, the file as last read, and the
//!   restart-only keys the file changed since start.

use std::sync::Arc;

use super::endpoints;
use crate::config::ConfigState;
use crate::discovery::Publisher;
use crate::routing::{Backend, Route, RoutingTable};
use serde_json::{json, Value};

pub fn routes(table: &RoutingTable) -> Value {
    let mut routes = Vec::new();
    for (host, host_routes) in table.hosts() {
        for (kind, path, conditions, route) in host_routes.iter() {
            let mut json = route_json(&host, Some((format!("{kind:?}"), path)), route);
            if let Some(conditions) = conditions {
                json["match"] = conditions.describe().into();
            }
            routes.push(json);
        }
        if let Some(route) = host_routes.default_route() {
            routes.push(route_json(&host, None, route));
        }
    }
    routes.sort_by(|a, b| {
        (a["host"].as_str(), a["path"].as_str()).cmp(&(b["host"].as_str(), b["path"].as_str()))
    });
    let certificates: Vec<Value> = table
        .tls
        .all()
        .map(|(host, c)| json!({"host": host, "secret": c.source, "expires": c.expires}))
        .collect();
    json!({
        "routes": routes,
        "default_backend": table.default_route().map(|r| backend_json(&r.backend)),
        "certificates": certificates,
        // The status sluice would write on Gateways and HTTPRoutes.
        "gateway_api": table.gateway_api,
        "stats": {"hosts": table.stats.hosts, "routes": table.stats.routes, "backends": table.stats.backends, "endpoints": table.endpoint_count()},
    })
}

fn route_json(host: &str, path: Option<(String, &str)>, route: &Route) -> Value {
    let (kind, path) = match path {
        Some((kind, path)) => (kind, path.to_owned()),
        None => ("Default".to_owned(), String::new()),
    };
    json!({
        "host": host,
        "path": path,
        "path_type": kind,
        "namespace": route.ingress.namespace,
        "ingress": route.ingress.name,
        "kind": route.ingress.kind,
        "backend": backend_json(&route.backend),
        "fallback": route.fallback.as_ref().map(backend_json),
        "canary": route.filters.canary().map(|c| json!({"ingress": c.ingress.name, "backend": backend_json(&c.backend)})),
        "load_balance": format!("{:?}", route.policy.balance.algorithm),
        "circuit_breaker": route.policy.balance.breaker.source,
        "rate_limit": route.filters.limiter().map(|l| json!({"per_second": l.spec().per_second, "burst": l.spec().burst, "key": format!("{:?}", l.spec().key)})),
        "https_redirect": route.filters.https_redirect(),
        "limit_rate": route.policy.limit_rate.map(|(rate, after)| json!({"bytes_per_second": rate, "after_bytes": after})),
        "request_buffering": route.policy.request_buffering.map(|memory| json!({"memory_bytes": memory})),
        "mirror": route.policy.mirror.as_ref().map(|m| json!({"backend": m.backend.name.to_string(), "endpoints": m.backend.endpoint_set().endpoints.len(), "body": m.body.is_some()})),
    })
}

fn backend_json(backend: &Arc<Backend>) -> Value {
    let endpoints: Vec<Value> = endpoints::view(backend)
        .into_iter()
        .map(|v| {
            json!({
                "address": v.address,
                "ewma_ms": v.ewma_seconds * 1e3,
                "in_flight": v.in_flight,
                "breaker": endpoints::breaker_name(v.breaker),
                "recent_requests": v.recent_requests,
                "share": v.share,
                "idle_connections": v.idle_connections,
            })
        })
        .collect();
    json!({
        "namespace": backend.name.namespace,
        "service": backend.name.service,
        "port": backend.name.port,
        "protocol": format!("{:?}", backend.protocol),
        "endpoints": endpoints,
    })
}

pub fn warnings(publisher: Option<&Publisher>) -> Value {
    let warnings: Vec<Value> = publisher
        .map(Publisher::warnings)
        .unwrap_or_default()
        .iter()
        .map(|w| {
            json!({
                "reason": w.reason,
                "object": w.object.as_ref().map(ToString::to_string),
                "file": w.file.as_deref(),
                "field": w.field,
                "message": w.message,
            })
        })
        .collect();
    json!({"warnings": warnings})
}

pub fn config(state: &ConfigState) -> Value {
    let mut value = serde_json::to_value(state).unwrap_or(Value::Null);
    // The token guards this very API.
    for side in ["running", "file"] {
        if let Some(map) = value[side].as_object_mut() {
            map.remove("admin-token");
        }
    }
    value
}
