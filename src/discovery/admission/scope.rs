//! What of the snapshot can change the verdict on one object, so that a
//! review translates that, not the whole cluster (issue #23: a decision at
//! 10,000 Ingresses within milliseconds, `benches/admission.rs`).
//!
//! Everything one Ingress does to another goes through a host they share:
//! who routed a host first owns it and its paths, its default backend, its
//! certificate and client certificates; a canary joins the main route of its
//! host and path. A wildcard host meets the names it covers (a TLS
//! wildcard covers a routed name; a Gateway API wildcard any depth), and
//! `from-to-www-redirect` the other name. So the scope keeps the Ingresses
//! whose host names touch the object's, and drops the rest.
//!
//! Everything else is kept whole. Services, EndpointSlices and Secrets are
//! only looked up by name, so they cost an index, not a translation;
//! Gateway API objects are few, and a route's hosts depend on its
//! listeners', so a Gateway API review keeps them all and the Ingresses
//! touching any of their names. The manifests files objects came from are
//! dropped: a verdict does not name them.
//!
//! `tests::the_scope_changes_no_verdict` judges a crowd of overlapping
//! Ingresses both ways and finds the same verdicts.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Object;
use crate::discovery::annotations::{NGINX_PREFIX, SLUICE_PREFIX};
use crate::discovery::{ObjectRef, Snapshot};

/// `snapshot` narrowed to what can change the verdict on `object` (at `at`),
/// with `object` in place of the stored version.
pub(super) fn scope(snapshot: &Snapshot, object: &Object, at: &ObjectRef) -> Snapshot {
    let mut names = HostNames::default();
    match object {
        Object::Ingress(ingress) => ingress_hosts(ingress, &mut |h| names.add(h)),
        _ => {
            for gateway in &snapshot.gateways {
                gateway_hosts(gateway, &mut names);
            }
            let routes = snapshot.http_routes.iter().map(|r| &r.spec.hostnames);
            let grpc = snapshot.grpc_routes.iter().map(|r| &r.spec.hostnames);
            for hostnames in routes.chain(grpc) {
                route_hosts(hostnames, &mut names);
            }
            match object {
                Object::Gateway(gateway) => gateway_hosts(gateway, &mut names),
                Object::HttpRoute(route) => route_hosts(&route.spec.hostnames, &mut names),
                Object::GrpcRoute(route) => route_hosts(&route.spec.hostnames, &mut names),
                Object::Ingress(_) => {}
            }
        }
    }
    names.seal();
    placed(snapshot, object, at, &|ingress| {
        names.touch_ingress(ingress)
    })
}

/// `snapshot` with the Ingresses `keep` takes, and `object` in place of
/// its stored version.
fn placed(
    snapshot: &Snapshot,
    object: &Object,
    at: &ObjectRef,
    keep: &dyn Fn(&Ingress) -> bool,
) -> Snapshot {
    let ingresses = snapshot
        .ingresses
        .iter()
        .filter(|i| !(at.kind == "Ingress" && is(&i.metadata, at)) && keep(i))
        .cloned();
    let mut scoped = Snapshot {
        ingresses: ingresses.collect(),
        ingress_classes: snapshot.ingress_classes.clone(),
        services: snapshot.services.clone(),
        endpoint_slices: snapshot.endpoint_slices.clone(),
        secrets: snapshot.secrets.clone(),
        config_maps: snapshot.config_maps.clone(),
        gateway_classes: snapshot.gateway_classes.clone(),
        gateways: others(&snapshot.gateways, "Gateway", at, |g| &g.metadata),
        http_routes: others(&snapshot.http_routes, "HTTPRoute", at, |r| &r.metadata),
        reference_grants: snapshot.reference_grants.clone(),
        grpc_routes: others(&snapshot.grpc_routes, "GRPCRoute", at, |r| &r.metadata),
        namespaces: snapshot.namespaces.clone(),
        sources: Default::default(),
        resolved: snapshot.resolved.clone(),
    };
    match object {
        Object::Ingress(o) => scoped.ingresses.push(o.clone()),
        Object::HttpRoute(o) => scoped.http_routes.push(o.clone()),
        Object::GrpcRoute(o) => scoped.grpc_routes.push(o.clone()),
        Object::Gateway(o) => scoped.gateways.push(o.clone()),
    }
    scoped
}

/// Whether `meta` is that of the object at `at`, when the kinds agree.
fn is(meta: &ObjectMeta, at: &ObjectRef) -> bool {
    meta.name.as_deref() == Some(at.name.as_str())
        && meta.namespace.as_deref().unwrap_or("default") == at.namespace
}

