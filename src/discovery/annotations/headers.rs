//! sluice's own header rules, `sluice.io/request-headers` and
//! `sluice.io/response-headers`: one change a line, as Gateway API's
//! `RequestHeaderModifier` and `ResponseHeaderModifier` have them:
//!
//! ```text
//! set X-Env: production
//! add Vary: Accept-Encoding
//! remove X-Debug
//! ```
//!
//! Values may use nginx's `$variables`. They compile to the same edits as
//! the snippets (after them), and response changes apply to every answer.

use std::collections::BTreeMap;

use super::snippets::header_name;
use super::{invalid_at, AnnotationError, SLUICE_PREFIX};
use crate::routing::edits::{HeaderEdit, Step, Template};

/// The keys, under `sluice.io/` only.
pub const HEADER_KEYS: &[&str] = &["request-headers", "response-headers"];

/// Most changes one annotation may make.
const MAX_LINES: usize = 64;

/// The steps of both annotations, request changes first.
pub fn parse_header_rules(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<Step>, AnnotationError> {
    let mut steps = Vec::new();
    for name in HEADER_KEYS {
        let key = format!("{SLUICE_PREFIX}{name}");
        let Some(text) = annotations.get(&key) else {
            continue;
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.len() > MAX_LINES {
            return Err(invalid_at(&key, format!("more than {MAX_LINES} changes")));
        }
        for line in lines {
            let edit =
                parse_line(line).map_err(|why| invalid_at(&key, format!("{line:?}: {why}")))?;
            steps.push(match *name {
                "request-headers" => Step::RequestHeader(edit),
                _ => Step::ResponseHeader { edit, always: true },
            });
        }
    }
    Ok(steps)
}

fn parse_line(line: &str) -> Result<HeaderEdit, String> {
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match verb {
        "remove" => Ok(HeaderEdit::Remove(header_name(rest)?)),
        "set" | "add" => {
            let (name, value) = rest.split_once(':').ok_or("expected NAME: VALUE")?;
            let name = header_name(name)?;
            let value = Template::parse(value.trim())?;
            Ok(if verb == "set" {
                HeaderEdit::Set(name, value)
            } else {
                HeaderEdit::Add(name, value)
            })
        }
        other => Err(format!("{other:?}: expected set, add or remove")),
    }
}

/// `custom-headers`: `namespace/name` (or `name`, in the Ingress's own
/// namespace) of a ConfigMap of response headers; `None` for the
/// namespace means the Ingress's.
pub fn parse_custom_headers(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<(Option<String>, String)>, AnnotationError> {
    let Some((key, value)) = super::lookup(annotations, "custom-headers") else {
        return Ok(None);
    };
    config_map_ref(value)
        .map(Some)
        .map_err(|message| invalid_at(key, message))
}

/// `namespace/name` or `name` of a ConfigMap.
pub(super) fn config_map_ref(value: &str) -> Result<(Option<String>, String), String> {
    let value = value.trim();
    let (namespace, name) = match value.split_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, value),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !valid(name) || namespace.is_some_and(|ns| !valid(ns)) {
        return Err(format!("{value:?}: expected namespace/name of a ConfigMap"));
    }
    Ok((namespace.map(str::to_owned), name.to_owned()))
}

/// The ConfigMaps an Ingress names (`custom-headers`,
/// `auth-proxy-set-headers`), as (namespace, name): a change to one of
/// them rebuilds the table.
pub fn config_maps_of(
    ingress: &k8s_openapi::api::networking::v1::Ingress,
) -> Vec<(String, String)> {
    let Some(annotations) = ingress.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    let own = ingress.metadata.namespace.as_deref().unwrap_or("default");
    ["custom-headers", "auth-proxy-set-headers"]
        .iter()
        .filter_map(|key| config_map_ref(super::lookup(annotations, key)?.1).ok())
        .map(|(namespace, name)| (namespace.unwrap_or_else(|| own.to_owned()), name))
        .collect()
}
