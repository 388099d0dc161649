//! `auth-url`: every request is first asked of an authentication service,
//! as ingress-nginx's `auth_request`, with `auth-method`, `auth-signin`
//! (and `auth-signin-redirect-param`), `auth-response-headers`,
//! `auth-request-redirect` and `auth-always-set-cookie`. The service's host
//! is a name or an address (a backend of its own), or has `$variables`
//! (`https://$host/oauth2/auth`, oauth2-proxy's documented setup): then the
//! service is the route sluice itself serves for that URL.

use std::collections::BTreeMap;

use http::header::HeaderName;
use http::Method;

use super::headers::config_map_ref;
use super::mirror::split_target;
use super::{fail_closed, lookup, parse_bool, Notice};
use crate::policy::auth_cache::CacheDurations;
use crate::routing::edits::Template;

#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAuthSpec {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path and query asked for (`$variables`).
    pub path: Template,
    pub method: Option<Method>,
    /// Where a 401 is redirected (`$variables`).
    pub signin: Option<Template>,
    pub redirect_param: String,
    /// Copied from the service's 2xx answer to the request the pod gets.
    pub response_headers: Vec<HeaderName>,
    /// `X-Auth-Request-Redirect` (else the request URI).
    pub request_redirect: Option<Template>,
    pub always_set_cookie: bool,
    /// A URL whose host has `$variables`: the service is one of sluice's
    /// own routes, found per request.
    pub internal: Option<Template>,
    /// `auth-proxy-set-headers`: (namespace, else the Ingress's; name) of a
    /// ConfigMap, read with the snapshot into `set_headers`.
    pub set_headers_map: Option<(Option<String>, String)>,
    /// The ConfigMap's headers, then `auth-snippet`'s `proxy_set_header`s.
    pub set_headers: Vec<(HeaderName, Template)>,
    /// `auth-cache-key` and `auth-cache-duration`.
    pub cache: Option<(Template, CacheDurations)>,
}

/// The config's `global-auth-*` keys (ingress-nginx's ConfigMap), read as
/// the `auth-*` annotations they mirror. `Err`: why every route fails closed.
pub fn global_auth(keys: &[(&str, &str)]) -> Result<Option<ExternalAuthSpec>, String> {
    let annotations: BTreeMap<String, String> = keys
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("global-")?;
            Some((
                format!("{}{name}", super::NGINX_PREFIX),
                (*value).to_owned(),
            ))
        })
        .collect();
    let mut notices = Vec::new();
    let parsed = parse_external_auth(&annotations, &mut notices);
    parsed.map_err(|_| {
        let messages: Vec<String> = notices.into_iter().map(|n| n.message).collect();
        messages.join("; ").replace(super::NGINX_PREFIX, "global-")
    })
}

