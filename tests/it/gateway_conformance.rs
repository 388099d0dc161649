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
}

fn req(path: &'static str) -> Case {
    Case {
        method: Method::GET,
        host: None,
        path,
        headers: Vec::new(),
        backend: None,
        status: 200,
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
}

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";

/// An upstream conformance test: its short name, manifest, the routes it
/// makes, and its cases.
struct Conformance {
    name: &'static str,
    file: &'static str,
    routes: &'static [&'static str],
    cases: Vec<Case>,
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
        },
    ]
}

/// The backends every upstream test names, in the infrastructure namespace,
/// on port 8080 as the conformance base makes them.
fn backends(pods: &[(&str, SocketAddr)]) -> String {
    let mut yaml = String::new();
    for (name, addr) in pods {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  ports: [{{port: 8080, targetPort: 3000}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: gateway-conformance-infra\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n",
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
    conditions
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// Every route of the test is in the table, accepted by each parent with
/// its references resolved, and no route of another test is.
fn ready(routes: &Value, test: &Conformance) -> bool {
    let ours = test.routes.iter().all(|name| {
        object(routes, "HTTPRoute", name).is_some_and(|route| {
            let parents = route["parts"].as_array().map_or(&[][..], |p| p);
            !parents.is_empty()
                && parents.iter().all(|p| {
                    holds(&p["conditions"], "Accepted") && holds(&p["conditions"], "ResolvedRefs")
                })
        })
    });
    let others = routes["gateway_api"].as_array().is_some_and(|all| {
        all.iter()
            .filter(|o| o["kind"] == "HTTPRoute")
            .any(|o| !test.routes.iter().any(|name| o["name"] == *name))
    });
    ours && !others
}

#[tokio::test]
async fn core_and_extended_http_route_matching_as_the_conformance_suite_checks_it() {
    let v1 = start_upstream(V1).await;
    let v2 = start_upstream(V2).await;
    let v3 = start_upstream(V3).await;
    let m = Manifests::new();
    m.write(
        "base.yaml",
        &(fixture("base.yaml") + &backends(&[(V1, v1.addr), (V2, v2.addr), (V3, v3.addr)])),
    );
    let sluice = start_sluice(m.path(), "").await;
    let http = client();
    for test in tests() {
        m.write("routes.yaml", &fixture(test.file));
        let swapped = eventually(Duration::from_secs(20), || async {
            ready(&admin_json(&sluice, "/api/routes").await, &test)
        })
        .await;
        assert!(
            swapped.is_some(),
            "{}: routes not accepted: {}\n{}",
            test.name,
            admin_json(&sluice, "/api/routes").await["gateway_api"],
            admin_text(&sluice, "/api/warnings").await
        );
        // The Gateway is accepted and programmed, as the suite checks first.
        let routes = admin_json(&sluice, "/api/routes").await;
        let gateway = object(&routes, "Gateway", "same-namespace").unwrap();
        assert!(holds(&gateway["conditions"], "Accepted"), "{gateway}");
        assert!(holds(&gateway["conditions"], "Programmed"), "{gateway}");
        for (i, case) in test.cases.iter().enumerate() {
            let addr = sluice.http_addr.to_string();
            let host = case.host.map_or(addr, str::to_owned);
            let mut request = Request::builder()
                .method(case.method.clone())
                .uri(format!("http://{}{}", sluice.http_addr, case.path))
                .header("host", host);
            for (name, value) in &case.headers {
                request = request.header(*name, *value);
            }
            let reply = send(&http, request.body(Full::default()).unwrap())
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
            assert_eq!(answered, want, "{} case {i}: {case:?}", test.name);
        }
    }
}
