//! Redirects and host names, as ingress-nginx's `redirect` and `alias`
//! annotations: `temporal-redirect` (it wins) or `permanent-redirect`, each
//! with its code, become nginx's `return CODE URL;` after the configuration
//! snippet; `from-to-www-redirect` and `server-alias` add host names
//! (`translate` adds them where no Ingress routes them).

use std::collections::BTreeMap;

use http::StatusCode;

use super::{invalid_at, lookup, parse_bool, AnnotationError};
use crate::routing::edits::{HeaderEdit, Step, Template};

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

/// `proxy-redirect-from` / `proxy-redirect-to`: nginx's `proxy_redirect
/// FROM TO` on the pods' `Location` and `Refresh` headers. `off` (the
/// default) and `default` change nothing: sluice's upstream has no name of
/// its own to replace.
pub fn parse_proxy_redirect(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Step>, AnnotationError> {
    let Some((_, from)) = lookup(annotations, "proxy-redirect-from") else {
        return Ok(None);
    };
    let from = from.trim();
    let to = lookup(annotations, "proxy-redirect-to").map_or(("", "off"), |(k, v)| (k, v.trim()));
    if matches!(from, "off" | "default" | "") || to.1 == "off" {
        return Ok(None);
    }
    let template = Template::parse(to.1).map_err(|e| invalid_at(to.0, e))?;
    Ok(Some(Step::ResponseHeader {
        edit: HeaderEdit::RedirectPrefix(from.to_owned(), template),
        always: true,
    }))
}

/// `proxy-cookie-domain` / `proxy-cookie-path`: `FROM TO` (`off`, the
/// default, changes nothing), as nginx's `proxy_cookie_domain` / `_path`.
pub fn parse_proxy_cookie(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<Step>, AnnotationError> {
    let mut steps = Vec::new();
    for (name, path) in [("proxy-cookie-domain", false), ("proxy-cookie-path", true)] {
        let Some((key, value)) = lookup(annotations, name) else {
            continue;
        };
        let value = value.trim();
        if value == "off" {
            continue;
        }
        let Some((from, to)) = value.split_once(char::is_whitespace) else {
            return Err(invalid_at(
                key,
                format!("{value:?}: expected FROM TO, or off"),
            ));
        };
        let (from, to) = (from.trim(), to.trim());
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        };
        if !token(from) || !token(to) {
            return Err(invalid_at(key, format!("{value:?}: expected FROM TO")));
        }
        steps.push(Step::ResponseHeader {
            edit: HeaderEdit::CookieAttribute {
                path,
                from: from.to_owned(),
                to: to.to_owned(),
            },
            always: true,
        });
    }
    Ok(steps)
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
