//! Path matching within one host, with Ingress v1 semantics.
//!
//! * `Exact`: case-sensitive, byte for byte (`/foo` does not match `/foo/`).
//! * `Prefix` (and `ImplementationSpecific`): element-wise on `/`, so `/aaa` matches
//!   `/aaa/ccc` but not `/aaaccc`; a trailing slash in rule or request is ignored.
//! * The longest matching path wins; `Exact` beats `Prefix` for the same path.
//! * Gateway API adds `RegularExpression` paths (after `Exact`, before
//!   prefixes) and routes with conditions on method, headers and query
//!   (`request_match`): each path is a `Slot` whose guarded routes are tried
//!   most specific first, and a slot where none holds leaves the request to
//!   the next path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::regex_paths::{Location, RegexPaths};
use super::request_match::{RequestFacts, RequestMatch};
use super::{IngressRef, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    Exact,
    Prefix,
    /// Gateway API's `RegularExpression`: the whole path matches the
    /// pattern (`path_pattern`). Tried after `Exact` paths and before
    /// prefixes, oldest route first (the spec leaves their precedence to
    /// implementations).
    Regex,
}

/// The longest pattern taken, and what it may take compiled.
const PATTERN_LIMIT: usize = 1024;
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A Gateway API path pattern, anchored at both ends, bounded in size and
/// nesting (Rust's `regex`: linear time whatever the pattern).
pub fn path_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > PATTERN_LIMIT {
        return Err(format!("longer than {PATTERN_LIMIT} bytes"));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .nest_limit(32)
        .build()
        .map_err(|e| e.to_string())
}

/// The routes at one path of a host.
#[derive(Debug, Default)]
struct Slot {
    /// Routes with conditions (Gateway API matches), most specific first.
    guarded: Vec<(RequestMatch, Arc<Route>)>,
    /// The route without conditions: an Ingress path, or a match of path only.
    plain: Option<Arc<Route>>,
}

impl Slot {
    fn pick(&self, request: &RequestFacts<'_>) -> Option<&Arc<Route>> {
        // The Ingress case, one branch: no conditions to check.
        if self.guarded.is_empty() {
            return self.plain.as_ref();
        }
        self.guarded
            .iter()
            .find(|(conditions, _)| conditions.matches(request))
            .map(|(_, route)| route)
            .or(self.plain.as_ref())
    }

    /// Adds a route, unless one with the same conditions holds the slot:
    /// then returns that one.
    fn insert(&mut self, conditions: RequestMatch, route: Arc<Route>) -> Result<(), Arc<Route>> {
        if conditions.is_empty() {
            if let Some(existing) = &self.plain {
                return Err(existing.clone());
            }
            self.plain = Some(route);
            return Ok(());
        }
        if let Some((_, existing)) = self.guarded.iter().find(|(c, _)| c.same(&conditions)) {
            return Err(existing.clone());
        }
        // After every route that ranks as high: older routes, earlier rules.
        let rank = conditions.rank();
        let at = self.guarded.partition_point(|(c, _)| c.rank() <= rank);
        self.guarded.insert(at, (conditions, route));
        Ok(())
    }

    fn routes(&self) -> impl Iterator<Item = (Option<&RequestMatch>, &Arc<Route>)> {
        let guarded = self.guarded.iter().map(|(c, r)| (Some(c), r));
        guarded.chain(self.plain.iter().map(|r| (None, r)))
    }
}

