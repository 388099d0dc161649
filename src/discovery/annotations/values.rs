//! The value parsers the annotations share: booleans, `on`/`off`, names,
//! services, protocols, and a tenant's regular expressions, each bounded.

use super::*;

/// Deepest nesting of groups and repetitions in a tenant's regular expression:
/// the `regex` crate's own limit (250) still let `a****...` overflow a thread's
/// stack while compiling (found by `fuzzed_annotations_never_panic`).
pub(super) const MAX_REGEX_NESTING: u32 = 32;

/// A regular expression from a tenant, bounded in compiled size and nesting.
pub(super) fn tenant_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .nest_limit(MAX_REGEX_NESTING)
        .build()
        .map_err(|e| e.to_string())
}

pub(super) fn invalid_at(key: &str, message: impl Into<String>) -> AnnotationError {
    AnnotationError {
        key: key.to_owned(),
        message: message.into(),
    }
}

pub(super) fn lookup<'a>(
    annotations: &'a BTreeMap<String, String>,
    key: &str,
) -> Option<(&'a str, &'a str)> {
    [SLUICE_PREFIX, NGINX_PREFIX].iter().find_map(|prefix| {
        annotations
            .get_key_value(&format!("{prefix}{key}"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

pub(super) fn nonzero(
    d: Duration,
    invalid: &impl Fn(String) -> AnnotationError,
) -> Result<Duration, AnnotationError> {
    if d.is_zero() {
        return Err(invalid("must be greater than zero".into()));
    }
    Ok(d)
}

pub(super) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

pub(super) fn parse_service_port(value: &str) -> Result<(String, String), String> {
    let value = value.trim();
    let (service, port) = value.split_once(':').unwrap_or((value, "80"));
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !dns_label(service) || port.is_empty() {
        return Err(format!(
            "{value:?} is not a service name (optionally with :port)"
        ));
    }
    Ok((service.to_owned(), port.to_owned()))
}

/// `team-a, team-b` or `*`.
pub(super) fn parse_namespaces(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let label = name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if name == "*" || label {
                Ok(name.to_owned())
            } else {
                Err(format!("{name:?} is not a namespace name"))
            }
        })
        .collect()
}

/// What `backend-protocol` asks for on the wire.
pub(super) enum Wire {
    Plain(Protocol),
    Tls { h2: bool },
}

pub(super) fn parse_protocol(value: &str) -> Result<Wire, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "HTTP" => Ok(Wire::Plain(Protocol::Http1)),
        "GRPC" | "H2C" => Ok(Wire::Plain(Protocol::H2c)),
        "HTTPS" => Ok(Wire::Tls { h2: false }),
        "GRPCS" => Ok(Wire::Tls { h2: true }),
        "AUTO_HTTP" | "FCGI" => Err(format!("{value:?} is not supported yet")),
        _ => Err(format!(
            "unknown protocol {value:?}: expected HTTP, HTTPS, GRPC, GRPCS or H2C"
        )),
    }
}

/// nginx's `on` / `off` (and `true` / `false`).
/// `upstream-vhost`: the `Host` the pods see, with nginx's `$variables`
/// (`$host`, `$http_x_...`). A fixed one must be a host name, with a port or not.
pub(super) fn parse_vhost(value: &str) -> Result<Template, String> {
    let value = value.trim();
    let template = Template::parse(value)?;
    if value.is_empty() || (!value.contains('$') && http::uri::Authority::try_from(value).is_err())
    {
        return Err(format!("{value:?} is not a host name"));
    }
    Ok(template)
}

/// `app-root`: a path (as ingress-nginx, no URL), answered as nginx's
/// `return 302 $scheme://$http_host/ROOT`.
pub(super) fn parse_app_root(value: &str) -> Result<Arc<Edits>, String> {
    let root = value.trim();
    if !root.starts_with('/')
        || root.starts_with("//")
        || http::uri::PathAndQuery::try_from(root).is_err()
    {
        return Err(format!("{root:?}: app-root is a path such as /app"));
    }
    let text = Template::parse(&format!("$scheme://$http_host{root}"))?;
    let step = Step::Return {
        status: http::StatusCode::FOUND,
        text: Some(text),
    };
    Ok(Edits::of(step))
}

pub(super) fn parse_on_off(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{value:?} is not on or off")),
    }
}

/// An access annotation sluice cannot honour as written: a `fail-closed`
/// notice, and the key, so that every request is refused (403).
pub(super) fn fail_closed(notices: &mut Vec<Notice>, key: &str, reason: &str) -> String {
    notices.push(Notice {
        key: key.to_owned(),
        reason: "fail-closed",
        message: format!("{key}: {reason}; every request is refused (403)"),
    });
    key.to_owned()
}
