//! Services, EndpointSlices and Secrets by name, and what they resolve to: a
//! Service port's pod addresses, a TLS Secret's certificate. Also the cheap
//! path for pod churn, which recomputes only the changed Services' endpoints.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::discovery::retained::Retained;
use crate::discovery::{PodSlice, Snapshot};
use crate::policy::upstream_deny::UpstreamDeny;
use crate::routing::certs::{load_certified_key, Certificate};
use crate::routing::{BackendRef, Endpoint, Protocol, RoutingTable};

/// The label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub(super) fn endpoints_for(
    namespace: &Arc<str>,
    addrs: Vec<SocketAddr>,
    protocol: Protocol,
    retained: &Retained,
) -> Vec<Endpoint> {
    retained
        .endpoints(namespace, &addrs, protocol)
        .into_iter()
        .map(|state| Endpoint { state })
        .collect()
}

/// Recomputes the endpoints of every backend of the given Services in `table`, in
/// place. This is the cheap path for pod churn: its cost follows the number of
/// backends of those Services, not the size of the table. Returns how many
/// backends it touched.
pub fn update_endpoints(
    table: &RoutingTable,
    snapshot: &Snapshot,
    services: &BTreeSet<(String, String)>,
    retained: &Retained,
    deny: &UpstreamDeny,
) -> usize {
    let index = SnapshotIndex::for_services(snapshot, deny, services);
    let mut touched = 0;
    let mut replaced = Vec::new();
    for (namespace, service) in services {
        for backend in table.backends_of(namespace, service) {
            let PodAddrs { addrs, refused } =
                index.endpoint_addrs(&backend.name).unwrap_or_default();
            if !refused.is_empty() {
                // A full rebuild turns this into a warning on the Ingress; here,
                // between rebuilds, the log says it at once.
                tracing::warn!(backend = %backend.name, refused = ?refused, "pod addresses refused");
            }
            let namespace: Arc<str> = namespace.as_str().into();
            let fresh = endpoints_for(&namespace, addrs, backend.protocol.clone(), retained);
            let old = backend.swap_endpoints(fresh);
            replaced.extend(
                old.endpoints
                    .iter()
                    .map(|e| (namespace.clone(), e.addr(), backend.protocol.clone())),
            );
            touched += 1;
        }
    }
    // Only the pods these Services lost can have become unused: check just those,
    // not the whole registry, so the cost follows the size of the change.
    retained.collect_endpoints(&replaced);
    touched
}

/// A Service port's pod addresses.
#[derive(Debug, Default)]
pub(super) struct PodAddrs {
    pub(super) addrs: Vec<SocketAddr>,
    /// Addresses sluice will not send to, each with its reason.
    pub(super) refused: Vec<String>,
}

/// Services and EndpointSlices by `(namespace, service name)`, Secrets by name.
pub(super) struct SnapshotIndex<'a> {
    pub(super) deny: &'a UpstreamDeny,
    pub(super) secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    pub(super) services: HashMap<(&'a str, &'a str), &'a Service>,
    pub(super) slices: HashMap<(&'a str, &'a str), Vec<&'a PodSlice>>,
    /// ExternalName targets, resolved in the background (`discovery::resolve`).
    pub(super) resolved: &'a std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

impl<'a> SnapshotIndex<'a> {
    pub(super) fn new(snapshot: &'a Snapshot, deny: &'a UpstreamDeny) -> SnapshotIndex<'a> {
        Self::filtered(snapshot, deny, |_| true)
    }

    pub(super) fn for_services(
        snapshot: &'a Snapshot,
        deny: &'a UpstreamDeny,
        wanted: &BTreeSet<(String, String)>,
    ) -> SnapshotIndex<'a> {
        let wanted: HashSet<(&str, &str)> = wanted
            .iter()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect();
        Self::filtered(snapshot, deny, |key| wanted.contains(key))
    }

    pub(super) fn filtered(
        snapshot: &'a Snapshot,
        deny: &'a UpstreamDeny,
        keep: impl Fn(&(&str, &str)) -> bool,
    ) -> SnapshotIndex<'a> {
        let services = snapshot
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    (namespace_of(&s.metadata), s.metadata.name.as_deref()?),
                    &**s,
                ))
            })
            .filter(|(key, _)| keep(key))
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            if let Some(key) = slice.service().filter(|k| keep(k)) {
                slices.entry(key).or_default().push(&**slice);
            }
        }
        let secrets = snapshot
            .secrets
            .iter()
            .filter_map(|s| {
                Some((
                    (namespace_of(&s.metadata), s.metadata.name.as_deref()?),
                    &**s,
                ))
            })
            .collect();
        SnapshotIndex {
            deny,
            secrets,
            services,
            slices,
            resolved: &snapshot.resolved,
        }
    }

    /// The certificate in a `kubernetes.io/tls` Secret.
    /// One key of a Secret (`data`, or `stringData` in a manifests
    /// directory); an error when the Secret is not there.
    pub(super) fn secret_field(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let secret = self
            .secrets
            .get(&(namespace, name))
            .ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
        Ok(secret_key(secret, key))
    }

    pub(super) fn certificate(&self, namespace: &str, name: &str) -> Result<Certificate, String> {
        let secret = self
            .secrets
            .get(&(namespace, name))
            .ok_or("Secret not found")?;
        if secret.type_.as_deref() != Some("kubernetes.io/tls") {
            return Err(format!(
                "type is {:?}, not kubernetes.io/tls",
                secret.type_.as_deref().unwrap_or("")
            ));
        }
        let cert = secret_key(secret, "tls.crt").ok_or("no tls.crt")?;
        let key = secret_key(secret, "tls.key").ok_or("no tls.key")?;
        let mut certificate = load_certified_key(&cert, &key)?;
        certificate.source = format!("{namespace}/{name}");
        Ok(certificate)
    }

    /// The ready pod addresses behind a Service port, from its EndpointSlices,
    /// and those refused (`UpstreamDeny`) with the reason.
    pub(super) fn endpoint_addrs(
        &self,
        backend: &BackendRef,
    ) -> Result<PodAddrs, (&'static str, String)> {
        let key = (backend.namespace.as_str(), backend.service.as_str());
        let service = self
            .services
            .get(&key)
            .ok_or(("service-not-found", "service not found".to_owned()))?;
        let spec = service
            .spec
            .as_ref()
            .ok_or(("invalid-service", "service has no spec".to_owned()))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return self.external_name(spec, backend);
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
        if backend.via_service_ip {
            return self.service_ip(spec, service_port);
        }
        // EndpointSlice ports carry the Service port's name ("" when unnamed) and the
        // resolved target port number.
        let port_name = service_port.name.as_deref().unwrap_or_default();
        let mut addrs = Vec::new();
        let mut refused = Vec::new();
        for slice in self.slices.get(&key).into_iter().flatten() {
            if slice.fqdn {
                continue;
            }
            let port = slice
                .ports
                .iter()
                .find(|p| p.name == port_name && p.tcp)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(port) = port else { continue };
            for pod in slice.pods.iter().filter(|pod| pod.ready) {
                match self.deny.refuses(pod.ip) {
                    None => addrs.push(SocketAddr::new(pod.ip, port)),
                    Some(why) => refused.push(format!("{} ({why})", pod.ip)),
                }
            }
        }
        // The same pod may briefly appear in two slices.
        addrs.sort_unstable();
        addrs.dedup();
        refused.sort_unstable();
        refused.dedup();
        Ok(PodAddrs { addrs, refused })
    }
}

