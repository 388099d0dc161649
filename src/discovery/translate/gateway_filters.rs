//! HTTPRoute filters as the routes' edits (`routing::edits`), the same
//! steps the ingress-nginx annotations and snippets compile to:
//!
//! | filter | steps |
//! |---|---|
//! | `RequestHeaderModifier` | request header set, add, remove |
//! | `ResponseHeaderModifier` | response header set, add, remove (every answer) |
//! | `RequestRedirect` | a `return` with the redirect's status and `Location` (one per case of `ReplacePrefixMatch`, guarded by the path) |
//! | `URLRewrite` | `Host` set; the path rewritten (full, or the matched prefix) |
//! | `RequestMirror` | the route's mirror (`gateway::add_rule`), as `mirror-target`'s |
//!
//! Values are literal (a `$` is itself). What cannot be honoured is an
//! error: the rule then answers 500, as the spec asks.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, HOST};
use http::StatusCode;

use crate::discovery::gateway::{
    HeaderModifier, HttpRouteFilter, RequestRedirect, SessionPersistence, Timeouts, UrlRewrite,
};
use crate::policy::affinity::{Affinity, DEFAULT_COOKIE};
use crate::routing::edits::{HeaderEdit, RewriteFlag, Step, Template, Test, Var};
use crate::routing::HostKey;

/// The steps of a rule's filters, for one of its matches (`prefix`: the
/// match's `PathPrefix`, which `ReplacePrefixMatch` replaces).
pub(super) fn compile(
    filters: &[HttpRouteFilter],
    prefix: Option<&str>,
) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for filter in filters {
        match filter.kind.as_str() {
            "RequestHeaderModifier" => {
                let modifier = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or("RequestHeaderModifier without its settings")?;
                steps.extend(header_edits(modifier)?.into_iter().map(Step::RequestHeader));
            }
            "ResponseHeaderModifier" => {
                let modifier = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or("ResponseHeaderModifier without its settings")?;
                let edits = header_edits(modifier)?;
                steps.extend(
                    edits
                        .into_iter()
                        .map(|edit| Step::ResponseHeader { edit, always: true }),
                );
            }
            "RequestRedirect" => {
                let redirect = filter
                    .request_redirect
                    .as_ref()
                    .ok_or("RequestRedirect without its settings")?;
                steps.extend(redirect_steps(redirect, prefix)?);
            }
            "URLRewrite" => {
                let rewrite = filter
                    .url_rewrite
                    .as_ref()
                    .ok_or("URLRewrite without its settings")?;
                steps.extend(rewrite_steps(rewrite, prefix)?);
            }
            // A backend of its own: `gateway::add_rule` makes it.
            "RequestMirror" => {}
            other => return Err(format!("filter {other} is not served yet")),
        }
    }
    Ok(steps)
}

fn header_edits(modifier: &HeaderModifier) -> Result<Vec<HeaderEdit>, String> {
    let name = |n: &str| HeaderName::try_from(n).map_err(|_| format!("{n:?} is not a header name"));
    let value = |v: &str| {
        HeaderValue::try_from(v)
            .map(|_| Template::text(v))
            .map_err(|_| format!("{v:?} is not a header value"))
    };
    let mut edits = Vec::new();
    for header in &modifier.set {
        edits.push(HeaderEdit::Set(name(&header.name)?, value(&header.value)?));
    }
    for header in &modifier.add {
        edits.push(HeaderEdit::Add(name(&header.name)?, value(&header.value)?));
    }
    for header in &modifier.remove {
        edits.push(HeaderEdit::Remove(name(header)?));
    }
    Ok(edits)
}

