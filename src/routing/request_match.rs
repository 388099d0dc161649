//! What a route may ask of a request beyond its host and path: Gateway API's
//! method, header and query parameter matches.
//!
//! A path slot of a host keeps its guarded routes most specific first, in
//! the spec's precedence (a method match, then more header matches, then
//! more query matches; among equals the older route and its earlier rule),
//! so the first whose conditions hold wins, and a slot where none holds
//! leaves the request to the next shorter path (`matching`).

use std::borrow::Cow;
use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// How a header or query parameter value must look.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Byte for byte.
    Exact(Box<str>),
    /// The whole value matches the pattern (anchored at both ends).
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(want) => want.as_bytes() == value,
            ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        }
    }

    fn same(&self, other: &ValueMatch) -> bool {
        match (self, other) {
            (ValueMatch::Exact(a), ValueMatch::Exact(b)) => a == b,
            (ValueMatch::Regex(a), ValueMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }

    /// As the admin API shows it.
    pub fn describe(&self) -> String {
        match self {
            ValueMatch::Exact(v) => format!("={v}"),
            ValueMatch::Regex(re) => format!("~{}", re.as_str()),
        }
    }
}

/// The conditions of one Gateway API match besides its path. All must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub method: Option<Method>,
    /// Names lowercased (`HeaderName`); each name once, the first kept.
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Names as written (query names are case-sensitive); each once.
    pub query: Vec<(Box<str>, ValueMatch)>,
}

/// The parts of a request a `RequestMatch` reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

impl RequestFacts<'static> {
    /// A `GET` without headers or query: what a lookup by host and path
    /// alone means.
    pub fn bare() -> RequestFacts<'static> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        RequestFacts {
            method: &Method::GET,
            headers: EMPTY.get_or_init(HeaderMap::new),
            query: None,
        }
    }
}

impl RequestMatch {
    pub fn is_empty(&self) -> bool {
        self.method.is_none() && self.headers.is_empty() && self.query.is_empty()
    }

    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != request.method) {
            return false;
        }
        let headers = self.headers.iter().all(|(name, want)| {
            // A repeated header matches when any of its lines does.
            request
                .headers
                .get_all(name)
                .iter()
                .any(|v| want.matches(v.as_bytes()))
        });
        headers
            && self.query.iter().all(|(name, want)| {
                // A repeated parameter is judged by its first value: the spec
                // leaves it open, and the first is what most servers read.
                query_value(request.query, name).is_some_and(|v| want.matches(v.as_bytes()))
            })
    }

    /// The spec's precedence among matches of one path: smaller sorts first.
    pub fn rank(&self) -> impl Ord {
        (
            Reverse(self.method.is_some()),
            Reverse(self.headers.len()),
            Reverse(self.query.len()),
        )
    }

    /// The same conditions: a later route with them is never reached.
    pub fn same(&self, other: &RequestMatch) -> bool {
        let pairs = |a: &[(HeaderName, ValueMatch)], b: &[(HeaderName, ValueMatch)]| {
            a.len() == b.len()
                && a.iter()
                    .all(|(n, v)| b.iter().any(|(m, w)| n == m && v.same(w)))
        };
        let queries = |a: &[(Box<str>, ValueMatch)], b: &[(Box<str>, ValueMatch)]| {
            a.len() == b.len()
                && a.iter()
                    .all(|(n, v)| b.iter().any(|(m, w)| n == m && v.same(w)))
        };
        self.method == other.method
            && pairs(&self.headers, &other.headers)
            && queries(&self.query, &other.query)
    }

    /// As the admin API shows it: `GET header:x-a=1 query:q~b.*`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(method) = &self.method {
            parts.push(method.to_string());
        }
        for (name, value) in &self.headers {
            parts.push(format!("header:{name}{}", value.describe()));
        }
        for (name, value) in &self.query {
            parts.push(format!("query:{name}{}", value.describe()));
        }
        parts.join(" ")
    }
}

/// The first value of a query parameter, percent-decoded (names too), or
/// `None` when it is absent or does not decode. Borrowed from the query
/// unless it has escapes: no allocation per request for plain values.
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key)? == name).then(|| percent_decode(value))?
    })
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(method: &'a Method, headers: &'a HeaderMap, query: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            method,
            headers,
            query: Some(query),
        }
    }

    #[test]
    fn conditions_all_hold() {
        let m = RequestMatch {
            method: Some(Method::POST),
            headers: vec![(
                HeaderName::from_static("version"),
                ValueMatch::Exact("two".into()),
            )],
            query: vec![("animal".into(), ValueMatch::Exact("whale".into()))],
        };
        let mut headers = HeaderMap::new();
        headers.insert("version", "two".parse().unwrap());
        assert!(m.matches(&facts(&Method::POST, &headers, "color=blue&animal=whale")));
        assert!(m.matches(&facts(&Method::POST, &headers, "animal=wh%61le")));
        assert!(!m.matches(&facts(&Method::GET, &headers, "animal=whale")));
        assert!(!m.matches(&facts(&Method::POST, &headers, "ANIMAL=whale")));
        assert!(!m.matches(&facts(&Method::POST, &headers, "animal=Whale")));
        // The first value decides.
        assert!(!m.matches(&facts(
            &Method::POST,
            &headers,
            "animal=dolphin&animal=whale"
        )));
        assert!(!m.matches(&facts(&Method::POST, &HeaderMap::new(), "animal=whale")));
        headers.insert("version", "Two".parse().unwrap());
        assert!(!m.matches(&facts(&Method::POST, &headers, "animal=whale")));
        // Bad escapes never match, and never panic.
        for q in ["animal=%", "animal=%zz", "%ff=whale", "animal=%e2%82"] {
            assert!(!m.matches(&facts(&Method::POST, &headers, q)), "{q}");
        }
    }

    #[test]
    fn repeated_headers_match_by_any_line_and_regexes_by_the_whole_value() {
        let m = RequestMatch {
            headers: vec![(
                HeaderName::from_static("x-env"),
                ValueMatch::Regex(Regex::new("^(?:canary|beta)$").unwrap()),
            )],
            ..RequestMatch::default()
        };
        let mut headers = HeaderMap::new();
        headers.append("x-env", "prod".parse().unwrap());
        headers.append("x-env", "beta".parse().unwrap());
        assert!(m.matches(&facts(&Method::GET, &headers, "")));
        let mut headers = HeaderMap::new();
        headers.append("x-env", "betamax".parse().unwrap());
        assert!(!m.matches(&facts(&Method::GET, &headers, "")));
    }

    #[test]
    fn precedence_is_method_then_headers_then_query() {
        let exact = |v: &str| ValueMatch::Exact(v.into());
        let one_header = RequestMatch {
            headers: vec![(HeaderName::from_static("a"), exact("1"))],
            ..RequestMatch::default()
        };
        let two_queries = RequestMatch {
            query: vec![("a".into(), exact("1")), ("b".into(), exact("2"))],
            ..RequestMatch::default()
        };
        let method = RequestMatch {
            method: Some(Method::GET),
            ..RequestMatch::default()
        };
        let mut all = [&two_queries, &RequestMatch::default(), &one_header, &method];
        all.sort_by_key(|m| m.rank());
        let order: Vec<String> = all.iter().map(|m| m.describe()).collect();
        assert_eq!(order, ["GET", "header:a=1", "query:a=1 query:b=2", ""]);
        assert!(two_queries.same(&RequestMatch {
            query: vec![("b".into(), exact("2")), ("a".into(), exact("1"))],
            ..RequestMatch::default()
        }));
        assert!(!two_queries.same(&one_header));
    }
}
