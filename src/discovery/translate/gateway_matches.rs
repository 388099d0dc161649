//! An HTTPRoute rule's `matches`, compiled to where its routes go in a host
//! (path kind and path) and what else they ask of a request (method,
//! headers, query parameters: `routing::request_match`).
//!
//! A match sluice cannot express makes its rule skipped with a warning:
//! routing it more broadly would change what it means.

use http::{HeaderName, Method};
use regex::RegexBuilder;

use crate::discovery::gateway::{self, HttpRouteMatch};
use crate::routing::request_match::{RequestMatch, ValueMatch};
use crate::routing::{path_pattern, PathKind};

/// The spec's own bound on header and query matches per match.
const MAX_CONDITIONS: usize = 16;
/// Longest path, header or query value taken.
const MAX_VALUE: usize = 4096;
/// A pattern may take this much memory compiled.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The deepest nesting of groups and repetitions in a pattern.
const REGEX_NEST_LIMIT: u32 = 32;

/// One match: the path slot its routes take, and their conditions.
#[derive(Debug)]
pub(super) struct Compiled {
    pub(super) kind: PathKind,
    pub(super) path: String,
    pub(super) conditions: RequestMatch,
}

/// Why a match cannot be served: the warning's reason and text.
pub(super) type Refusal = (&'static str, String);

pub(super) fn compile(matched: &HttpRouteMatch) -> Result<Compiled, Refusal> {
    if let Some(name) = matched.other.keys().next() {
        return Err((
            "unsupported-match",
            format!("match field {name} is not served; rule skipped"),
        ));
    }
    let path = matched.path.clone().unwrap_or_default();
    let value = path.value.unwrap_or_else(|| "/".into());
    let kind = match path.kind.as_deref().unwrap_or("PathPrefix") {
        "PathPrefix" => PathKind::Prefix,
        "Exact" => PathKind::Exact,
        "RegularExpression" => PathKind::Regex,
        other => {
            return Err((
                "unsupported-match",
                format!("path match {other} is not served; rule skipped"),
            ))
        }
    };
    if kind == PathKind::Regex {
        path_pattern(&value)
            .map_err(|e| invalid(format!("{value:?} is not a regular expression: {e}")))?;
    } else if !value.starts_with('/') || value.contains(['?', '#']) || value.len() > MAX_VALUE {
        return Err((
            "invalid-path",
            format!("{value:?} is not a path; rule skipped"),
        ));
    }
    let mut conditions = RequestMatch::default();
    if let Some(method) = &matched.method {
        conditions.method = Some(method_of(method)?);
    }
    if matched.headers.len() > MAX_CONDITIONS || matched.query_params.len() > MAX_CONDITIONS {
        return Err((
            "invalid-match",
            format!("more than {MAX_CONDITIONS} header or query matches; rule skipped"),
        ));
    }
    for header in &matched.headers {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| invalid(format!("{:?} is not a header name", header.name)))?;
        // The first of equivalent names counts, as the spec says.
        if conditions.headers.iter().all(|(n, _)| *n != name) {
            conditions.headers.push((name, value_match(header)?));
        }
    }
    for query in &matched.query_params {
        if query.name.is_empty() || query.name.len() > MAX_VALUE {
            return Err(invalid(format!(
                "{:?} is not a query parameter name",
                query.name
            )));
        }
        if conditions.query.iter().all(|(n, _)| **n != *query.name) {
            conditions
                .query
                .push((query.name.as_str().into(), value_match(query)?));
        }
    }
    Ok(Compiled {
        kind,
        path: value,
        conditions,
    })
}

/// The methods the spec names; anything else is not a method it allows.
fn method_of(method: &str) -> Result<Method, Refusal> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    METHODS
        .contains(&method)
        .then(|| Method::from_bytes(method.as_bytes()).ok())
        .flatten()
        .ok_or_else(|| invalid(format!("{method:?} is not an HTTP method the spec allows")))
}

fn value_match(spec: &gateway::ValueMatch) -> Result<ValueMatch, Refusal> {
    if spec.value.len() > MAX_VALUE {
        return Err(invalid(format!(
            "the value for {:?} is longer than {MAX_VALUE} bytes",
            spec.name
        )));
    }
    match spec.kind.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(ValueMatch::Exact(spec.value.as_str().into())),
        // The whole value must match, as Envoy's and most implementations'
        // regex matches (the spec leaves the dialect to them: this is Rust's
        // `regex`, linear time).
        "RegularExpression" => RegexBuilder::new(&format!("^(?:{})$", spec.value))
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map(ValueMatch::Regex)
            .map_err(|e| invalid(format!("{:?} is not a regular expression: {e}", spec.value))),
        other => Err((
            "unsupported-match",
            format!("value match {other} is not served; rule skipped"),
        )),
    }
}

fn invalid(why: String) -> Refusal {
    ("invalid-match", format!("{why}; rule skipped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: Option<&str>, name: &str, value: &str) -> gateway::ValueMatch {
        gateway::ValueMatch {
            kind: kind.map(str::to_owned),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_match_compiles_to_its_slot_and_conditions() {
        let matched = HttpRouteMatch {
            headers: vec![
                value(None, "Version", "two"),
                value(None, "version", "three"),
                value(Some("RegularExpression"), "x-env", "can.*"),
            ],
            query_params: vec![value(None, "animal", "whale")],
            method: Some("POST".into()),
            ..HttpRouteMatch::default()
        };
        let compiled = compile(&matched).unwrap();
        assert_eq!(
            (compiled.kind, compiled.path.as_str()),
            (PathKind::Prefix, "/")
        );
        assert_eq!(
            compiled.conditions.describe(),
            "POST header:version=two header:x-env~^(?:can.*)$ query:animal=whale"
        );
    }

    #[test]
    fn what_cannot_be_served_is_refused_with_its_reason() {
        let cases = [
            HttpRouteMatch {
                method: Some("BREW".into()),
                ..HttpRouteMatch::default()
            },
            HttpRouteMatch {
                headers: vec![value(None, "bad name", "x")],
                ..HttpRouteMatch::default()
            },
            HttpRouteMatch {
                headers: vec![value(Some("RegularExpression"), "a", "(")],
                ..HttpRouteMatch::default()
            },
            HttpRouteMatch {
                // Nested deeper than the bound: refused, never a stack overflow.
                headers: vec![value(Some("RegularExpression"), "a", &"(".repeat(5000))],
                ..HttpRouteMatch::default()
            },
            HttpRouteMatch {
                query_params: vec![value(None, "", "x")],
                ..HttpRouteMatch::default()
            },
            HttpRouteMatch {
                headers: (0..17)
                    .map(|i| value(None, &format!("h{i}"), "x"))
                    .collect(),
                ..HttpRouteMatch::default()
            },
        ];
        for case in cases {
            let (reason, _) = compile(&case).unwrap_err();
            assert_eq!(reason, "invalid-match", "{case:?}");
        }
        let suffix = HttpRouteMatch {
            headers: vec![value(Some("Suffix"), "a", "b")],
            ..HttpRouteMatch::default()
        };
        assert_eq!(compile(&suffix).unwrap_err().0, "unsupported-match");
    }
}