/// `list` (of `kind`) without the stored version of the object at `at`.
fn others<T>(
    list: &[Arc<T>],
    kind: &str,
    at: &ObjectRef,
    meta: fn(&T) -> &ObjectMeta,
) -> Vec<Arc<T>> {
    list.iter()
        .filter(|o| kind != at.kind || !is(meta(o), at))
        .cloned()
        .collect()
}

/// Every host name an Ingress routes or names: its rules' hosts (a rule
/// without one: every host), its TLS hosts, its `server-alias` names, and
/// every host for a default backend without rules.
fn ingress_hosts(ingress: &Ingress, add: &mut dyn FnMut(Option<&str>)) {
    let Some(spec) = &ingress.spec else { return };
    let rules = spec.rules.as_deref().unwrap_or_default();
    for rule in rules {
        add(rule.host.as_deref());
    }
    if rules.is_empty() && spec.default_backend.is_some() {
        add(None);
    }
    for tls in spec.tls.as_deref().unwrap_or_default() {
        for host in tls.hosts.as_deref().unwrap_or_default() {
            add(Some(host));
        }
    }
    for (key, aliases) in ingress.metadata.annotations.iter().flatten() {
        let name = key
            .strip_prefix(SLUICE_PREFIX)
            .or_else(|| key.strip_prefix(NGINX_PREFIX));
        if name == Some("server-alias") {
            aliases.split(',').for_each(|alias| add(Some(alias)));
        }
    }
}

fn gateway_hosts(gateway: &crate::discovery::gateway::Gateway, names: &mut HostNames) {
    for listener in &gateway.spec.listeners {
        names.add(listener.hostname.as_deref());
    }
}

/// A route without hostnames takes its listeners' (every host, under one
/// without a hostname).
fn route_hosts(hostnames: &[String], names: &mut HostNames) {
    if hostnames.is_empty() {
        names.add(None);
    }
    for hostname in hostnames {
        names.add(Some(hostname));
    }
}

/// The host names of the object under review, and what they touch.
#[derive(Debug, Default)]
struct HostNames {
    /// Exact names, their `www.` partners, and wildcards as written
    /// (`*.example.com`), lowercased.
    names: HashSet<String>,
    /// Every domain above an exact name (`b.example.com`, `example.com`,
    /// `com` for `a.b.example.com`), and every domain a wildcard covers from
    /// (`example.com` and above, for `*.example.com`).
    above: HashSet<String>,
    /// The domains wildcards cover from (`example.com` for `*.example.com`).
    wildcards: HashSet<String>,
    /// A rule without a host (or a route under a listener without one).
    every_host: bool,
}

impl HostNames {
    fn add(&mut self, host: Option<&str>) {
        let host = normal(host.unwrap_or_default());
        if host.is_empty() || host == "*" {
            self.every_host = true;
            return;
        }
        if let Some(domain) = host.strip_prefix("*.") {
            self.wildcards.insert(domain.to_owned());
        } else {
            // `from-to-www-redirect` serves the other name too.
            match host.strip_prefix("www.") {
                Some(bare) => self.names.insert(bare.to_owned()),
                None => self.names.insert(format!("www.{host}")),
            };
        }
        self.names.insert(host);
    }

    /// Fills `above` once every name is in.
    fn seal(&mut self) {
        let exact = self.names.iter().filter(|n| !n.starts_with("*."));
        let covered = self.wildcards.iter().map(|w| format!("x.{w}"));
        let mut above = HashSet::new();
        for name in exact.cloned().chain(covered) {
            above.extend(domains_above(&name).map(str::to_owned));
        }
        self.above = above;
    }

    fn touch_ingress(&self, ingress: &Ingress) -> bool {
        let mut touched = false;
        ingress_hosts(ingress, &mut |host| touched = touched || self.touch(host));
        touched
    }

    /// Whether another object's host name touches ours.
    fn touch(&self, host: Option<&str>) -> bool {
        let host = normal(host.unwrap_or_default());
        if host.is_empty() || host == "*" {
            return self.every_host;
        }
        if self.names.contains(&host) {
            return true;
        }
        match host.strip_prefix("*.") {
            // Their wildcard covers one of our names or wildcards, or is
            // under one of our wildcards.
            Some(domain) => {
                self.above.contains(domain)
                    || self.wildcards.contains(domain)
                    || domains_above(domain).any(|d| self.wildcards.contains(d))
            }
            // Their name is under one of our wildcards. (The other name of
            // one of ours is among `names`.)
            None => domains_above(&host).any(|d| self.wildcards.contains(d)),
        }
    }
}

