//! `translate`: a snapshot of Kubernetes objects -> a `RoutingTable` and warnings.
//!
//! Pure and synchronous (the endpoint registry only hands out the long-lived state
//! for each pod address). Every problem is local: a bad path, annotation or backend
//! skips that piece with a warning, and the rest of the table is built as usual.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::annotations::IngressAnnotations;
use super::{ObjectRef, Snapshot, Warning};
use crate::balance::EndpointRegistry;
use crate::config::ProxyDefaults;
use crate::routing::{
    Backend, BackendRef, Endpoint, HostKey, HostRoutes, IngressRef, PathKind, Protocol, Route,
    RoutingTable, TableStats,
};

/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Default)]
pub struct TranslateOptions {
    pub defaults: ProxyDefaults,
    /// Serves requests no Ingress matches.
    pub default_backend: Option<BackendRef>,
}

pub fn translate(
    snapshot: &Snapshot,
    options: &TranslateOptions,
    endpoints: &EndpointRegistry,
) -> (RoutingTable, Vec<Warning>) {
    let mut builder = Builder::new(snapshot, endpoints);

    // Oldest first: on a conflict the first Ingress to claim a rule keeps it.
    let mut ingresses: Vec<&Ingress> = snapshot.ingresses.iter().map(|i| &**i).collect();
    ingresses.sort_by(|a, b| {
        let key = |i: &&Ingress| {
            (
                i.metadata.creation_timestamp.clone(),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    for ingress in ingresses {
        builder.add_ingress(ingress, &options.defaults);
    }

    let default_route = options.default_backend.as_ref().map(|backend_ref| {
        let backend = builder.backend(backend_ref.clone(), Protocol::Http1, None);
        Arc::new(Route {
            ingress: IngressRef {
                namespace: backend_ref.namespace.clone(),
                name: String::new(),
            },
            backend,
            policy: IngressAnnotations::default().policy(&options.defaults),
        })
    });
    builder.finish(default_route)
}

struct Builder<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    registry: &'a EndpointRegistry,
    backends: HashMap<(BackendRef, Protocol), Arc<Backend>>,
    hosts: BTreeMap<HostKey, HostRoutes>,
    warnings: Vec<Warning>,
}

/// Where a warning points: the object and the field inside it.
struct Site<'o> {
    object: &'o ObjectRef,
    field: String,
}

impl<'a> Builder<'a> {
    fn new(snapshot: &'a Snapshot, registry: &'a EndpointRegistry) -> Builder<'a> {
        let services = snapshot
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    (namespace_of(&s.metadata), s.metadata.name.as_deref()?),
                    &**s,
                ))
            })
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices
                    .entry((namespace_of(&slice.metadata), service.as_str()))
                    .or_default()
                    .push(&**slice);
            }
        }
        Builder {
            services,
            slices,
            registry,
            backends: HashMap::new(),
            hosts: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, site: Option<&Site<'_>>, reason: &'static str, message: String) {
        self.warnings.push(Warning {
            file: None,
            object: site.map(|s| s.object.clone()),
            field: site.map(|s| s.field.clone()),
            reason,
            message,
        });
    }

    fn add_ingress(&mut self, ingress: &Ingress, defaults: &ProxyDefaults) {
        let namespace = namespace_of(&ingress.metadata);
        let name = ingress.metadata.name.as_deref().unwrap_or_default();
        let object = ObjectRef {
            kind: "Ingress",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let ingress_ref = IngressRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let annotations = match IngressAnnotations::parse(ingress.metadata.annotations.as_ref()) {
            Ok(a) => a,
            Err(error) => {
                let site = Site {
                    object: &object,
                    field: "metadata.annotations".into(),
                };
                self.warn(
                    Some(&site),
                    "invalid-annotation",
                    format!("{error}; Ingress skipped"),
                );
                return;
            }
        };
        let policy = annotations.policy(defaults);
        let protocol = annotations.backend_protocol.unwrap_or_default();
        let Some(spec) = &ingress.spec else {
            let site = Site {
                object: &object,
                field: "spec".into(),
            };
            self.warn(
                Some(&site),
                "invalid-ingress",
                "no spec; Ingress skipped".into(),
            );
            return;
        };
        let route_to = |backend: Arc<Backend>| {
            Arc::new(Route {
                ingress: ingress_ref.clone(),
                backend,
                policy: policy.clone(),
            })
        };

        let mut ingress_hosts = BTreeSet::new();
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let Some(host) = HostKey::parse(rule.host.as_deref()) else {
                let site = Site {
                    object: &object,
                    field: format!("spec.rules[{ri}].host"),
                };
                let host = rule.host.as_deref().unwrap_or_default();
                self.warn(
                    Some(&site),
                    "invalid-host",
                    format!("invalid host {host:?}; rule skipped"),
                );
                continue;
            };
            ingress_hosts.insert(host.clone());
            let paths = rule.http.iter().flat_map(|http| http.paths.iter());
            for (pi, path) in paths.enumerate() {
                let site = Site {
                    object: &object,
                    field: format!("spec.rules[{ri}].http.paths[{pi}]"),
                };
                let kind = match path.path_type.as_str() {
                    "Exact" => PathKind::Exact,
                    "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
                    other => {
                        self.warn(
                            Some(&site),
                            "invalid-path",
                            format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific; path skipped"),
                        );
                        continue;
                    }
                };
                let path_value = path.path.as_deref().unwrap_or("/");
                if !path_value.starts_with('/') {
                    self.warn(
                        Some(&site),
                        "invalid-path",
                        format!("path {path_value:?} must start with '/'; path skipped"),
                    );
                    continue;
                }
                let backend_site = Site {
                    object: &object,
                    field: format!("{}.backend", site.field),
                };
                let Some(backend) =
                    self.ingress_backend(&path.backend, namespace, protocol, &backend_site)
                else {
                    continue;
                };
                let route = route_to(backend);
                let routes = self.hosts.entry(host.clone()).or_default();
                if let Err(owner) = routes.insert(kind, path_value, route) {
                    let message = format!(
                        "host {host} path {path_value:?} ({kind:?}) is already served by the older Ingress {}; path skipped",
                        owner.ingress
                    );
                    self.warn(Some(&site), "conflict", message);
                }
            }
        }

        if let Some(default_backend) = &spec.default_backend {
            let site = Site {
                object: &object,
                field: "spec.defaultBackend".into(),
            };
            let Some(backend) = self.ingress_backend(default_backend, namespace, protocol, &site)
            else {
                return;
            };
            let route = route_to(backend);
            // It serves the Ingress's own hosts; without rules, every host.
            if ingress_hosts.is_empty() {
                ingress_hosts.insert(HostKey::Any);
            }
            for host in ingress_hosts {
                if let Err(owner) = self
                    .hosts
                    .entry(host.clone())
                    .or_default()
                    .set_default(route.clone())
                {
                    let message = format!(
                        "host {host} already has a default backend from the older Ingress {}; ignored",
                        owner.ingress
                    );
                    self.warn(Some(&site), "conflict", message);
                }
            }
        }
    }

    /// Resolves an Ingress backend. A missing Service or port still yields a backend
    /// (with no endpoints: 503, as ingress-nginx answers) plus a warning, so the
    /// route starts working as soon as the Service appears.
    fn ingress_backend(
        &mut self,
        backend: &IngressBackend,
        namespace: &str,
        protocol: Protocol,
        site: &Site<'_>,
    ) -> Option<Arc<Backend>> {
        let Some(service) = &backend.service else {
            self.warn(
                Some(site),
                "unsupported-backend",
                "resource backends are not supported; skipped".into(),
            );
            return None;
        };
        let port = service
            .port
            .as_ref()
            .and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()));
        let Some(port) = port else {
            self.warn(
                Some(site),
                "invalid-backend",
                format!(
                    "service {:?} has no port number or name; skipped",
                    service.name
                ),
            );
            return None;
        };
        let backend_ref = BackendRef {
            namespace: namespace.to_owned(),
            service: service.name.clone(),
            port,
        };
        Some(self.backend(backend_ref, protocol, Some(site)))
    }

    fn backend(
        &mut self,
        backend_ref: BackendRef,
        protocol: Protocol,
        site: Option<&Site<'_>>,
    ) -> Arc<Backend> {
        let key = (backend_ref, protocol);
        if let Some(backend) = self.backends.get(&key) {
            return backend.clone();
        }
        let addrs = match self.endpoint_addrs(&key.0) {
            Ok(addrs) => addrs,
            Err((reason, message)) => {
                self.warn(
                    site,
                    reason,
                    format!("backend {}: {message}; answering 503", key.0),
                );
                Vec::new()
            }
        };
        let endpoints = addrs
            .into_iter()
            .map(|addr| Endpoint {
                state: self.registry.endpoint(addr, protocol),
            })
            .collect();
        let backend = Arc::new(Backend::new(key.0.clone(), protocol, endpoints));
        self.backends.insert(key, backend.clone());
        backend
    }

    /// The ready pod addresses behind a Service port, from its EndpointSlices.
    fn endpoint_addrs(
        &self,
        backend: &BackendRef,
    ) -> Result<Vec<SocketAddr>, (&'static str, String)> {
        let service = self
            .services
            .get(&(backend.namespace.as_str(), backend.service.as_str()))
            .ok_or(("service-not-found", "service not found".to_owned()))?;
        let spec = service
            .spec
            .as_ref()
            .ok_or(("invalid-service", "service has no spec".to_owned()))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err((
                "unsupported-backend",
                "ExternalName services are not supported".into(),
            ));
        }
        let service_port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| port_matches(p, &backend.port))
            .ok_or((
                "service-port-not-found",
                format!("service has no port {:?}", backend.port),
            ))?;
        // EndpointSlice ports carry the Service port's name ("" when unnamed) and the
        // resolved target port number.
        let port_name = service_port.name.as_deref().unwrap_or_default();
        let mut addrs = Vec::new();
        let slices = self
            .slices
            .get(&(backend.namespace.as_str(), backend.service.as_str()));
        for slice in slices.into_iter().flatten() {
            if slice.address_type == "FQDN" {
                continue;
            }
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or_default() == port_name
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(port) = port else { continue };
            for endpoint in slice.endpoints.iter().flatten() {
                // Unset means ready (EndpointSlice API: "should be interpreted as true").
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        addrs.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        // The same pod may briefly appear in two slices.
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }

    fn finish(self, default_route: Option<Arc<Route>>) -> (RoutingTable, Vec<Warning>) {
        let stats = TableStats {
            hosts: 0,
            routes: self.hosts.values().map(HostRoutes::route_count).sum(),
            backends: self.backends.len(),
            endpoints: self.backends.values().map(|b| b.endpoints.len()).sum(),
        };
        (
            RoutingTable::new(self.hosts, default_route, stats),
            self.warnings,
        )
    }
}

fn port_matches(port: &ServicePort, wanted: &str) -> bool {
    match wanted.parse::<i32>() {
        Ok(number) => port.port == number,
        Err(_) => port.name.as_deref() == Some(wanted),
    }
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

#[cfg(test)]
mod tests;