/// `return CODE scheme://host[:port]path`, each part the filter's or the
/// request's. `ReplacePrefixMatch` is two guarded returns: the prefix
/// itself becomes the replacement, and `/prefix/rest` the replacement then
/// `/rest`.
fn redirect_steps(redirect: &RequestRedirect, prefix: Option<&str>) -> Result<Vec<Step>, String> {
    let status = match redirect.status_code.unwrap_or(302) {
        code @ (301 | 302 | 303 | 307 | 308) => {
            StatusCode::from_u16(code).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "redirect status {other} is not 301, 302, 303, 307 or 308"
            ))
        }
    };
    let scheme = match redirect.scheme.as_deref() {
        None => Template::var(Var::Scheme),
        Some(s @ ("http" | "https")) => Template::text(s),
        Some(other) => return Err(format!("redirect scheme {other:?} is not http or https")),
    };
    let host = match redirect.hostname.as_deref() {
        None => Template::var(Var::Host),
        Some(h) => Template::text(&host_name(h)?),
    };
    // The well-known port of the scheme is left out.
    let port = match (redirect.port, redirect.scheme.as_deref()) {
        (Some(80), Some("http")) | (Some(443), Some("https")) | (None, _) => String::new(),
        (Some(port), _) => format!(":{port}"),
    };
    let to = |path: Template| Step::Return {
        status,
        text: Some(
            scheme
                .clone()
                .then(Template::text("://"))
                .then(host.clone())
                .then(Template::text(&port))
                .then(path),
        ),
    };
    let query = |path: Template| {
        path.then(Template::var(Var::IsArgs))
            .then(Template::var(Var::Args))
    };
    let Some(modifier) = &redirect.path else {
        return Ok(vec![to(Template::var(Var::RequestUri))]);
    };
    match (
        modifier.kind.as_str(),
        &modifier.replace_full_path,
        &modifier.replace_prefix_match,
        prefix,
    ) {
        ("ReplaceFullPath", Some(path), ..) => {
            check_path(path)?;
            Ok(vec![to(query(Template::text(path)))])
        }
        ("ReplacePrefixMatch", _, Some(replacement), Some(prefix)) => {
            check_path(replacement)?;
            let prefix =
                regex::escape(crate::routing::normalize_prefix(prefix).trim_end_matches('/'));
            let regex = |pattern: &str| regex::Regex::new(pattern).map_err(|e| e.to_string());
            let guarded = |pattern: regex::Regex, path: Template| Step::If {
                subject: Template::var(Var::Uri),
                test: Test::Matches(pattern, false),
                then: vec![to(query(path))],
            };
            Ok(vec![
                guarded(
                    regex(&format!("^{prefix}/?$"))?,
                    Template::text(replacement),
                ),
                guarded(
                    regex(&format!("^{prefix}(/.*)$"))?,
                    Template::text(replacement.trim_end_matches('/'))
                        .then(Template::var(Var::Capture(1))),
                ),
                // Never reached (the route matched the prefix), but never
                // a request through unredirected.
                to(Template::var(Var::RequestUri)),
            ])
        }
        ("ReplacePrefixMatch", ..) => Err("ReplacePrefixMatch needs a PathPrefix match".into()),
        (other, ..) => Err(format!(
            "redirect path modifier {other:?} without its value"
        )),
    }
}

fn rewrite_steps(rewrite: &UrlRewrite, prefix: Option<&str>) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    if let Some(host) = &rewrite.hostname {
        host_name(host)?;
        steps.push(Step::RequestHeader(HeaderEdit::Set(
            HOST,
            Template::text(host),
        )));
    }
    let Some(path) = &rewrite.path else {
        return Ok(steps);
    };
    let regex = |pattern: &str| regex::Regex::new(pattern).map_err(|e| e.to_string());
    match (
        path.kind.as_str(),
        &path.replace_full_path,
        &path.replace_prefix_match,
        prefix,
    ) {
        ("ReplaceFullPath", Some(full), _, _) => {
            check_path(full)?;
            steps.push(Step::Rewrite {
                pattern: regex("^.*$")?,
                replacement: Template::text(full),
                flag: RewriteFlag::Break,
            });
        }
        ("ReplacePrefixMatch", _, Some(replacement), Some(prefix)) => {
            check_path(replacement)?;
            let prefix =
                regex::escape(crate::routing::normalize_prefix(prefix).trim_end_matches('/'));
            // `/prefix` itself becomes the replacement; `/prefix/rest`
            // becomes the replacement, then `/rest`, with one `/` between.
            steps.push(Step::Rewrite {
                pattern: regex(&format!("^{prefix}/?$"))?,
                replacement: Template::text(replacement),
                flag: RewriteFlag::Break,
            });
            steps.push(Step::Rewrite {
                pattern: regex(&format!("^{prefix}(/.*)$"))?,
                replacement: Template::text(replacement.trim_end_matches('/'))
                    .then(Template::var(Var::Capture(1))),
                flag: RewriteFlag::Break,
            });
        }
        ("ReplacePrefixMatch", ..) => {
            return Err("ReplacePrefixMatch needs a PathPrefix match".into())
        }
        (other, ..) => return Err(format!("path modifier {other:?} without its value")),
    }
    Ok(steps)
}

/// A rule's `timeouts`: (`request`, `backendRequest`); `0s`, or no value,
/// is none. `backendRequest` may not exceed `request`, as the spec says.
pub(super) fn timeouts(
    timeouts: &Timeouts,
) -> Result<(Option<Duration>, Option<Duration>), String> {
    let parse = |name: &str, value: &Option<String>| match value {
        None => Ok(None),
        Some(text) => duration(text)
            .map(|d| (!d.is_zero()).then_some(d))
            .ok_or_else(|| {
                format!("timeouts.{name} {text:?} is not a duration (such as 10s, 500ms, 1m30s)")
            }),
    };
    let request = parse("request", &timeouts.request)?;
    let backend = parse("backendRequest", &timeouts.backend_request)?;
    if let (Some(request), Some(backend)) = (request, backend) {
        if backend > request {
            return Err("timeouts.backendRequest is longer than timeouts.request".into());
        }
    }
    Ok((request, backend))
}

/// The spec's duration (GEP-2257): up to four of a number and a unit
/// (`h`, `m`, `s`, `ms`), largest first, such as `1h30m` or `500ms`.
fn duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = match rest.as_bytes() {
            [b'm', b's', ..] => (1, 2),
            [b'h', ..] => (3_600_000, 1),
            [b'm', ..] => (60_000, 1),
            [b's', ..] => (1_000, 1),
            _ => return None,
        };
        if unit >= last_unit {
            return None;
        }
        last_unit = unit;
        rest = &rest[len..];
        total += Duration::from_millis(number.checked_mul(unit)?);
        parts += 1;
    }
    (parts > 0 && parts <= 4).then_some(total)
}

