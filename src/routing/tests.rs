use std::sync::Arc;
use std::time::Duration;

use super::*;

fn route(name: &str) -> Arc<Route> {
    Arc::new(Route {
        ingress: IngressRef {
            namespace: "default".into(),
            name: name.into(),
            kind: "Ingress",
        },
        backend: Arc::new(Backend::new(
            BackendRef {
                namespace: "default".into(),
                service: name.into(),
                port: "80".into(),
                via_service_ip: false,
            },
            Protocol::Http1,
            Vec::new(),
            Arc::default(),
        )),
        fallback: None,
        filters: Filters::default(),
        metrics: Arc::default(),
        policy: RoutePolicy {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            body_limit: None,
            balance: Default::default(),
            retry: Default::default(),
            access_log: true,
            affinity: None,
            error_pages: None,
            limit_rate: None,
            request_buffering: None,
            mirror: None,
            external_auth: None,
            request_timeout: None,
        },
    })
}

fn matched(routes: &HostRoutes, path: &str) -> Option<String> {
    routes.route(path).map(|r| r.ingress.name.clone())
}

/// The path cases of the Kubernetes Ingress conformance suite, and a few more.
#[test]
fn path_matching() {
    let mut routes = HostRoutes::default();
    let rules = [
        (PathKind::Exact, "/foo", "exact-foo"),
        (PathKind::Prefix, "/foo", "prefix-foo"),
        (PathKind::Prefix, "/aaa/", "prefix-aaa"),
        (PathKind::Prefix, "/aaa/bbb", "prefix-aaa-bbb"),
        (PathKind::Exact, "/exact/", "exact-slash"),
        (PathKind::Prefix, "/", "root"),
    ];
    for (kind, path, name) in rules {
        routes.insert(kind, path, route(name)).unwrap();
    }
    let cases = [
        ("/foo", "exact-foo"),   // Exact beats Prefix for the same path
        ("/foo/", "prefix-foo"), // Exact /foo does not match /foo/
        ("/foo/bar", "prefix-foo"),
        ("/foobar", "root"),    // element-wise: /foo does not match /foobar
        ("/FOO", "root"),       // case-sensitive
        ("/aaa", "prefix-aaa"), // trailing slash in the rule is ignored
        ("/aaa/", "prefix-aaa"),
        ("/aaa/ccc", "prefix-aaa"),
        ("/aaaccc", "root"),
        ("/aaa/bbb", "prefix-aaa-bbb"), // longest wins
        ("/aaa/bbb/c", "prefix-aaa-bbb"),
        ("/aaa/bbbc", "prefix-aaa"),
        ("/exact/", "exact-slash"),
        ("/exact", "root"),
        ("/", "root"),
        ("", "root-none"),
    ];
    for (path, want) in cases {
        let got = matched(&routes, path);
        let want = (want != "root-none").then(|| want.to_string());
        assert_eq!(got, want, "path {path:?}");
    }
}

#[test]
fn duplicate_rules_keep_the_first() {
    let mut routes = HostRoutes::default();
    routes
        .insert(PathKind::Prefix, "/a", route("first"))
        .unwrap();
    let owner = routes
        .insert(PathKind::Prefix, "/a/", route("second"))
        .unwrap_err();
    assert_eq!(owner.ingress.name, "first");
    routes
        .insert(PathKind::Exact, "/a", route("exact"))
        .unwrap();
    assert_eq!(matched(&routes, "/a/b").as_deref(), Some("first"));
}

#[test]
fn default_route_catches_unmatched_paths() {
    let mut routes = HostRoutes::default();
    routes
        .insert(PathKind::Exact, "/only", route("only"))
        .unwrap();
    assert_eq!(matched(&routes, "/other"), None);
    routes.set_default(route("fallback")).unwrap();
    assert_eq!(matched(&routes, "/other").as_deref(), Some("fallback"));
    assert_eq!(matched(&routes, "/only").as_deref(), Some("only"));
    assert!(routes.set_default(route("late")).is_err());
}

#[test]
fn host_matching() {
    let with = |name: &str| {
        let mut r = HostRoutes::default();
        r.insert(PathKind::Prefix, "/", route(name)).unwrap();
        r
    };
    let table = RoutingTable::new(
        [
            (HostKey::parse(Some("foo.com")).unwrap(), with("exact")),
            (HostKey::parse(Some("*.foo.com")).unwrap(), with("wildcard")),
            (HostKey::parse(Some("Bar.Example")).unwrap(), with("bar")),
            (HostKey::parse(None).unwrap(), with("any")),
        ],
        Vec::new(),
        None,
        TableStats::default(),
    );
    let cases = [
        ("foo.com", "exact"),
        ("FOO.com:8080", "exact"),   // case-insensitive, port ignored
        ("foo.com.", "exact"),       // trailing dot
        ("bar.foo.com", "wildcard"), // one extra label
        ("Bar.Foo.Com:80", "wildcard"),
        ("baz.bar.foo.com", "any"), // two extra labels: no
        (".foo.com", "any"),        // empty label: no
        ("bar.example", "bar"),
        ("other.org", "any"),
        ("[::1]:8080", "any"),
        ("127.0.0.1", "any"),
    ];
    for (host, want) in cases {
        let got = table.route(host, "/x").map(|r| r.ingress.name.as_str());
        assert_eq!(got, Some(want), "host {host:?}");
    }
}

#[test]
fn host_keys() {
    assert_eq!(HostKey::parse(Some("")), Some(HostKey::Any));
    assert_eq!(
        HostKey::parse(Some("*.a.b")),
        Some(HostKey::Wildcard("a.b".into()))
    );
    for bad in ["*", "a..b", "a_b.com", "*.*.a", "foo.*.com", "a b"] {
        assert_eq!(HostKey::parse(Some(bad)), None, "{bad}");
    }
}

