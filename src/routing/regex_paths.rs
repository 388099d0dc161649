//! ingress-nginx's regex mode for one host. Once any Ingress of a host has
//! `use-regex: "true"` or a `rewrite-target`, every path of that host, from
//! every Ingress, is matched as nginx's `location ~* "^PATH"`:
//! case-insensitive, anchored at the start only, first match wins, in the
//! order ingress-nginx writes them (longest path first, ties in reverse
//! byte order). Its quirks follow: an `Exact` path matches as a prefix, and a
//! `Prefix` path `/foo` also matches `/foobar`.
//!
//! All of a host's patterns are compiled into one `RegexSet`, so a lookup is
//! one pass over the path however many patterns the host has.

use std::sync::Arc;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::matching::PathKind;
use super::Route;

/// A host's patterns may take this much memory compiled (each, and the set).
const SIZE_LIMIT: usize = 8 << 20;
/// The deepest nesting of groups and repetitions (the regex crate's 250
/// still lets a crafted pattern overflow a stack while compiling).
const NEST_LIMIT: u32 = 32;

/// A path as an Ingress wrote it, noted while the table is built.
#[derive(Debug, Clone)]
pub struct Location {
    /// Where its route is kept in the host's exact and prefix rules.
    pub kind: PathKind,
    pub path: String,
    /// `pathType: Prefix` itself (not `ImplementationSpecific`): outside
    /// regex Ingresses, ingress-nginx writes it as two locations.
    pub prefix_type: bool,
    /// From an Ingress with `use-regex` or a `rewrite-target`.
    pub regex: bool,
}

/// A host in regex mode: its patterns in order, and their routes.
#[derive(Debug)]
pub struct RegexPaths {
    set: RegexSet,
    routes: Vec<Arc<Route>>,
}

impl RegexPaths {
    /// The route of the first pattern that matches.
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        let first = self.set.matches(path).into_iter().next()?;
        self.routes.get(first)
    }

    /// The patterns in the order they are tried, for the admin API.
    pub fn patterns(&self) -> &[String] {
        self.set.patterns()
    }

    /// Compiles a host's locations, each with its route. Paths that are no
    /// regular expression are left out, each with the reason.
    pub fn build(
        locations: &[(Location, Arc<Route>)],
    ) -> (Option<RegexPaths>, Vec<(Arc<Route>, String)>) {
        let mut written: Vec<(String, &Arc<Route>)> = Vec::new();
        for (location, route) in locations {
            for path in nginx_paths(location, locations) {
                written.push((path, route));
            }
        }
        // ingress-nginx sorts twice, stably: by path (descending), then by length.
        written.sort_by(|a, b| b.0.cmp(&a.0));
        written.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let mut patterns = Vec::new();
        let mut routes = Vec::new();
        let mut invalid = Vec::new();
        for (path, route) in written {
            let pattern = format!("(?i)^{path}");
            let checked = RegexBuilder::new(&pattern)
                .size_limit(SIZE_LIMIT)
                .nest_limit(NEST_LIMIT)
                .build();
            match checked {
                Ok(_) => {
                    patterns.push(pattern);
                    routes.push(route.clone());
                }
                Err(error) => invalid.push((
                    route.clone(),
                    format!("path {path:?} is not a regular expression ({error})"),
                )),
            }
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(SIZE_LIMIT)
            .nest_limit(NEST_LIMIT)
            .build();
        match set {
            Ok(set) => (Some(RegexPaths { set, routes }), invalid),
            Err(error) => {
                let why = format!("the host's paths together are too large to compile as regular expressions ({error})");
                invalid.extend(routes.into_iter().map(|route| (route, why.clone())));
                (None, invalid)
            }
        }
    }
}

/// The paths ingress-nginx writes for one location in regex mode
/// (`updateServerLocations`): a plain `Prefix` path becomes `/foo/` and,
/// unless an `Exact` rule has that path, `/foo`; every other path is itself.
fn nginx_paths(location: &Location, all: &[(Location, Arc<Route>)]) -> Vec<String> {
    let path = &location.path;
    if path == "/" || !location.prefix_type || location.regex {
        return vec![path.clone()];
    }
    let mut paths = vec![if path.ends_with('/') {
        path.clone()
    } else {
        format!("{path}/")
    }];
    let exact_exists = all
        .iter()
        .any(|(other, _)| other.kind == PathKind::Exact && other.path == *path);
    if !exact_exists {
        paths.push(path.clone());
    }
    paths
}
