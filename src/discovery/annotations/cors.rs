//! `enable-cors` and the `cors-*` keys, checked as ingress-nginx checks
//! them: an origin, method list or header list it would skip or replace by
//! its default is skipped or replaced here too, with a warning.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{lookup, parse_bool, Notice};
use crate::policy::cors::{Cors, CorsSpec, DEFAULT_HEADERS, DEFAULT_MAX_AGE, DEFAULT_METHODS};

/// ingress-nginx's `corsOriginRegex`: `scheme://[*.]host[:port]`, or `null`.
fn valid_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let rest = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = rest.split_once(':').unwrap_or((rest, "0"));
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_lowercase())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn parse_cors(
    annotations: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> Option<Arc<Cors>> {
    let mut notice = |key: &str, message: String| {
        notices.push(Notice {
            key: key.to_owned(),
            reason: "annotation-differs",
            message: format!("{key}: {message}"),
        })
    };
    let (key, enabled) = lookup(annotations, "enable-cors")?;
    match parse_bool(enabled) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(_) => {
            notice(
                key,
                format!("{enabled:?} is not true or false; CORS stays off, as in ingress-nginx"),
            );
            return None;
        }
    }
    let origins = lookup(annotations, "cors-allow-origin").map(|(key, list)| {
        let mut origins = Vec::new();
        for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if origin == "*" {
                return None;
            }
            if valid_origin(origin) {
                origins.push(origin);
            } else {
                notice(key, format!("{origin:?} is not an origin (scheme://host[:port]); skipped, as in ingress-nginx"));
            }
        }
        Some(origins)
    });
    let mut checked = |name: &str, valid: fn(u8) -> bool, default: &'static str| -> &str {
        match lookup(annotations, name) {
            Some((_, value)) if !value.trim().is_empty() && value.bytes().all(valid) => {
                value.trim()
            }
            Some((key, value)) => {
                notice(
                    key,
                    format!("{value:?} is not a list ingress-nginx accepts; its default applies"),
                );
                default
            }
            None => default,
        }
    };
    let methods = checked(
        "cors-allow-methods",
        |b| b.is_ascii_alphabetic() || b == b',' || b == b' ',
        DEFAULT_METHODS,
    );
    let allow_headers = checked(
        "cors-allow-headers",
        |b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b),
        DEFAULT_HEADERS,
    );
    let expose_headers = checked(
        "cors-expose-headers",
        |b| b.is_ascii_alphanumeric() || b"-_,* ".contains(&b),
        "",
    );
    let credentials = match lookup(annotations, "cors-allow-credentials") {
        None => true,
        Some((key, value)) => parse_bool(value).unwrap_or_else(|_| {
            notice(
                key,
                format!("{value:?} is not true or false; true applies, as in ingress-nginx"),
            );
            true
        }),
    };
    let max_age = match lookup(annotations, "cors-max-age") {
        None => DEFAULT_MAX_AGE,
        Some((key, value)) => value.trim().parse().unwrap_or_else(|_| {
            notice(
                key,
                format!("{value:?} is not a number of seconds; {DEFAULT_MAX_AGE} applies"),
            );
            DEFAULT_MAX_AGE
        }),
    };
    let spec = CorsSpec {
        origins: origins.flatten(),
        methods,
        allow_headers,
        expose_headers,
        credentials,
        max_age,
    };
    match Cors::new(&spec) {
        Ok(cors) => Some(Arc::new(cors)),
        Err(error) => {
            notice(key, format!("{error}; CORS stays off"));
            None
        }
    }
}