/// A rule's `sessionPersistence` as the cookie affinity of
/// `affinity: cookie` (`policy::affinity`): the cookie `sessionName` (else
/// `INGRESSCOOKIE`), kept for `absoluteTimeout` when `Permanent`. What it
/// cannot honour is named (the rule is still served, less sticky): a
/// `Header` session, an idle timeout, a session cookie's absolute timeout.
pub(super) fn session_affinity(spec: &SessionPersistence) -> (Option<Arc<Affinity>>, Vec<String>) {
    let mut unserved: Vec<String> = spec
        .other
        .keys()
        .map(|k| format!("sessionPersistence.{k} is not served yet; ignored"))
        .collect();
    if spec.kind.as_deref().is_some_and(|k| k != "Cookie") {
        unserved.push(format!(
            "sessionPersistence of type {:?} is not served yet; requests are not kept on one pod",
            spec.kind.as_deref().unwrap_or_default()
        ));
        return (None, unserved);
    }
    let name = spec
        .session_name
        .clone()
        .unwrap_or_else(|| DEFAULT_COOKIE.into());
    let token = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        unserved.push(format!(
            "sessionName {name:?} is not a cookie name; requests are not kept on one pod"
        ));
        return (None, unserved);
    }
    if spec.idle_timeout.is_some() {
        unserved.push("sessionPersistence.idleTimeout is not served yet; ignored".into());
    }
    let permanent = spec
        .cookie_config
        .as_ref()
        .and_then(|c| c.lifetime_type.as_deref())
        == Some("Permanent");
    let lifetime = spec
        .absolute_timeout
        .as_deref()
        .map(|t| duration(t).ok_or(t));
    let max_age = match (permanent, lifetime) {
        (true, Some(Ok(lifetime))) => Some(lifetime.as_secs()),
        (_, Some(Err(text))) => {
            unserved.push(format!(
                "absoluteTimeout {text:?} is not a duration; ignored"
            ));
            None
        }
        (false, Some(Ok(_))) => {
            unserved.push(
                "the absoluteTimeout of a session cookie is not enforced yet; ignored".into(),
            );
            None
        }
        (_, None) => None,
    };
    let affinity = Affinity {
        name,
        max_age,
        expires: max_age,
        ..Affinity::default()
    };
    (Some(Arc::new(affinity)), unserved)
}

fn check_path(path: &str) -> Result<(), String> {
    let valid = path.starts_with('/')
        && path.len() <= 1024
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if valid {
        Ok(())
    } else {
        Err(format!("{path:?} is not a path"))
    }
}

/// A filter's `hostname`, checked (and lowercased) as rule hosts are.
fn host_name(host: &str) -> Result<String, String> {
    match HostKey::parse(Some(host)) {
        Some(HostKey::Exact(name)) => Ok(name),
        _ => Err(format!("{host:?} is not a host name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_persistence_is_a_cookie_affinity_or_says_why_not() {
        let spec = |kind: Option<&str>, name: Option<&str>| SessionPersistence {
            kind: kind.map(str::to_owned),
            session_name: name.map(str::to_owned),
            absolute_timeout: Some("10m".into()),
            ..SessionPersistence::default()
        };
        let (affinity, unserved) = session_affinity(&spec(None, None));
        let affinity = affinity.unwrap();
        assert_eq!(
            (affinity.name.as_str(), affinity.max_age),
            (DEFAULT_COOKIE, None)
        );
        assert_eq!(
            unserved.len(),
            1,
            "a session cookie's timeout: {unserved:?}"
        );
        for (kind, name) in [
            (Some("Header"), None),
            (None, Some("bad name;")),
            (None, Some("")),
        ] {
            let (affinity, unserved) = session_affinity(&spec(kind, name));
            assert!(
                affinity.is_none() && !unserved.is_empty(),
                "{kind:?} {name:?}"
            );
        }
    }

    #[test]
    fn durations_read_as_the_spec_writes_them() {
        let ms = |text: &str| duration(text).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("10s"), Some(10_000));
        assert_eq!(ms("1h30m"), Some(5_400_000));
        assert_eq!(ms("1m30s250ms"), Some(90_250));
        assert_eq!(ms("0s"), Some(0));
        for bad in [
            "", "10", "s", "1.5s", "-1s", "1s1h", "1s1s", "999999s", "1d", "1 s",
        ] {
            assert_eq!(ms(bad), None, "{bad}");
        }
        let both = |request: &str, backend: &str| {
            timeouts(&Timeouts {
                request: Some(request.into()),
                backend_request: Some(backend.into()),
                ..Timeouts::default()
            })
        };
        assert_eq!(
            both("1s", "500ms"),
            Ok((
                Some(Duration::from_secs(1)),
                Some(Duration::from_millis(500))
            ))
        );
        assert_eq!(both("0s", "0s"), Ok((None, None)));
        assert!(both("500ms", "1s").is_err());
    }
}