/// The routes of one host (or of the wildcard or any-host bucket).
#[derive(Debug, Default)]
pub struct HostRoutes {
    exact: HashMap<Box<str>, Slot>,
    /// Normalized prefixes (no trailing slash, `/` kept), longest first.
    prefixes: Vec<(Box<str>, Slot)>,
    /// Gateway API path patterns (as written, compiled), in the order
    /// they were added.
    patterns: Vec<(Box<str>, regex::Regex, Slot)>,
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
        self.insert_guarded(kind, path, RequestMatch::default(), route)
    }

    /// Adds a path whose route also asks for method, headers or query
    /// parameters; as `insert` when the same conditions are there already.
    pub fn insert_guarded(
        &mut self,
        kind: PathKind,
        path: &str,
        conditions: RequestMatch,
        route: Arc<Route>,
    ) -> Result<(), Arc<Route>> {
        match kind {
            PathKind::Exact => self
                .exact
                .entry(path.into())
                .or_default()
                .insert(conditions, route),
            PathKind::Prefix => {
                let path = normalize_prefix(path);
                if let Some((_, slot)) = self.prefixes.iter_mut().find(|(p, _)| &**p == path) {
                    return slot.insert(conditions, route);
                }
                let mut slot = Slot::default();
                slot.insert(conditions, route)?;
                // Keep longest first so the first hit is the longest match.
                let at = self
                    .prefixes
                    .partition_point(|(p, _)| p.len() >= path.len());
                self.prefixes.insert(at, (path.into(), slot));
                Ok(())
            }
            PathKind::Regex => {
                if let Some((.., slot)) = self.patterns.iter_mut().find(|(p, ..)| &**p == path) {
                    return slot.insert(conditions, route);
                }
                // The translator checked the pattern and warned of a bad one.
                let Ok(pattern) = path_pattern(path) else {
                    return Ok(());
                };
                let mut slot = Slot::default();
                slot.insert(conditions, route)?;
                self.patterns.push((path.into(), pattern, slot));
                Ok(())
            }
        }
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
        let slot = match kind {
            PathKind::Exact => self.exact.get_mut(path),
            PathKind::Prefix => {
                let path = normalize_prefix(path);
                self.prefixes
                    .iter_mut()
                    .find(|(p, _)| &**p == path)
                    .map(|(_, slot)| slot)
            }
            PathKind::Regex => (self.patterns.iter_mut())
                .find(|(p, ..)| &**p == path)
                .map(|(.., slot)| slot),
        };
        slot?.plain.as_mut()
    }

    pub fn default_route(&self) -> Option<&Arc<Route>> {
        self.default.as_ref()
    }

    pub fn route_count(&self) -> usize {
        let count = |slot: &Slot| slot.guarded.len() + slot.plain.is_some() as usize;
        let paths: usize = self.exact.values().map(count).sum::<usize>()
            + self.prefixes.iter().map(|(_, s)| count(s)).sum::<usize>()
            + self.patterns.iter().map(|(.., s)| count(s)).sum::<usize>();
        paths + self.default.is_some() as usize
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
        let (regex, mut invalid) = RegexPaths::build(&routed);
        self.regex = regex;
        // The patterns decide alone, so conditions would be lost: say so.
        let guarded = self
            .exact
            .values()
            .chain(self.prefixes.iter().map(|(_, s)| s));
        for (_, route) in guarded.flat_map(|s| s.guarded.iter()) {
            let why = "its method, header or query match is not served on a host that an Ingress put in regex mode (use-regex, rewrite-target)";
            invalid.push((route.clone(), why.to_owned()));
        }
        for (_, route) in self.patterns.iter().flat_map(|(.., s)| s.routes()) {
            let why = "its RegularExpression path is not served on a host that an Ingress put in regex mode (use-regex, rewrite-target)";
            invalid.push((route.clone(), why.to_owned()));
        }
        mode.invalid = invalid;
        mode
    }

    /// The patterns of a host in regex mode, in the order they are tried.
    pub fn regex_patterns(&self) -> Option<&[String]> {
        self.regex.as_ref().map(RegexPaths::patterns)
    }

    fn route_at(&self, kind: PathKind, path: &str) -> Option<&Arc<Route>> {
        let slot = match kind {
            PathKind::Exact => self.exact.get(path),
            PathKind::Prefix => {
                let path = normalize_prefix(path);
                self.prefixes
                    .iter()
                    .find(|(p, _)| &**p == path)
                    .map(|(_, slot)| slot)
            }
            PathKind::Regex => (self.patterns.iter())
                .find(|(p, ..)| &**p == path)
                .map(|(.., slot)| slot),
        };
        slot?.plain.as_ref()
    }

    /// Sets the host's `app-root` redirect, unless one is set (the oldest
    /// Ingress's wins).
    pub fn set_root_redirect(&mut self, route: Arc<Route>) {
        self.root_redirect.get_or_insert(route);
    }

    /// The route of a request's path, for a `GET` without headers: what a
    /// lookup by path alone means (tests, the admin API).
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.route_for(path, &RequestFacts::bare())
    }

    /// The route of a request: its path first, then (where routes at that
    /// path have conditions) its method, headers and query.
    pub fn route_for(&self, path: &str, request: &RequestFacts<'_>) -> Option<&Arc<Route>> {
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
        // A path whose routes all have conditions the request does not meet
        // leaves it to the next shorter path, as the Gateway API asks.
        if let Some(route) = self.exact.get(path).and_then(|s| s.pick(request)) {
            return Some(route);
        }
        if !self.patterns.is_empty() {
            let matching = self.patterns.iter().filter(|(_, p, _)| p.is_match(path));
            if let Some(route) = matching
                .into_iter()
                .find_map(|(.., slot)| slot.pick(request))
            {
                return Some(route);
            }
        }
        self.prefixes
            .iter()
            .filter(|(prefix, _)| prefix_matches(prefix, path))
            .find_map(|(_, slot)| slot.pick(request))
            .or(self.default.as_ref())
    }

    /// Every path route with its kind, path and conditions, for the admin API
    /// and tests.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = (PathKind, &str, Option<&RequestMatch>, &Arc<Route>)> {
        let exact = self.exact.iter().flat_map(|(p, slot)| {
            slot.routes()
                .map(move |(c, r)| (PathKind::Exact, &**p, c, r))
        });
        let prefix = self.prefixes.iter().flat_map(|(p, slot)| {
            slot.routes()
                .map(move |(c, r)| (PathKind::Prefix, &**p, c, r))
        });
        let patterns = self.patterns.iter().flat_map(|(p, _, slot)| {
            slot.routes()
                .map(move |(c, r)| (PathKind::Regex, &**p, c, r))
        });
        exact.chain(prefix).chain(patterns)
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