/// A host name as routing compares it: lowercased, without a final dot.
fn normal(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The domains above a name: `b.example.com`, `example.com`, `com` for
/// `a.b.example.com`.
fn domains_above(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[i + 1..])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{json, Value};

    use super::*;
    use crate::config::HostOwnership;
    use crate::discovery::admission::{Decision, Review};
    use crate::discovery::gateway::gateway_yaml;
    use crate::discovery::manifests::snapshot_from_str;
    use crate::discovery::{ClassSelection, TranslateOptions};

    const HOSTS: &[&str] = &[
        "a.example",
        "www.a.example",
        "b.example",
        "*.example",
        "x.a.example",
        "*.a.example",
        "A.Example.",
        "",
    ];
    const NAMESPACES: &[&str] = &["shop", "blog", "ads"];

    /// Our classes, and a Gateway taking routes from every namespace on
    /// any host and on `*.example`.
    fn cluster() -> String {
        let class = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: sluice}\nspec: {controller: sluice.io/ingress-controller}\n";
        let gateway = gateway_yaml("sluice", "shop", "edge", &[
            "{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
            "{name: wild, port: 80, protocol: HTTP, hostname: \"*.example\", allowedRoutes: {namespaces: {from: All}}}",
        ]);
        format!("{class}{gateway}")
    }

    /// A small deterministic generator: the corpus is the same every run.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % sides
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.roll(from.len())]
        }
    }

    fn ingress(dice: &mut Dice, namespace: &str, name: &str, minute: usize) -> Value {
        let host = dice.pick(HOSTS);
        let path = dice.pick(&["/", "/api", "/"]);
        let mut annotations = serde_json::Map::new();
        let mut note = |key: &str, value: &str| {
            annotations.insert(format!("nginx.ingress.kubernetes.io/{key}"), json!(value));
        };
        match dice.roll(8) {
            0 => {
                note("canary", "true");
                note("canary-weight", "10");
            }
            1 => note("server-alias", dice.pick(HOSTS)),
            2 => note("from-to-www-redirect", "true"),
            3 => {
                annotations.insert("sluice.io/allow-namespaces".into(), json!("blog"));
            }
            4 => note("auth-tls-secret", &format!("{namespace}/ca")),
            _ => {}
        }
        let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
        let mut spec = json!({"ingressClassName": "sluice"});
        if dice.roll(10) == 0 {
            spec["defaultBackend"] = backend;
        } else {
            let rule = match host {
                "" => {
                    json!({"http": {"paths": [{"path": path, "pathType": "Prefix", "backend": backend}]}})
                }
                host => {
                    json!({"host": host, "http": {"paths": [{"path": path, "pathType": "Prefix", "backend": backend}]}})
                }
            };
            spec["rules"] = json!([rule]);
        }
        if dice.roll(3) == 0 {
            spec["tls"] = json!([{"hosts": [dice.pick(HOSTS)], "secretName": "tls"}]);
        }
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations,
                "creationTimestamp": format!("2025-01-01T00:{:02}:00Z", minute % 60)},
            "spec": spec,
        })
    }

    fn http_route(dice: &mut Dice, namespace: &str, name: &str) -> Value {
        let hostnames: Vec<&str> = match dice.pick(HOSTS) {
            "" => Vec::new(),
            host => vec![host],
        };
        let path = dice.pick(&["/", "/api"]);
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "edge", "namespace": "shop"}], "hostnames": hostnames,
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "backendRefs": [{"name": "web", "port": 80}]}]},
        })
    }

    fn request(kind: &str, operation: &str, object: &Value) -> Value {
        json!({"kind": {"kind": kind}, "operation": operation, "object": object})
    }

    #[test]
    fn the_scope_changes_no_verdict() {
        let mut dice = Dice(23);
        let mut objects = Vec::new();
        let mut yaml = cluster();
        for ns in NAMESPACES {
            yaml += &format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{ports: [{{port: 80}}]}}\n"
            );
        }
        for i in 0..60 {
            let ns = dice.pick(NAMESPACES);
            let object = ingress(&mut dice, ns, &format!("i{i}"), i);
            yaml += &format!(
                "---\n{}\n",
                serde_json::to_string(&object).unwrap_or_default()
            );
            objects.push(request("Ingress", "UPDATE", &object));
        }
        for i in 0..12 {
            let ns = dice.pick(NAMESPACES);
            let object = http_route(&mut dice, ns, &format!("r{i}"));
            yaml += &format!(
                "---\n{}\n",
                serde_json::to_string(&object).unwrap_or_default()
            );
            objects.push(request("HTTPRoute", "UPDATE", &object));
        }
        let (snapshot, warnings) = snapshot_from_str(&yaml);
        assert!(warnings.is_empty(), "{warnings:?}");
        // Newcomers: every kind of Ingress, in every namespace, and edits.
        for i in 0..120 {
            let ns = dice.pick(NAMESPACES);
            let object = ingress(&mut dice, ns, &format!("new{i}"), 59);
            objects.push(request("Ingress", "CREATE", &object));
            let edited = ingress(&mut dice, ns, &format!("i{}", i % 60), i % 60);
            objects.push(request("Ingress", "UPDATE", &edited));
        }
        for i in 0..20 {
            let ns = dice.pick(NAMESPACES);
            let object = http_route(&mut dice, ns, &format!("r{}", i % 14));
            objects.push(request("HTTPRoute", "CREATE", &object));
        }
        // And a canary for a host nobody serves.
        let mut canary = ingress(&mut Dice(1), "shop", "lonely", 59);
        canary["metadata"]["annotations"] = json!({
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": "5",
        });
        canary["spec"]["rules"] = json!([{"host": "nobody.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]);
        objects.push(request("Ingress", "CREATE", &canary));
        let mut verdicts = BTreeSet::new();
        let mut kept = 0;
        for ownership in [HostOwnership::Shared, HostOwnership::Namespace] {
            let options = TranslateOptions {
                class: ClassSelection {
                    ingress_class: "sluice".into(),
                    controller_class: "sluice.io/ingress-controller".into(),
                    watch_without_class: false,
                },
                host_ownership: ownership,
                ..TranslateOptions::default()
            };
            for request in &objects {
                let Ok(review) = Review::read(request) else {
                    panic!("unread: {request}");
                };
                let scoped = review.scope(&snapshot);
                kept += scoped.ingresses.len();
                let whole = placed(&snapshot, &review.object, &review.at, &|_| true);
                let narrow: Decision = review.judge(scoped, &options);
                let wide = review.judge(whole, &options);
                assert_eq!(narrow, wide, "{request}");
                let first = |text: &str| text.split(':').next().unwrap_or_default().to_owned();
                verdicts.insert((narrow.allowed, first(&narrow.message)));
            }
        }
        // The corpus is a real test: verdicts of many kinds, and scopes
        // smaller than the snapshot (its hosts overlap on purpose).
        let reasons: Vec<&str> = verdicts.iter().map(|(_, r)| r.as_str()).collect();
        for expected in [
            "",
            "conflict",
            "host-owned",
            "tls-host-refused",
            "canary-without-main",
        ] {
            assert!(
                reasons.iter().any(|r| r.starts_with(expected)),
                "{expected}: {verdicts:?}"
            );
        }
        let whole = objects.len() * 2 * snapshot.ingresses.len();
        assert!(kept < whole * 3 / 4, "{kept} of {whole}");
    }

    #[test]
    fn a_review_keeps_the_ingresses_sharing_its_hosts_and_every_other_kind() {
        let mut yaml = cluster();
        for i in 0..100 {
            yaml += &format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i{i}, namespace: shop}}\nspec: {{ingressClassName: sluice, rules: [{{host: app-{i}.example}}]}}\n"
            );
        }
        let (snapshot, _) = snapshot_from_str(&yaml);
        let names = |s: &Snapshot| -> Vec<String> {
            s.ingresses
                .iter()
                .filter_map(|i| i.metadata.name.clone())
                .collect()
        };
        let update = json!({"metadata": {"name": "i7", "namespace": "shop"},
            "spec": {"rules": [{"host": "app-7.example"}, {"host": "app-42.example"}]}});
        let Ok(review) = Review::read(&request("Ingress", "UPDATE", &update)) else {
            panic!("unread");
        };
        let scoped = review.scope(&snapshot);
        assert_eq!(names(&scoped), ["i42", "i7"]);
        assert_eq!(scoped.gateways.len(), 1);
        // A route under the `*.example` listener touches every one of them.
        let route = json!({"metadata": {"name": "r", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["z.example"]}});
        let Ok(review) = Review::read(&request("HTTPRoute", "CREATE", &route)) else {
            panic!("unread");
        };
        let scoped = review.scope(&snapshot);
        assert_eq!(scoped.ingresses.len(), 100);
        assert_eq!(scoped.http_routes.len(), 1);
    }

    #[test]
    fn host_names_touch_what_they_share() {
        let mut ours = HostNames::default();
        ours.add(Some("a.b.example"));
        ours.add(Some("*.wild.example"));
        ours.seal();
        for touching in [
            "A.B.Example.",
            "www.a.b.example",
            "*.b.example",
            "*.example",
            "x.wild.example",
            "y.x.wild.example",
            "*.wild.example",
            "*.deep.wild.example",
        ] {
            assert!(ours.touch(Some(touching)), "{touching}");
        }
        for apart in [
            "b.example",
            "c.b.example",
            "wild.example",
            "*.other.example",
            "",
        ] {
            assert!(!ours.touch(Some(apart)), "{apart}");
        }
        assert!(!ours.touch(None));
        let mut every = HostNames::default();
        every.add(None);
        every.seal();
        assert!(every.touch(Some("")) && !every.touch(Some("a.example")));
    }
}
