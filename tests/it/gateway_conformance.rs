//! The Gateway API conformance suite's HTTPRoute scenarios, reproduced:
//! each upstream manifest (`tests/fixtures/gateway-conformance`, copied
//! unchanged) is served from a manifests directory, its routes must be
//! `Accepted` with `ResolvedRefs`, and then every request case of the
//! upstream `.go` test must reach the backend it names or get its status.
//!
//! One sluice serves them in turn: each test's manifest replaces the
//! previous one, and the swap is awaited through the status in
//! `/api/routes`, which comes from the same table as the routes.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use sluice::server::Server;

use crate::support::*;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gateway-conformance"
);

/// One request of an upstream test and what must answer it.
#[derive(Debug, Clone)]
struct Case {
    method: Method,
    host: Option<&'static str>,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    /// The backend's name, or else the status.
    backend: Option<&'static str>,
    status: u16,
    /// What the backend must see: path, Host, headers (repeated ones joined
    /// with `,`, as the suite's echo server reports them), absent headers.
    seen_path: Option<&'static str>,
    seen_host: Option<&'static str>,
    seen_headers: Vec<(&'static str, &'static str)>,
    absent: Vec<&'static str>,
    /// A redirect's `Location`: its host and path, where the test names them.
    location_host: Option<&'static str>,
    location_path: Option<&'static str>,
}

fn req(path: &'static str) -> Case {
    Case {
        method: Method::GET,
        host: None,
        path,
        headers: Vec::new(),
        backend: None,
        status: 200,
        seen_path: None,
        seen_host: None,
        seen_headers: Vec::new(),
        absent: Vec::new(),
        location_host: None,
        location_path: None,
    }
}