impl SnapshotIndex<'_> {
    /// An ExternalName Service: the addresses its name resolved to (in the
    /// background, never on the request path), at the port the Ingress names
    /// (the Service's, when it lists it), refused like pods' when they must be.
    fn external_name(
        &self,
        spec: &k8s_openapi::api::core::v1::ServiceSpec,
        backend: &BackendRef,
    ) -> Result<PodAddrs, (&'static str, String)> {
        let name = spec
            .external_name
            .as_deref()
            .map(external_name_key)
            .ok_or((
                "invalid-service",
                "ExternalName Service without externalName".to_owned(),
            ))?;
        let port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| port_matches(p, &backend.port))
            .map(|p| p.port)
            .or_else(|| backend.port.parse().ok())
            .and_then(|p: i32| u16::try_from(p).ok())
            .ok_or((
                "service-port-not-found",
                format!(
                    "port {:?} is not a number the ExternalName can use",
                    backend.port
                ),
            ))?;
        self.host_addrs(&name, port)
    }

    /// The addresses of a name resolved in the background (or of an address
    /// literal), refused like pods' when they must be.
    pub(super) fn host_addrs(
        &self,
        name: &str,
        port: u16,
    ) -> Result<PodAddrs, (&'static str, String)> {
        let literal;
        let ips = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                literal = [ip];
                &literal[..]
            }
            Err(_) => self.resolved.get(name).ok_or((
                "external-name-unresolved",
                format!("{name} is not resolved (yet)"),
            ))?,
        };
        let mut addrs = Vec::new();
        let mut refused = Vec::new();
        for ip in ips {
            match self.deny.refuses(*ip) {
                None => addrs.push(SocketAddr::new(*ip, port)),
                Some(why) => refused.push(format!("{ip} ({why})")),
            }
        }
        Ok(PodAddrs { addrs, refused })
    }

    /// `service-upstream`: the Service's ClusterIP and port, one address (the
    /// cluster's proxy balances behind it), refused like a pod's if it must be.
    fn service_ip(
        &self,
        spec: &k8s_openapi::api::core::v1::ServiceSpec,
        port: &ServicePort,
    ) -> Result<PodAddrs, (&'static str, String)> {
        let ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .ok_or((
                "invalid-service",
                "service-upstream: the Service has no ClusterIP (headless?)".to_owned(),
            ))?;
        let port = u16::try_from(port.port).map_err(|_| {
            (
                "invalid-service",
                format!("port {} is out of range", port.port),
            )
        })?;
        Ok(match self.deny.refuses(ip) {
            None => PodAddrs {
                addrs: vec![SocketAddr::new(ip, port)],
                refused: Vec::new(),
            },
            Some(why) => PodAddrs {
                addrs: Vec::new(),
                refused: vec![format!("{ip} ({why})")],
            },
        })
    }
}

pub(super) fn port_matches(port: &ServicePort, wanted: &str) -> bool {
    match wanted.parse::<i32>() {
        Ok(number) => port.port == number,
        Err(_) => port.name.as_deref() == Some(wanted),
    }
}

pub(super) fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// An ExternalName as resolved names are keyed: lowercase, no trailing dot.
pub fn external_name_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The keys of a Secret (`data`, and `stringData` in a manifests directory).
pub(super) fn secret_keys(secret: &Secret) -> Vec<String> {
    let data = secret.data.iter().flat_map(|d| d.keys());
    let strings = secret.string_data.iter().flat_map(|d| d.keys());
    let mut keys: Vec<String> = data.chain(strings).cloned().collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// One key of a Secret: `data` in a cluster; `stringData` too in a manifests
/// directory.
pub(super) fn secret_key(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()?
                .get(key)
                .map(|s| s.as_bytes().to_vec())
        })
}
