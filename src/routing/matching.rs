//! Path matching within one host, with Ingress v1 semantics.
//!
//! * `Exact`: case-sensitive, byte for byte (`/foo` does not match `/foo/`).
//! * `Prefix` (and `ImplementationSpecific`): element-wise on `/`, so `/aaa` matches
//!   `/aaa/ccc` but not `/aaaccc`; a trailing slash in rule or request is ignored.
//! * The longest matching path wins; `Exact` beats `Prefix` for the same path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::regex_paths::{Location, RegexPaths};
use super::{IngressRef, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    Exact,
    Prefix,
}

/// The routes of one host (or of the wildcard or any-host bucket).
#[derive(Debug, Default)]
pub struct HostRoutes {
    exact: HashMap<Box<str>, Arc<Route>>,
    /// Normalized prefixes (no trailing slash, `/` kept), longest first.
    prefixes: Vec<(Box<str>, Arc<Route>)>,
    /// The Ingress `defaultBackend` for this host: requests that match no path.
    default: Option<Arc<Route>>,
    /// The paths as written, noted while the table is built (`finish`).
    locations: Vec<Location>,
    /// ingress-nginx's regex mode, when an Ingress of the host asks for it:
    /// then only these patterns decide.
    regex: Option<RegexPaths>,
    /// `app-root`: a request for `/` gets this route (a 302 to the app's
    /// root) before any path is matched, as nginx's server-level `if`.
    root_redirect: Option<Arc<Route>>,
}

/// What putting a host in regex mode did.
#[derive(Debug, Default)]
pub struct RegexMode {
    /// The Ingresses that asked for it (`use-regex`, `rewrite-target`).
    pub by: BTreeSet<IngressRef>,
    /// The host's other Ingresses, whose paths it changed.
    pub affected: BTreeSet<IngressRef>,
    /// The paths left out, each with its route and the reason.
    pub invalid: Vec<(Arc<Route>, String)>,
}

impl HostRoutes {
    /// Adds a path. When the same rule exists, changes nothing and returns the
    /// route that holds it (the first inserted wins, so insert oldest first).
    pub fn insert(
        &mut self,
        kind: PathKind,
        path: &str,
        route: Arc<Route>,
    ) -> Result<(), Arc<Route>> {
        match kind {
            PathKind::Exact => {
                if let Some(existing) = self.exact.get(path) {
                    return Err(existing.clone());
                }
                self.exact.insert(path.into(), route);
            }
            PathKind::Prefix => {
                let path = normalize_prefix(path);
                if let Some((_, existing)) = self.prefixes.iter().find(|(p, _)| &**p == path) {
                    return Err(existing.clone());
                }
                // Keep longest first so the first hit is the longest match.
                let at = self
                    .prefixes
                    .partition_point(|(p, _)| p.len() >= path.len());
                self.prefixes.insert(at, (path.into(), route));
            }
        }
        Ok(())
    }

    /// Sets the host's default route, unless one is set: then returns that one.
    pub fn set_default(&mut self, route: Arc<Route>) -> Result<(), Arc<Route>> {
        if let Some(existing) = &self.default {
            return Err(existing.clone());
        }
        self.default = Some(route);
        Ok(())
    }

    /// The route at exactly this rule, if any, to replace (a canary joins it).
    pub fn route_at_mut(&mut self, kind: PathKind, path: &str) -> Option<&mut Arc<Route>> {
        match kind {
            PathKind::Exact => self.exact.get_mut(path),
            PathKind::Prefix => {
                let path = normalize_prefix(path);
                self.prefixes
                    .iter_mut()
                    .find(|(p, _)| &**p == path)
                    .map(|(_, r)| r)
            }
        }
    }

    pub fn default_route(&self) -> Option<&Arc<Route>> {
        self.default.as_ref()
    }

    pub fn route_count(&self) -> usize {
        self.exact.len() + self.prefixes.len() + self.default.is_some() as usize
    }

    /// Notes a path as its Ingress wrote it, once `insert` took it.
    pub fn note(&mut self, location: Location) {
        self.locations.push(location);
    }

    /// Ends the build: a host that an Ingress put in regex mode gets its
    /// patterns compiled, with the routes as they are now (a canary joined).
    pub fn finish(&mut self) -> RegexMode {
        let locations = std::mem::take(&mut self.locations);
        if !locations.iter().any(|l| l.regex) {
            return RegexMode::default();
        }
        let routed: Vec<(Location, Arc<Route>)> = locations
            .into_iter()
            .filter_map(|l| {
                let route = self.route_at(l.kind, &l.path)?.clone();
                Some((l, route))
            })
            .collect();
        let mut mode = RegexMode::default();
        for (location, route) in &routed {
            let ingress = route.ingress.clone();
            match location.regex {
                true => mode.by.insert(ingress),
                false => mode.affected.insert(ingress),
            };
        }
        mode.affected.retain(|i| !mode.by.contains(i));
        let (regex, invalid) = RegexPaths::build(&routed);
        self.regex = regex;
        mode.invalid = invalid;
        mode
    }

    /// The patterns of a host in regex mode, in the order they are tried.
    pub fn regex_patterns(&self) -> Option<&[String]> {
        self.regex.as_ref().map(RegexPaths::patterns)
    }

    fn route_at(&self, kind: PathKind, path: &str) -> Option<&Arc<Route>> {
        match kind {
            PathKind::Exact => self.exact.get(path),
            PathKind::Prefix => {
                let path = normalize_prefix(path);
                self.prefixes
                    .iter()
                    .find(|(p, _)| &**p == path)
                    .map(|(_, r)| r)
            }
        }
    }

    /// Sets the host's `app-root` redirect, unless one is set (the oldest
    /// Ingress's wins).
    pub fn set_root_redirect(&mut self, route: Arc<Route>) {
        self.root_redirect.get_or_insert(route);
    }

    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(redirect) = &self.root_redirect {
            if path == "/" {
                return Some(redirect);
            }
        }
        if let Some(regex) = &self.regex {
            return regex.route(path).or(self.default.as_ref());
        }
        // A matching Exact rule is exactly as long as the request path, so it can never
        // lose to a Prefix: checking it first implements both tie-break rules.
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, route)| route)
            .or(self.default.as_ref())
    }

    /// Every path route with its kind and path, for the admin API and tests.
    pub fn iter(&self) -> impl Iterator<Item = (PathKind, &str, &Arc<Route>)> {
        let exact = self.exact.iter().map(|(p, r)| (PathKind::Exact, &**p, r));
        let prefix = self
            .prefixes
            .iter()
            .map(|(p, r)| (PathKind::Prefix, &**p, r));
        exact.chain(prefix)
    }
}

/// `/foo/` -> `/foo`; `/` stays `/`.
pub fn normalize_prefix(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// Element-wise prefix match of a normalized prefix against a request path.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}