#[test]
fn no_match_and_global_default() {
    let empty = RoutingTable::default();
    assert!(empty.route("a.com", "/").is_none());
    let table = RoutingTable::new([], Vec::new(), Some(route("global")), TableStats::default());
    assert_eq!(table.route("a.com", "/").unwrap().ingress.name, "global");
}

#[test]
fn backend_refs() {
    let r = parse_backend_ref("default/web:80").unwrap();
    assert_eq!(
        (r.namespace.as_str(), r.service.as_str(), r.port.as_str()),
        ("default", "web", "80")
    );
    assert_eq!(parse_backend_ref("ns/svc:http").unwrap().port, "http");
    for bad in [
        "web:80",
        "default/web",
        "/web:80",
        "default/:80",
        "default/web:",
    ] {
        assert!(parse_backend_ref(bad).is_none(), "{bad}");
    }
}

/// Gateway API: a path whose routes all ask for something the request lacks
/// leaves it to the next shorter path, and an Ingress path is unaffected.
#[test]
fn guarded_routes_fall_back_to_shorter_paths() {
    use http::{HeaderMap, HeaderName, Method};
    use request_match::{RequestFacts, RequestMatch, ValueMatch};
    let mut routes = HostRoutes::default();
    let canary = RequestMatch {
        headers: vec![(
            HeaderName::from_static("x-canary"),
            ValueMatch::Exact("1".into()),
        )],
        ..RequestMatch::default()
    };
    let post = RequestMatch {
        method: Some(Method::POST),
        ..RequestMatch::default()
    };
    routes
        .insert_guarded(PathKind::Prefix, "/api", canary.clone(), route("canary"))
        .unwrap();
    routes
        .insert_guarded(PathKind::Exact, "/api/x", post, route("post"))
        .unwrap();
    routes.insert(PathKind::Prefix, "/", route("root")).unwrap();
    // The same conditions at the same path: the first keeps it.
    let taken = routes.insert_guarded(PathKind::Prefix, "/api/", canary, route("late"));
    assert_eq!(taken.unwrap_err().ingress.name, "canary");
    let mut headers = HeaderMap::new();
    let name = |facts: &RequestFacts<'_>, path| {
        routes
            .route_for(path, facts)
            .map(|r| r.ingress.name.clone())
    };
    let get = RequestFacts {
        method: &Method::GET,
        headers: &headers,
        query: None,
    };
    assert_eq!(name(&get, "/api/x").as_deref(), Some("root"));
    let post_facts = RequestFacts {
        method: &Method::POST,
        ..get
    };
    assert_eq!(name(&post_facts, "/api/x").as_deref(), Some("post"));
    headers.insert("x-canary", "1".parse().unwrap());
    let with_header = RequestFacts {
        method: &Method::GET,
        headers: &headers,
        query: None,
    };
    assert_eq!(name(&with_header, "/api/x").as_deref(), Some("canary"));
    assert_eq!(name(&with_header, "/other").as_deref(), Some("root"));
    assert_eq!(routes.route_count(), 3);
}

/// An Ingress wildcard covers one label; a Gateway API one any number, and
/// is tried after exact hosts and Ingress wildcards, longest suffix first.
#[test]
fn gateway_wildcards_cover_any_depth() {
    let one = |name: &str| {
        let mut routes = HostRoutes::default();
        routes.insert(PathKind::Prefix, "/", route(name)).unwrap();
        routes
    };
    let table = RoutingTable::new(
        [
            (HostKey::Wildcard("example.com".into()), one("ingress")),
            (HostKey::DeepWildcard("example.com".into()), one("gateway")),
            (HostKey::DeepWildcard("b.example.com".into()), one("deeper")),
        ],
        Vec::new(),
        None,
        TableStats::default(),
    );
    let name = |host: &str| table.route(host, "/").map(|r| r.ingress.name.clone());
    assert_eq!(name("a.example.com").as_deref(), Some("ingress"));
    assert_eq!(name("x.y.example.com").as_deref(), Some("gateway"));
    assert_eq!(name("x.b.example.com").as_deref(), Some("deeper"));
    assert_eq!(name("x.y.b.example.com:8080").as_deref(), Some("deeper"));
    assert_eq!(name("example.com"), None);
    assert_eq!(name(".example.com"), None);
}

/// Gateway API path patterns: the whole path must match; an Exact path
/// wins over them, and they win over prefixes.
#[test]
fn path_patterns_sit_between_exact_paths_and_prefixes() {
    let mut routes = HostRoutes::default();
    routes.insert(PathKind::Prefix, "/", route("root")).unwrap();
    routes
        .insert(PathKind::Prefix, "/v1", route("v1-prefix"))
        .unwrap();
    routes
        .insert(PathKind::Regex, "/v[0-9]+/items", route("pattern"))
        .unwrap();
    routes
        .insert(PathKind::Exact, "/v1/items", route("exact"))
        .unwrap();
    let taken = routes.insert(PathKind::Regex, "/v[0-9]+/items", route("late"));
    assert_eq!(taken.unwrap_err().ingress.name, "pattern");
    assert_eq!(matched(&routes, "/v1/items").as_deref(), Some("exact"));
    assert_eq!(matched(&routes, "/v2/items").as_deref(), Some("pattern"));
    assert_eq!(
        matched(&routes, "/v1/items/x").as_deref(),
        Some("v1-prefix")
    );
    assert_eq!(matched(&routes, "/v2/itemsx").as_deref(), Some("root"));
    assert_eq!(routes.route_count(), 4);
    assert!(path_pattern("(").is_err());
    assert!(path_pattern(&"a".repeat(2000)).is_err());
}