/// `Err(key)`: the request must fail closed, for the reason in `notices`.
pub(super) fn parse_external_auth(
    annotations: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> Result<Option<ExternalAuthSpec>, String> {
    let Some((key, url)) = lookup(annotations, "auth-url") else {
        return Ok(None);
    };
    let mut closed = |key: &str, reason: String| fail_closed(notices, key, &reason);
    let url = url.trim();
    // `https://$host/oauth2/auth`: a service on a host sluice routes.
    let authority = url.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?']).next().unwrap_or_default()
    });
    // Only the host the request was routed by: a client header there would
    // let a client choose which service says yes.
    let routed_host_only = ["${host}", "$host", "$best_http_host", "$server_name"]
        .iter()
        .fold(authority.to_owned(), |a, v| a.replace(v, ""))
        .bytes()
        .all(|b| b != b'$');
    if !routed_host_only {
        return Err(closed(
            key,
            format!("{authority:?}: only $host may name the service's host"),
        ));
    }
    let (tls, host, port, path, internal) = if authority.contains('$') {
        let whole = Template::parse(url).map_err(|e| closed(key, e))?;
        (
            false,
            String::new(),
            0,
            Template::parse("/").map_err(|e| closed(key, e))?,
            Some(whole),
        )
    } else {
        let (tls, host, port, path) = split_target(url).map_err(|e| closed(key, e))?;
        let path = Template::parse(if path.is_empty() { "/" } else { path })
            .map_err(|e| closed(key, e))?;
        (tls, host, port, path, None)
    };
    let method = match lookup(annotations, "auth-method") {
        None => None,
        Some((key, value)) => Some(
            Method::from_bytes(value.trim().as_bytes())
                .map_err(|_| closed(key, format!("{value:?} is not a method")))?,
        ),
    };
    let signin = match lookup(annotations, "auth-signin") {
        None => None,
        Some((key, value)) => Some(Template::parse(value.trim()).map_err(|e| closed(key, e))?),
    };
    let redirect_param = lookup(annotations, "auth-signin-redirect-param")
        .map_or("rd", |(_, v)| v.trim())
        .to_owned();
    let mut response_headers = Vec::new();
    if let Some((key, list)) = lookup(annotations, "auth-response-headers") {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = HeaderName::try_from(name)
                .map_err(|_| closed(key, format!("{name:?} is not a header name")))?;
            response_headers.push(name);
        }
    }
    let request_redirect = match lookup(annotations, "auth-request-redirect") {
        None => None,
        Some((key, value)) => Some(Template::parse(value.trim()).map_err(|e| closed(key, e))?),
    };
    let always_set_cookie = match lookup(annotations, "auth-always-set-cookie") {
        None => false,
        Some((key, value)) => parse_bool(value).map_err(|e| closed(key, e))?,
    };
    let set_headers_map = match lookup(annotations, "auth-proxy-set-headers") {
        None => None,
        Some((key, value)) => Some(config_map_ref(value).map_err(|e| closed(key, e))?),
    };
    // `auth-snippet`: nginx configuration of the subrequest's location.
    // `proxy_set_header` is interpreted; anything else could change who
    // gets in, so it closes the Ingress.
    let mut set_headers = Vec::new();
    if let Some((key, text)) = lookup(annotations, "auth-snippet") {
        let directives = crate::compat::snippet::parse(text).map_err(|e| closed(key, e))?;
        for directive in directives {
            match (
                directive.name.as_str(),
                directive.args.as_slice(),
                &directive.block,
            ) {
                ("proxy_set_header", [name, value], None) => {
                    let name = super::snippets::header_name(name).map_err(|e| closed(key, e))?;
                    let value = Template::parse(value).map_err(|e| closed(key, e))?;
                    set_headers.push((name, value));
                }
                (name, _, _) => {
                    let why = format!("{name}: only proxy_set_header NAME VALUE is interpreted in the authentication subrequest");
                    return Err(closed(key, why));
                }
            }
        }
    }
    let cache = match lookup(annotations, "auth-cache-key") {
        None => None,
        Some((key, value)) => {
            let template = Template::parse(value.trim()).map_err(|e| closed(key, e))?;
            let durations = match lookup(annotations, "auth-cache-duration") {
                None => CacheDurations::default(),
                Some((key, value)) => CacheDurations::parse(value).map_err(|e| closed(key, e))?,
            };
            Some((template, durations))
        }
    };
    Ok(Some(ExternalAuthSpec {
        tls,
        host,
        port,
        path,
        method,
        signin,
        redirect_param,
        response_headers,
        request_redirect,
        always_set_cookie,
        internal,
        set_headers_map,
        set_headers,
        cache,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (Result<Option<ExternalAuthSpec>, String>, Vec<Notice>) {
        let map = [(
            "nginx.ingress.kubernetes.io/auth-url".to_owned(),
            url.to_owned(),
        )]
        .into();
        let mut notices = Vec::new();
        (parse_external_auth(&map, &mut notices), notices)
    }

    #[test]
    fn the_service_is_named_or_the_routed_host() {
        let named = parse("http://oauth2-proxy.auth.svc:4180/oauth2/auth")
            .0
            .unwrap()
            .unwrap();
        assert_eq!(
            (named.host.as_str(), named.port),
            ("oauth2-proxy.auth.svc", 4180)
        );
        assert!(named.internal.is_none());
        let own = parse("https://$host/oauth2/auth").0.unwrap().unwrap();
        assert!(own.internal.is_some());
        // A client's header must not choose the service.
        let (chosen, notices) = parse("https://$http_x_auth_host/oauth2/auth");
        assert!(chosen.is_err());
        assert_eq!(notices[0].reason, "fail-closed");
        assert!(parse("ftp://auth/").0.is_err());
    }
}
