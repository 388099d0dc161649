//! Redirects and host names, as ingress-nginx's `redirect` and `alias`
//! annotations: `temporal-redirect` (it wins) or `permanent-redirect`, each
//! with its code, become nginx's `return CODE URL;` after the configuration
//! snippet; `from-to-www-redirect` and `server-alias` add host names
//! (`translate` adds them where no Ingress routes them).

use std::collections::BTreeMap;

use http::StatusCode;

use super::{invalid_at, lookup, parse_bool, AnnotationError};
use crate::routing::edits::{Step, Template};

/// Most aliases one Ingress may add.
const MAX_ALIASES: usize = 32;

/// `temporal-redirect` / `permanent-redirect`: the step that answers.
pub fn parse_redirect(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Step>, AnnotationError> {
    let (name, default, highest) = if lookup(annotations, "temporal-redirect").is_some() {
        ("temporal-redirect", 302, 307)
    } else {
        ("permanent-redirect", 301, 308)
    };
    let Some((key, url)) = lookup(annotations, name) else {
        return Ok(None);
    };
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid_at(
            key,
            format!("{url:?}: only http and https URLs"),
        ));
    }
    let text = Template::parse(url).map_err(|e| invalid_at(key, e))?;
    // A code out of range is the default, as ingress-nginx.
    let code = lookup(annotations, &format!("{name}-code"))
        .and_then(|(_, code)| code.trim().parse::<u16>().ok())
        .filter(|code| (300..=highest).contains(code))
        .unwrap_or(default);
    let status = StatusCode::from_u16(code).map_err(|e| invalid_at(key, e.to_string()))?;
    Ok(Some(Step::Return {
        status,
        text: Some(text),
    }))
}

/// `from-to-www-redirect: "true"`.
pub fn parse_from_to_www(annotations: &BTreeMap<String, String>) -> Result<bool, AnnotationError> {
    match lookup(annotations, "from-to-www-redirect") {
        Some((key, value)) => parse_bool(value).map_err(|e| invalid_at(key, e)),
        None => Ok(false),
    }
}

/// `server-alias`: more host names for the Ingress's rules, comma-separated.
pub fn parse_aliases(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<String>, AnnotationError> {
    let Some((key, value)) = lookup(annotations, "server-alias") else {
        return Ok(Vec::new());
    };
    let aliases: Vec<String> = value
        .split(',')
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .collect();
    if aliases.len() > MAX_ALIASES {
        return Err(invalid_at(key, format!("more than {MAX_ALIASES} aliases")));
    }
    Ok(aliases)
}