impl Case {
    fn host(mut self, host: &'static str) -> Case {
        self.host = Some(host);
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    fn method(mut self, method: &str) -> Case {
        self.method = method.parse().unwrap();
        self
    }

    fn to(mut self, backend: &'static str) -> Case {
        self.backend = Some(backend);
        self
    }

    fn status(mut self, status: u16) -> Case {
        self.status = status;
        self
    }

    /// The backend saw this path (and, with `host`, this Host).
    fn seen(mut self, path: &'static str, host: Option<&'static str>) -> Case {
        self.seen_path = Some(path);
        self.seen_host = host;
        self
    }

    fn seen_header(mut self, name: &'static str, value: &'static str) -> Case {
        self.seen_headers.push((name, value));
        self
    }

    fn absent(mut self, name: &'static str) -> Case {
        self.absent.push(name);
        self
    }

    /// A redirect with this status to this host and path (either may be
    /// left to the test's silence).
    fn redirect(
        mut self,
        status: u16,
        host: Option<&'static str>,
        path: Option<&'static str>,
    ) -> Case {
        self.status = status;
        self.location_host = host;
        self.location_path = path;
        self
    }
}

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";
const WEB: &str = "web-backend";
const APP_V1: &str = "app-backend-v1";
const APP_V2: &str = "app-backend-v2";
const INFRA: &str = "gateway-conformance-infra";

/// An upstream conformance test: its short name, manifest, the routes it
/// makes, the reason of their `ResolvedRefs` condition, and its cases.
struct Conformance {
    name: &'static str,
    file: &'static str,
    routes: &'static [&'static str],
    resolved: &'static str,
    /// Routes of the manifest that no listener accepts, with the reason.
    rejected: &'static [(&'static str, &'static str)],
    cases: Vec<Case>,
    /// Once the manifest's ReferenceGrants are deleted: the reason then,
    /// and the cases.
    ungranted: Option<(&'static str, Vec<Case>)>,
}

impl Default for Conformance {
    fn default() -> Self {
        Conformance {
            name: "",
            file: "",
            routes: &[],
            resolved: "ResolvedRefs",
            rejected: &[],
            cases: Vec::new(),
            ungranted: None,
        }
    }
}

fn tests() -> Vec<Conformance> {
    vec![
        Conformance {
            name: "HTTPRouteHeaderMatching",
            file: "httproute-header-matching.yaml",
            routes: &["header-matching"],
            cases: vec![
                req("/").header("Version", "one").to(V1),
                req("/").header("Version", "two").to(V2),
                req("/")
                    .header("Version", "two")
                    .header("Color", "orange")
                    .to(V1),
                req("/")
                    .header("Version", "two")
                    .header("Color", "blue")
                    .to(V2),
                req("/").header("Color", "orange").status(404),
                req("/").header("Some-Other-Header", "one").status(404),
                req("/").header("Color", "blue").to(V1),
                req("/").header("Color", "green").to(V1),
                req("/").header("Color", "red").to(V2),
                req("/").header("Color", "yellow").to(V2),
                req("/").header("Color", "purple").status(404),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteMatching",
            file: "httproute-matching.yaml",
            routes: &["matching"],
            cases: vec![
                req("/").to(V1),
                req("/example").to(V1),
                req("/").header("Version", "one").to(V1),
                req("/v2").to(V2),
                req("/v2/example").to(V2),
                req("/").header("Version", "two").to(V2),
                req("/v2/").to(V2),
                req("/v2example").to(V1),
                req("/foo/v2/example").to(V1),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteQueryParamMatching",
            file: "httproute-query-param-matching.yaml",
            routes: &["query-param-matching"],
            cases: vec![
                req("/?animal=whale").to(V1),
                req("/?animal=dolphin").to(V2),
                req("/?animal=dolphin&color=blue").to(V3),
                req("/?ANIMAL=Whale").to(V3),
                req("/?animal=whale&otherparam=irrelevant").to(V1),
                req("/?animal=dolphin&color=yellow").to(V2),
                req("/?color=blue").status(404),
                req("/?animal=dog").status(404),
                req("/?animal=whaledolphin").status(404),
                req("/").status(404),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteMethodMatching",
            file: "httproute-method-matching.yaml",
            routes: &["method-matching"],
            cases: vec![
                req("/").method("POST").to(V1),
                req("/").method("GET").to(V2),
                req("/").method("HEAD").status(404),
                req("/path1").method("GET").to(V1),
                req("/").header("version", "one").method("PUT").to(V2),
                req("/path2").header("version", "two").method("POST").to(V3),
                req("/path3").method("PATCH").to(V1),
                req("/path4")
                    .header("version", "three")
                    .method("DELETE")
                    .to(V1),
                req("/").method("PUT").status(404),
                req("/path4").method("DELETE").status(404),
                req("/path5").method("PATCH").to(V1),
                req("/").header("version", "four").method("PATCH").to(V2),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteMatchingAcrossRoutes",
            file: "httproute-matching-across-routes.yaml",
            routes: &["matching-part1", "matching-part2"],
            cases: vec![
                req("/").host("example.com").to(V1),
                req("/example").host("example.com").to(V1),
                req("/example").host("example.net").to(V1),
                req("/example")
                    .host("example.com")
                    .header("Version", "one")
                    .to(V1),
                req("/v2").host("example.com").to(V2),
                req("/v2").host("example.net").to(V1),
                req("/v2/example").host("example.com").to(V2),
                req("/").host("example.com").header("Version", "two").to(V2),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteExactPathMatching",
            file: "httproute-exact-path-matching.yaml",
            routes: &["exact-matching"],
            cases: vec![
                req("/one").to(V1),
                req("/two").to(V2),
                req("/").status(404),
                req("/one/example").status(404),
                req("/two/").status(404),
                req("/Two").status(404),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteInvalidReferenceGrant",
            file: "httproute-invalid-reference-grant.yaml",
            routes: &["reference-grant"],
            resolved: "RefNotPermitted",
            cases: vec![req("/").status(500)],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteInvalidNonExistentBackendRef",
            file: "httproute-invalid-nonexistent-backendref.yaml",
            routes: &["invalid-nonexistent-backend-ref"],
            resolved: "BackendNotFound",
            cases: vec![req("/").status(500)],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteReferenceGrant",
            file: "httproute-reference-grant.yaml",
            routes: &["reference-grant"],
            cases: vec![req("/").to(WEB)],
            ungranted: Some(("RefNotPermitted", vec![req("/").status(500)])),
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteInvalidCrossNamespaceBackendRef",
            file: "httproute-invalid-cross-namespace-backend-ref.yaml",
            routes: &["invalid-cross-namespace-backend-ref"],
            resolved: "RefNotPermitted",
            cases: vec![req("/").status(500)],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
            file: "httproute-partially-invalid-via-invalid-reference-grant.yaml",
            routes: &["invalid-reference-grant"],
            resolved: "RefNotPermitted",
            cases: vec![req("/v2").status(500), req("/").to(APP_V1)],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteTimeoutRequest",
            file: "httproute-timeout-request.yaml",
            routes: &["request-timeout"],
            cases: vec![
                req("/request-timeout").to(V1),
                req("/request-timeout?delay=1s").status(504),
                req("/disable-request-timeout?delay=1s").to(V1),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteTimeoutBackendRequest",
            file: "httproute-timeout-backend-request.yaml",
            routes: &["backend-request-timeout"],
            cases: vec![
                req("/backend-timeout").to(V1),
                req("/backend-timeout?delay=1s").status(504),
                req("/disable-backend-timeout?delay=1s").to(V1),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteCrossNamespace",
            file: "httproute-cross-namespace.yaml",
            routes: &["cross-namespace"],
            cases: vec![req("/").to(WEB)],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteInvalidParentRefNotMatchingSectionName",
            file: "httproute-invalid-parentref-not-matching-section-name.yaml",
            rejected: &[(
                "httproute-listener-not-matching-section-name",
                "NoMatchingParent",
            )],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteInvalidCrossNamespaceParentRef",
            file: "httproute-invalid-cross-namespace-parent-ref.yaml",
            rejected: &[(
                "invalid-cross-namespace-parent-ref",
                "NotAllowedByListeners",
            )],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteNoBackendRefs",
            file: "httproute-omitted-backendrefs.yaml",
            routes: &["omitted-backendrefs"],
            cases: vec![
                req("/forward").to(V1),
                req("/omitted-no-forward").status(500),
                req("/empty-no-forward").status(500),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteSimpleSameNamespace",
            file: "httproute-simple-same-namespace.yaml",
            routes: &["gateway-conformance-infra-test"],
            cases: vec![req("/").to(V1)],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRoutePathMatchOrder",
            file: "httproute-path-match-order.yaml",
            routes: &["path-matching-order"],
            cases: vec![
                req("/match/exact/one").to(V3),
                req("/match/exact").to(V2),
                req("/match").to(V1),
                req("/match/prefix/one/any").to(V2),
                req("/match/prefix/any").to(V1),
                req("/match/any").to(V3),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteListenerHostnameMatching",
            file: "httproute-listener-hostname-matching.yaml",
            routes: &["backend-v1", "backend-v2", "backend-v3"],
            cases: vec![
                req("/").host("bar.com").to(V1),
                req("/").host("foo.bar.com").to(V2),
                req("/").host("baz.bar.com").to(V3),
                req("/").host("boo.bar.com").to(V3),
                req("/").host("multiple.prefixes.bar.com").to(V3),
                req("/").host("multiple.prefixes.foo.com").to(V3),
                req("/").host("foo.com").status(404),
                req("/").host("no.matching.host").status(404),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteHostnameIntersection",
            file: "httproute-hostname-intersection.yaml",
            routes: &[
                "specific-host-matches-listener-specific-host",
                "specific-host-matches-listener-wildcard-host",
                "wildcard-host-matches-listener-specific-host",
                "wildcard-host-matches-listener-wildcard-host",
                "httproute-hostname-intersection-all",
            ],
            rejected: &[("no-intersecting-hosts", "NoMatchingListenerHostname")],
            cases: vec![
                req("/s1").host("very.specific.com").to(V1),
                req("/s1").host("very.specific.com:1234").to(V1),
                req("/s1").host("non.matching.com").status(404),
                req("/s1").host("foo.nonmatchingwildcard.io").status(404),
                req("/s1").host("foo.wildcard.io").status(404),
                req("/non-matching-prefix")
                    .host("very.specific.com")
                    .status(404),
                req("/s2").host("foo.wildcard.io").to(V2),
                req("/s2").host("bar.wildcard.io").to(V2),
                req("/s2").host("foo.bar.wildcard.io").to(V2),
                req("/s2").host("non.matching.com").status(404),
                req("/s2").host("wildcard.io").status(404),
                req("/s2").host("very.specific.com").status(404),
                req("/non-matching-prefix")
                    .host("foo.wildcard.io")
                    .status(404),
                req("/s3").host("very.specific.com").to(V3),
                req("/s3").host("non.matching.com").status(404),
                req("/s3").host("foo.specific.com").status(404),
                req("/s3").host("foo.wildcard.io").status(404),
                req("/non-matching-prefix")
                    .host("very.specific.com")
                    .status(404),
                req("/s4").host("foo.anotherwildcard.io").to(V1),
                req("/s4").host("bar.anotherwildcard.io").to(V1),
                req("/s4").host("foo.bar.anotherwildcard.io").to(V1),
                req("/s4").host("anotherwildcard.io").status(404),
                req("/s4").host("foo.wildcard.io").status(404),
                req("/s4").host("very.specific.com").status(404),
                req("/non-matching-prefix")
                    .host("foo.anotherwildcard.io")
                    .status(404),
                req("/").host("first.com").to(V2),
                req("/").host("sub.first.com").to(V2),
                req("/").host("second.com").to(V2),
                req("/").host("sub.second.com").to(V2),
                req("/").host("third.com").status(404),
                req("/").host("sub.third.com").status(404),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteRequestHeaderModifier",
            file: "httproute-request-header-modifier.yaml",
            routes: &["request-header-modifier"],
            cases: vec![
                req("/set")
                    .header("Some-Other-Header", "val")
                    .to(V1)
                    .seen("/set", None)
                    .seen_header("Some-Other-Header", "val")
                    .seen_header("X-Header-Set", "set-overwrites-values"),
                req("/set")
                    .header("Some-Other-Header", "val")
                    .header("X-Header-Set", "some-other-value")
                    .to(V1)
                    .seen_header("Some-Other-Header", "val")
                    .seen_header("X-Header-Set", "set-overwrites-values"),
                req("/add")
                    .header("Some-Other-Header", "val")
                    .to(V1)
                    .seen_header("X-Header-Add", "add-appends-values"),
                req("/add")
                    .header("Some-Other-Header", "val")
                    .header("X-Header-Add", "some-other-value")
                    .to(V1)
                    .seen_header("X-Header-Add", "some-other-value,add-appends-values"),
                req("/remove")
                    .header("X-Header-Remove", "val")
                    .to(V1)
                    .absent("X-Header-Remove"),
                req("/multiple")
                    .header("X-Header-Set-2", "set-val-2")
                    .header("X-Header-Add-2", "add-val-2")
                    .header("X-Header-Remove-2", "remove-val-2")
                    .header("Another-Header", "another-header-val")
                    .to(V1)
                    .seen_header("X-Header-Set-1", "header-set-1")
                    .seen_header("X-Header-Set-2", "header-set-2")
                    .seen_header("X-Header-Add-1", "header-add-1")
                    .seen_header("X-Header-Add-2", "add-val-2,header-add-2")
                    .seen_header("X-Header-Add-3", "header-add-3")
                    .seen_header("Another-Header", "another-header-val")
                    .absent("X-Header-Remove-1")
                    .absent("X-Header-Remove-2"),
                req("/case-insensitivity")
                    .header("x-header-set", "original-val-set")
                    .header("x-header-add", "original-val-add")
                    .header("x-header-remove", "original-val-remove")
                    .header("Another-Header", "another-header-val")
                    .to(V1)
                    .seen_header("X-Header-Set", "header-set")
                    .seen_header("X-Header-Add", "original-val-add,header-add")
                    .seen_header("Another-Header", "another-header-val")
                    .absent("X-Header-Remove"),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteRedirectHostAndStatus",
            file: "httproute-redirect-host-and-status.yaml",
            routes: &["redirect-host-and-status"],
            cases: vec![
                req("/hostname-redirect").redirect(302, Some("example.org"), None),
                req("/host-and-status").redirect(301, Some("example.org"), None),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteRedirectPath",
            file: "httproute-redirect-path.yaml",
            routes: &["redirect-path"],
            cases: vec![
                req("/original-prefix/lemon").redirect(
                    302,
                    None,
                    Some("/replacement-prefix/lemon"),
                ),
                req("/full/path/original").redirect(302, None, Some("/full-path-replacement")),
                req("/path-and-host").redirect(
                    302,
                    Some("example.org"),
                    Some("/replacement-prefix"),
                ),
                req("/path-and-status").redirect(301, None, Some("/replacement-prefix")),
                req("/full-path-and-host").redirect(
                    302,
                    Some("example.org"),
                    Some("/replacement-full"),
                ),
                req("/full-path-and-status").redirect(301, None, Some("/replacement-full")),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteRewriteHost",
            file: "httproute-rewrite-host.yaml",
            routes: &["rewrite-host"],
            cases: vec![
                req("/one")
                    .host("rewrite.example")
                    .seen("/one", Some("one.example.org")),
                req("/two")
                    .host("rewrite.example")
                    .seen("/two", Some("example.org")),
                req("/rewrite-host-and-modify-headers")
                    .host("rewrite.example")
                    .header("X-Header-Remove", "remove-val")
                    .header("X-Header-Add-Append", "append-val-1")
                    .seen("/rewrite-host-and-modify-headers", Some("test.example.org"))
                    .seen_header("X-Header-Add", "header-val-1")
                    .seen_header("X-Header-Add-Append", "append-val-1,header-val-2")
                    .seen_header("X-Header-Set", "set-overwrites-values")
                    .absent("X-Header-Remove"),
            ],
            ..Conformance::default()
        },
        Conformance {
            name: "HTTPRouteRewritePath",
            file: "httproute-rewrite-path.yaml",
            routes: &["rewrite-path"],
            cases: vec![
                req("/prefix/one/two").seen("/one/two", None),
                req("/strip-prefix/three").seen("/three", None),
                req("/strip-prefix").seen("/", None),
                req("/full/one/two").seen("/one", None),
                req("/full/rewrite-path-and-modify-headers/test")
                    .header("X-Header-Remove", "remove-val")
                    .header("X-Header-Add-Append", "append-val-1")
                    .header("X-Header-Set", "set-val")
                    .seen("/test", None)
                    .seen_header("X-Header-Add", "header-val-1")
                    .seen_header("X-Header-Add-Append", "append-val-1,header-val-2")
                    .seen_header("X-Header-Set", "set-overwrites-values")
                    .absent("X-Header-Remove"),
                req("/prefix/rewrite-path-and-modify-headers/one")
                    .header("X-Header-Remove", "remove-val")
                    .header("X-Header-Add-Append", "append-val-1")
                    .header("X-Header-Set", "set-val")
                    .seen("/prefix/one", None)
                    .seen_header("X-Header-Add", "header-val-1")
                    .seen_header("X-Header-Add-Append", "append-val-1,header-val-2")
                    .seen_header("X-Header-Set", "set-overwrites-values")
                    .absent("X-Header-Remove"),
            ],
            ..Conformance::default()
        },
    ]
}

/// The backends the upstream tests name, each in its namespace, on port
/// 8080 as the conformance base makes them.
fn backends(pods: &[(&str, &str, SocketAddr)]) -> String {
    let mut yaml = String::new();
    for (namespace, name, addr) in pods {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  ports: [{{port: 8080, targetPort: 3000}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
            addr.port(),
            addr.ip()
        );
    }
    yaml
}

fn fixture(file: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{file}"))
        .unwrap()
        .replace("{GATEWAY_CLASS_NAME}", "sluice")
}

/// The status of `kind/name` in `/api/routes`, if the table has it.
fn object<'a>(routes: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    routes["gateway_api"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind && o["name"] == name)
}

fn holds(conditions: &Value, kind: &str) -> bool {
    reason(conditions, kind) == Some(("True", kind))
}

/// A condition's status and reason.
fn reason<'a>(conditions: &'a Value, kind: &str) -> Option<(&'a str, &'a str)> {
    let found = conditions.as_array()?.iter().find(|c| c["type"] == kind)?;
    Some((found["status"].as_str()?, found["reason"].as_str()?))
}

/// Every route of the test is in the table, accepted by each parent with
/// its references resolved as the test expects (`resolved`: the reason),
/// and no route of another test is.
fn ready(routes: &Value, test: &Conformance, resolved: &str) -> bool {
    let want = match resolved {
        "ResolvedRefs" => ("True", resolved),
        _ => ("False", resolved),
    };
    let ours = test.routes.iter().all(|name| {
        object(routes, "HTTPRoute", name).is_some_and(|route| {
            let parents = route["parts"].as_array().map_or(&[][..], |p| p);
            !parents.is_empty()
                && parents.iter().all(|p| {
                    holds(&p["conditions"], "Accepted")
                        && reason(&p["conditions"], "ResolvedRefs") == Some(want)
                })
        })
    });
    let rejected = test.rejected.iter().all(|(name, why)| {
        object(routes, "HTTPRoute", name).is_some_and(|route| {
            route["parts"].as_array().is_some_and(|parents| {
                parents
                    .iter()
                    .all(|p| reason(&p["conditions"], "Accepted") == Some(("False", why)))
            })
        })
    });
    let named = |name: &Value| {
        test.routes.iter().any(|n| name == n) || test.rejected.iter().any(|(n, _)| name == n)
    };
    let others = routes["gateway_api"].as_array().is_some_and(|all| {
        all.iter()
            .filter(|o| o["kind"] == "HTTPRoute")
            .any(|o| !named(&o["name"]))
    });
    ours && rejected && !others
}

#[tokio::test]
async fn http_route_scenarios_as_the_conformance_suite_checks_them() {
    let (_pods, pods) = conformance_pods().await;
    let m = Manifests::new();
    m.write("base.yaml", &(fixture("base.yaml") + &backends(&pods)));
    let sluice = start_sluice(m.path(), "").await;
    run_all(&sluice, |yaml| m.write("routes.yaml", yaml), |_| async {}).await;
}

/// The same scenarios from the in-test apiserver: each test's objects are
/// applied, and deleted for the next, as the suite does; the leader writes
/// each route's status, which must say what `/api/routes` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_scenarios_from_the_in_test_apiserver() {
    use crate::support::apiserver::FakeApiServer;
    use sluice::discovery::kube::KubeOptions;
    use sluice::discovery::status::StatusOptions;

    let (_pods, pods) = conformance_pods().await;
    let api = FakeApiServer::start().await;
    api.install_gateway_api();
    api.apply_yaml(&(fixture("base.yaml") + &backends(&pods)));
    let dir = tempfile::tempdir().unwrap();
    let options = KubeOptions {
        identity: "replica-a".into(),
        status: Some(StatusOptions {
            publish_addresses: vec!["203.0.113.10".into()],
            pod_selector: "app.kubernetes.io/name=sluice".into(),
            namespace: "sluice".into(),
            lease_name: "sluice-leader".into(),
            identity: "replica-a".into(),
            retry_period: Duration::from_millis(100),
        }),
        ..KubeOptions::default()
    };
    let sluice = start_sluice_kube(&api.kubeconfig(dir.path()), options).await;
    let applied = std::cell::RefCell::new(Vec::<(String, String, String)>::new());
    let install = |yaml: &str| {
        for (kind, namespace, name) in applied.borrow_mut().drain(..) {
            api.delete(&kind, &namespace, &name);
        }
        api.apply_yaml(yaml);
        applied.borrow_mut().extend(identities(yaml));
    };
    // Each accepted route's status, as the suite reads it.
    let written = |test: &'static Conformance| {
        let api = api.clone();
        async move {
            for name in test.routes {
                let status = || {
                    let route = api.object("HTTPRoute", INFRA, name).or_else(|| {
                        api.object("HTTPRoute", "gateway-conformance-web-backend", name)
                    });
                    route
                        .map(|r| r["status"]["parents"].clone())
                        .unwrap_or_default()
                };
                let ours = eventually(Duration::from_secs(10), || {
                    let parents = status();
                    async move {
                        parents.as_array().is_some_and(|all| {
                            all.iter().any(|p| {
                                p["controllerName"] == "sluice.io/gateway-controller"
                                    && holds(&p["conditions"], "Accepted")
                            })
                        })
                    }
                })
                .await;
                assert!(ours.is_some(), "{}: {name}: {}", test.name, status());
            }
        }
    };
    run_all(&sluice, install, written).await;
}

/// The pods every test names, kept alive, and their addresses.
async fn conformance_pods() -> (Vec<Upstream>, Vec<(&'static str, &'static str, SocketAddr)>) {
    let names = [
        (INFRA, V1),
        (INFRA, V2),
        (INFRA, V3),
        ("gateway-conformance-web-backend", WEB),
        ("gateway-conformance-app-backend", APP_V1),
        ("gateway-conformance-app-backend", APP_V2),
    ];
    let mut pods = Vec::new();
    let mut addrs = Vec::new();
    for (namespace, name) in names {
        let pod = start_upstream(name).await;
        addrs.push((namespace, name, pod.addr));
        pods.push(pod);
    }
    (pods, addrs)
}

/// `(kind, namespace, name)` of each object of a manifest.
fn identities(yaml: &str) -> Vec<(String, String, String)> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .map(|v| {
            let text = |v: &serde_yaml::Value| v.as_str().unwrap_or_default().to_owned();
            let namespace = v["metadata"]["namespace"].as_str().unwrap_or("default");
            (
                text(&v["kind"]),
                namespace.to_owned(),
                text(&v["metadata"]["name"]),
            )
        })
        .collect()
}

/// Every test in turn: `install` replaces the previous test's objects with
/// its manifest; `after` checks what else the source shows (the status the
/// leader wrote).
async fn run_all<Fut: std::future::Future<Output = ()>>(
    sluice: &Server,
    install: impl Fn(&str),
    after: impl Fn(&'static Conformance) -> Fut,
) {
    let http = client();
    let all: &'static [Conformance] = Box::leak(tests().into_boxed_slice());
    for test in all {
        let manifest = fixture(test.file);
        install(&manifest);
        swapped(sluice, test, test.resolved).await;
        // The Gateway is accepted and programmed, as the suite checks first.
        let routes = admin_json(sluice, "/api/routes").await;
        let gateway = object(&routes, "Gateway", "same-namespace").unwrap();
        assert!(holds(&gateway["conditions"], "Accepted"), "{gateway}");
        assert!(holds(&gateway["conditions"], "Programmed"), "{gateway}");
        check(&http, sluice, test.name, &test.cases).await;
        if test.resolved == "ResolvedRefs" {
            after(test).await;
        }
        if let Some((resolved, cases)) = &test.ungranted {
            let kept: Vec<&str> = manifest
                .split("\n---\n")
                .filter(|doc| !doc.contains("kind: ReferenceGrant"))
                .collect();
            install(&kept.join("\n---\n"));
            swapped(sluice, test, resolved).await;
            check(&http, sluice, test.name, cases).await;
        }
    }
}

/// Until the table has the test's routes, with the references resolved as
/// `resolved` says.
async fn swapped(sluice: &Server, test: &Conformance, resolved: &str) {
    let done = eventually(Duration::from_secs(20), || async {
        ready(&admin_json(sluice, "/api/routes").await, test, resolved)
    })
    .await;
    assert!(
        done.is_some(),
        "{}: routes not accepted with {resolved}: {}\n{}",
        test.name,
        admin_json(sluice, "/api/routes").await["gateway_api"],
        admin_text(sluice, "/api/warnings").await
    );
}

/// Sends each case as the suite does (to the Gateway's address, which is
/// also the Host unless the case names one) and checks who answered.
async fn check(http: &HttpClient, sluice: &Server, name: &str, cases: &[Case]) {
    for (i, case) in cases.iter().enumerate() {
        let addr = sluice.http_addr.to_string();
        let host = case.host.map_or(addr, str::to_owned);
        let mut request = Request::builder()
            .method(case.method.clone())
            .uri(format!("http://{}{}", sluice.http_addr, case.path))
            .header("host", host);
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let reply = send(http, request.body(Full::default()).unwrap())
            .await
            .unwrap();
        let answered = match case.backend {
            Some(_) => (reply.status, Some(reply.upstream())),
            None => (reply.status, None),
        };
        let want = (
            StatusCode::from_u16(case.status).unwrap(),
            case.backend.map(str::to_owned),
        );
        assert_eq!(answered, want, "{name} case {i}: {case:?}");
        let seen = || reply.json();
        if let Some(path) = case.seen_path {
            let uri = seen()["uri"].as_str().unwrap_or_default().to_owned();
            let got = uri.split('?').next().unwrap_or_default().to_owned();
            assert_eq!(got, path, "{name} case {i}: path the backend saw");
        }
        if let Some(host) = case.seen_host {
            assert_eq!(seen()["headers"]["host"][0], host, "{name} case {i}: Host");
        }
        for (header, value) in &case.seen_headers {
            let values = seen()["headers"][header.to_ascii_lowercase()].clone();
            let joined: Vec<&str> = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(joined.join(","), *value, "{name} case {i}: {header}");
        }
        for header in &case.absent {
            let present = seen()["headers"].get(header.to_ascii_lowercase()).is_some();
            assert!(!present, "{name} case {i}: {header} must be absent");
        }
        if case.location_host.is_some() || case.location_path.is_some() {
            let location = reply.headers["location"].to_str().unwrap().to_owned();
            let uri: http::Uri = location.parse().unwrap();
            if let Some(host) = case.location_host {
                assert_eq!(uri.host(), Some(host), "{name} case {i}: {location}");
            }
            if let Some(path) = case.location_path {
                assert_eq!(uri.path(), path, "{name} case {i}: {location}");
            }
        }
    }
}

/// The same scenarios from a cluster: the watchers take Gateway API objects
/// from the in-test apiserver once its discovery names their CRDs, the
/// leader writes their status (with `observedGeneration`, other
/// controllers' route parents kept), and a deleted ReferenceGrant closes
/// the route it allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_cluster_with_status_written_by_the_leader() {
    use crate::support::apiserver::FakeApiServer;
    use sluice::discovery::kube::KubeOptions;
    use sluice::discovery::status::StatusOptions;

    let v1 = start_upstream(V1).await;
    let v2 = start_upstream(V2).await;
    let web = start_upstream(WEB).await;
    let api = FakeApiServer::start().await;
    api.install_gateway_api();
    let pods = [
        (INFRA, V1, v1.addr),
        (INFRA, V2, v2.addr),
        ("gateway-conformance-web-backend", WEB, web.addr),
    ];
    api.apply_yaml(&(fixture("base.yaml") + &backends(&pods)));
    api.apply_yaml(&fixture("httproute-header-matching.yaml"));
    api.apply_yaml(&fixture("httproute-reference-grant.yaml").replace(
        "  - name: same-namespace\n",
        "  - name: same-namespace\n  hostnames: [grant.example]\n",
    ));
    // Another controller's parent on the route: its entry must stay.
    let mut route = api.object("HTTPRoute", INFRA, "header-matching").unwrap();
    route["status"] = serde_json::json!({"parents": [{"controllerName": "example.com/other", "parentRef": {"name": "theirs"}, "conditions": []}]});
    api.apply(route);
    let dir = tempfile::tempdir().unwrap();
    let options = KubeOptions {
        identity: "replica-a".into(),
        status: Some(StatusOptions {
            publish_addresses: vec!["203.0.113.10".into()],
            pod_selector: "app.kubernetes.io/name=sluice".into(),
            namespace: "sluice".into(),
            lease_name: "sluice-leader".into(),
            identity: "replica-a".into(),
            retry_period: Duration::from_millis(100),
        }),
        ..KubeOptions::default()
    };
    let sluice = start_sluice_kube(&api.kubeconfig(dir.path()), options).await;
    let http = client();
    let mut header = tests().into_iter().next().unwrap();
    assert_eq!(header.name, "HTTPRouteHeaderMatching");
    header.routes = &["header-matching", "reference-grant"];
    swapped(&sluice, &header, "ResolvedRefs").await;
    check(&http, &sluice, header.name, &header.cases).await;
    let granted = [req("/").host("grant.example").to(WEB)];
    check(&http, &sluice, "HTTPRouteReferenceGrant", &granted).await;

    // The status, as the suite reads it from the apiserver.
    let status = |kind: &str, namespace: &str, name: &str| {
        api.object(kind, namespace, name)
            .map(|o| o["status"].clone())
            .unwrap_or_default()
    };
    let written = eventually(Duration::from_secs(10), || {
        let route = status("HTTPRoute", INFRA, "header-matching");
        async move { route["parents"].as_array().is_some_and(|p| p.len() == 2) }
    })
    .await;
    assert!(
        written.is_some(),
        "{}",
        status("HTTPRoute", INFRA, "header-matching")
    );
    let route = status("HTTPRoute", INFRA, "header-matching");
    let ours = route["parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["controllerName"] == "sluice.io/gateway-controller")
        .unwrap();
    assert_eq!(ours["parentRef"]["name"], "same-namespace");
    assert_eq!(
        reason(&ours["conditions"], "Accepted"),
        Some(("True", "Accepted"))
    );
    let generation = api.object("HTTPRoute", INFRA, "header-matching").unwrap()["metadata"]
        ["generation"]
        .clone();
    assert_eq!(ours["conditions"][0]["observedGeneration"], generation);
    assert!(ours["conditions"][0]["lastTransitionTime"].is_string());
    let until = |kind: &'static str, namespace: &'static str, name: &'static str| {
        let status = &status;
        async move {
            eventually(Duration::from_secs(10), || {
                let s = status(kind, namespace, name);
                async move { !s.is_null() }
            })
            .await;
            status(kind, namespace, name)
        }
    };
    let gateway = until("Gateway", INFRA, "same-namespace").await;
    assert_eq!(gateway["addresses"][0]["value"], "203.0.113.10");
    assert_eq!(
        reason(&gateway["conditions"], "Programmed"),
        Some(("True", "Programmed"))
    );
    assert_eq!(gateway["listeners"][0]["attachedRoutes"], 2);
    let class = until("GatewayClass", "", "sluice").await;
    assert_eq!(
        reason(&class["conditions"], "Accepted"),
        Some(("True", "Accepted"))
    );

    // A GRPCRoute from the cluster: tonic reaches its pod over h2c, and
    // its status is written as an HTTPRoute's.
    let (_reporter, grpc_addr) = start_grpc_health().await;
    api.apply_yaml(&backends(&[(INFRA, "grpc-health", grpc_addr)]));
    api.apply_yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: health, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [grpc.example]\n  rules:\n  - matches: [{method: {service: grpc.health.v1.Health}}]\n    backendRefs: [{name: grpc-health, port: 8080}]\n",
    );
    let grpc = until("GRPCRoute", INFRA, "health").await;
    assert_eq!(
        reason(&grpc["parents"][0]["conditions"], "Accepted"),
        Some(("True", "Accepted")),
        "{grpc}"
    );
    let channel = tonic::transport::Endpoint::try_from(format!("http://{}", sluice.http_addr))
        .unwrap()
        .origin("http://grpc.example".parse().unwrap())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        health_of(channel, "shop.Cart").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // The grant goes: the route answers 500 and says why.
    api.delete(
        "ReferenceGrant",
        "gateway-conformance-web-backend",
        "reference-grant",
    );
    let closed = eventually(Duration::from_secs(10), || {
        let route = status("HTTPRoute", INFRA, "reference-grant");
        async move {
            route["parents"][0]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "RefNotPermitted"))
        }
    })
    .await;
    assert!(
        closed.is_some(),
        "{}",
        status("HTTPRoute", INFRA, "reference-grant")
    );
    let refused = [req("/").host("grant.example").status(500)];
    check(&http, &sluice, "HTTPRouteReferenceGrant", &refused).await;
}
