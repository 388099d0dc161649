//! `affinity: cookie` and its `session-cookie-*` keys, with ingress-nginx's
//! names, defaults and accepted values (`internal/ingress/annotations/
//! sessionaffinity`); the behaviour is `policy::affinity`.

use std::collections::BTreeMap;

use super::{invalid_at, lookup, parse_bool, AnnotationError};
use crate::policy::affinity::{Affinity, SameSite};

/// The keys read here (`GROUPED_KEYS`).
pub const AFFINITY_KEYS: &[&str] = &[
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-samesite",
    "session-cookie-secure",
    "session-cookie-conditional-samesite-none",
    "session-cookie-change-on-failure",
];

/// The longest a cookie attribute from an annotation may be.
const MAX_ATTRIBUTE: usize = 256;

/// The Ingress's affinity, if `affinity: cookie`.
pub fn parse_affinity(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Affinity>, AnnotationError> {
    // Settings without `affinity` are reviewed with the other keys that
    // need another (`review::NEEDS`).
    let Some((key, kind)) = lookup(annotations, "affinity") else {
        return Ok(None);
    };
    if kind.trim() != "cookie" {
        return Err(invalid_at(
            key,
            format!("{kind:?}: the only affinity is cookie"),
        ));
    }
    let mut affinity = Affinity::default();
    let text = |name: &str| -> Result<Option<String>, AnnotationError> {
        let Some((key, value)) = lookup(annotations, name) else {
            return Ok(None);
        };
        let value = value.trim();
        let token = |c: char| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\');
        if value.is_empty() || value.len() > MAX_ATTRIBUTE || !value.chars().all(token) {
            return Err(invalid_at(
                key,
                format!("{value:?} cannot be written in a cookie"),
            ));
        }
        Ok(Some(value.to_owned()))
    };
    let seconds = |name: &str| -> Result<Option<u64>, AnnotationError> {
        let Some((key, value)) = lookup(annotations, name) else {
            return Ok(None);
        };
        let value = value.trim();
        value
            .parse()
            .map(Some)
            .map_err(|_| invalid_at(key, format!("{value:?} is not a number of seconds")))
    };
    let flag = |name: &str| -> Result<Option<bool>, AnnotationError> {
        match lookup(annotations, name) {
            Some((key, value)) => parse_bool(value).map(Some).map_err(|e| invalid_at(key, e)),
            None => Ok(None),
        }
    };
    if let Some(name) = text("session-cookie-name")? {
        if name.contains('=') {
            let key = lookup(annotations, "session-cookie-name").map_or("", |(k, _)| k);
            return Err(invalid_at(key, format!("{name:?} is not a cookie name")));
        }
        affinity.name = name;
    }
    affinity.path = text("session-cookie-path")?;
    affinity.domain = text("session-cookie-domain")?;
    affinity.max_age = seconds("session-cookie-max-age")?;
    affinity.expires = seconds("session-cookie-expires")?;
    affinity.secure = flag("session-cookie-secure")?;
    affinity.conditional_samesite_none =
        flag("session-cookie-conditional-samesite-none")?.unwrap_or(false);
    affinity.change_on_failure = flag("session-cookie-change-on-failure")?.unwrap_or(false);
    if let Some((key, value)) = lookup(annotations, "session-cookie-samesite") {
        affinity.samesite = Some(match value.trim() {
            "None" => SameSite::None,
            "Lax" => SameSite::Lax,
            "Strict" => SameSite::Strict,
            other => {
                return Err(invalid_at(
                    key,
                    format!("{other:?}: expected None, Lax or Strict"),
                ))
            }
        });
    }
    if let Some((key, mode)) = lookup(annotations, "affinity-mode") {
        affinity.persistent = match mode.trim() {
            "balanced" => false,
            "persistent" => true,
            other => {
                return Err(invalid_at(
                    key,
                    format!("{other:?}: expected balanced or persistent"),
                ))
            }
        };
    }
    if let Some((key, behavior)) = lookup(annotations, "affinity-canary-behavior") {
        affinity.canary_sticky = match behavior.trim() {
            "legacy" => false,
            "sticky" => true,
            other => {
                return Err(invalid_at(
                    key,
                    format!("{other:?}: expected sticky or legacy"),
                ))
            }
        };
    }
    Ok(Some(affinity))
}
