//! Runs a route's edits (`routing::edits`) on a request, in nginx's order:
//! first the rewrite phase (`return`, `rewrite`, `if`, in the order written),
//! then the access rules (`allow` / `deny`), then the header changes, which
//! nginx applies wherever they are written, with the variables as the
//! rewrites left them. The header changes are kept on the context: the
//! request's are applied when the upstream request is made, the response's
//! to whatever answer goes back (`pipeline::respond`).

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::conn::ConnInfo;
use super::context::RequestContext;
use crate::routing::edits::{
    add_header_applies, Edits, HeaderEdit, RewriteFlag, Step, Template, Test, Var, Vars,
};

/// Headers a wildcard removal leaves alone: they frame the message.
const FRAMING: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
];

/// A header change with its value expanded for this request.
#[derive(Debug, Clone)]
pub enum Applied {
    Set(HeaderName, HeaderValue),
    Add(HeaderName, HeaderValue),
    Remove(HeaderName),
    RemovePrefix(String),
    /// `proxy_redirect FROM TO`, expanded.
    RedirectPrefix(String, String),
    CookieAttribute {
        path: bool,
        from: String,
        to: String,
    },
}

impl Applied {
    /// Whether this changes the header `name`.
    pub fn names(&self, name: &HeaderName) -> bool {
        match self {
            Applied::Set(n, _) | Applied::Add(n, _) | Applied::Remove(n) => n == name,
            Applied::RemovePrefix(prefix) => name.as_str().starts_with(prefix.as_str()),
            Applied::RedirectPrefix(..) => name == header::LOCATION || name == "refresh",
            Applied::CookieAttribute { .. } => name == header::SET_COOKIE,
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Applied::Set(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            Applied::Add(name, value) => {
                headers.append(name.clone(), value.clone());
            }
            Applied::Remove(name) => {
                headers.remove(name);
            }
            Applied::RedirectPrefix(from, to) => {
                redirect_prefix(headers, header::LOCATION, "", from, to);
                redirect_prefix(headers, header::REFRESH, "url=", from, to);
            }
            Applied::CookieAttribute { path, from, to } => {
                let rewritten: Vec<HeaderValue> = headers
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .map(|v| cookie_attribute(v, *path, from, to))
                    .collect();
                headers.remove(header::SET_COOKIE);
                for value in rewritten {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            Applied::RemovePrefix(prefix) => {
                // `Content-*` must not take the framing with it.
                let names: Vec<HeaderName> = headers
                    .keys()
                    .filter(|name| name.as_str().starts_with(prefix.as_str()))
                    .filter(|name| !FRAMING.contains(name))
                    .cloned()
                    .collect();
                for name in names {
                    headers.remove(name);
                }
            }
        }
    }
}

/// One `Set-Cookie` with its `Domain` (case-insensitive, a leading dot
/// ignored, as nginx) or `Path` (a prefix) rewritten; else as it was.
fn cookie_attribute(value: &HeaderValue, path: bool, from: &str, to: &str) -> HeaderValue {
    let Ok(text) = value.to_str() else {
        return value.clone();
    };
    let wanted = if path { "path" } else { "domain" };
    let mut changed = false;
    let parts: Vec<String> = text
        .split(';')
        .map(|part| {
            let Some((name, attr)) = part.split_once('=') else {
                return part.to_owned();
            };
            if changed || !name.trim().eq_ignore_ascii_case(wanted) {
                return part.to_owned();
            }
            let replaced = if path {
                attr.strip_prefix(from).map(|rest| format!("{to}{rest}"))
            } else {
                let bare = attr.trim_start_matches('.');
                bare.eq_ignore_ascii_case(from.trim_start_matches('.'))
                    .then(|| to.to_owned())
            };
            match replaced {
                Some(attr) => {
                    changed = true;
                    format!("{name}={attr}")
                }
                None => part.to_owned(),
            }
        })
        .collect();
    if !changed {
        return value.clone();
    }
    HeaderValue::try_from(parts.join(";")).unwrap_or_else(|_| value.clone())
}

/// `proxy_redirect`: the URL in `name` (after `marker`, for `Refresh`'s
/// `5; url=...`) that starts with `from` starts with `to` instead.
fn redirect_prefix(headers: &mut HeaderMap, name: HeaderName, marker: &str, from: &str, to: &str) {
    let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let at = match marker {
        "" => 0,
        marker => match value.to_ascii_lowercase().find(marker) {
            Some(at) => at + marker.len(),
            None => return,
        },
    };
    let Some(rest) = value[at..].strip_prefix(from) else {
        return;
    };
    let rewritten = format!("{}{to}{rest}", &value[..at]);
    if let Ok(value) = HeaderValue::try_from(rewritten) {
        headers.insert(name, value);
    }
}

/// Applies the response's header changes; `add_header` without `always`
/// only to 2xx and 3xx answers.
pub fn apply_to_response(edits: &[(Applied, bool)], status: StatusCode, headers: &mut HeaderMap) {
    for (edit, always) in edits {
        if *always || add_header_applies(status) {
            edit.apply(headers);
        }
    }
}

/// The request's variables, as the rewrites so far left them.
struct RequestVars<'a> {
    request: &'a Request<Incoming>,
    /// The path and query after rewrites.
    uri: Uri,
    original: &'a Uri,
    host: &'a str,
    tls: bool,
    port: u16,
    client: IpAddr,
    request_id: &'a HeaderValue,
    captures: Vec<Option<String>>,
    /// The values of the variables the snippets `set`, by slot.
    user: Vec<String>,
}

impl<'a> RequestVars<'a> {
    /// The variables of `request` as it came, with `users` slots for the
    /// snippet's own.
    fn new(
        request: &'a Request<Incoming>,
        host: &'a str,
        conn: &ConnInfo,
        ctx: &'a RequestContext,
        users: usize,
    ) -> RequestVars<'a> {
        RequestVars {
            uri: request.uri().clone(),
            request,
            original: &ctx.uri,
            host,
            tls: conn.tls,
            port: conn.local.port(),
            client: ctx.client.ip,
            request_id: &ctx.request_id,
            captures: Vec::new(),
            user: vec![String::new(); users],
        }
    }
}

impl Vars for RequestVars<'_> {
    fn append(&self, var: &Var, out: &mut String) {
        let headers = self.request.headers();
        match var {
            Var::Host => out.push_str(crate::routing::strip_port(self.host)),
            Var::Scheme => out.push_str(if self.tls { "https" } else { "http" }),
            Var::Https => out.push_str(if self.tls { "on" } else { "" }),
            Var::RequestUri => out.push_str(
                self.original
                    .path_and_query()
                    .map_or("/", PathAndQuery::as_str),
            ),
            Var::EscapedRequestUri => out.push_str(&crate::routing::edits::escape_uri_component(
                self.original
                    .path_and_query()
                    .map_or("/", PathAndQuery::as_str),
            )),
            Var::RequestUriTrimmed => {
                let uri = self
                    .original
                    .path_and_query()
                    .map_or("/", PathAndQuery::as_str);
                out.push_str(uri.strip_suffix('/').unwrap_or(uri));
            }
            Var::Uri => out.push_str(self.uri.path()),
            Var::Args => out.push_str(self.uri.query().unwrap_or("")),
            Var::IsArgs => out.push_str(if self.uri.query().is_some() { "?" } else { "" }),
            Var::RemoteAddr => out.push_str(&self.client.to_string()),
            Var::Method => out.push_str(self.request.method().as_str()),
            Var::ServerPort => out.push_str(&self.port.to_string()),
            Var::RequestId => out.push_str(self.request_id.to_str().unwrap_or("")),
            Var::Header(name) => {
                // Several values join with ", ", as nginx's $http_ does for most.
                let mut first = true;
                for value in headers.get_all(name) {
                    if !first {
                        out.push_str(", ");
                    }
                    out.push_str(value.to_str().unwrap_or(""));
                    first = false;
                }
            }
            Var::Cookie(name) => {
                if let Some(value) = crate::balance::policy::cookie(headers, name) {
                    out.push_str(value);
                }
            }
            Var::Arg(name) => {
                let found = self.uri.query().unwrap_or("").split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key == name).then_some(value)
                });
                out.push_str(found.unwrap_or(""));
            }
            Var::Capture(n) => {
                if let Some(Some(group)) = self.captures.get(*n) {
                    out.push_str(group);
                }
            }
            Var::User(slot) => {
                if let Some(value) = self.user.get(*slot) {
                    out.push_str(value);
                }
            }
        }
    }
}

/// `template` with the request's variables, as the client sent it.
pub(super) fn render(
    template: &Template,
    request: &Request<Incoming>,
    host: &str,
    conn: &ConnInfo,
    ctx: &RequestContext,
) -> String {
    template.expand(&RequestVars::new(request, host, conn, ctx, 0))
}

/// What the rewrite phase decided.
enum Flow {
    Next,
    /// `break` / `last`: no further rewrite step.
    Stop,
    /// sluice answers: the status, and the body or `Location` (`text_answer`).
    Answer(StatusCode, Option<String>),
}

/// Runs `edits`; an answer (a `return`, a redirect, a denial) ends the
/// request there. A rewritten path is written into `request`.
pub(super) fn run(
    edits: &Edits,
    request: &mut Request<Incoming>,
    host: &str,
    conn: &ConnInfo,
    ctx: &mut RequestContext,
) -> Option<Response<ResponseBody>> {
    let mut vars = RequestVars::new(request, host, conn, ctx, edits.variables);
    let mut headers = Vec::new();
    let flow = rewrite_phase(&edits.steps, &mut vars, &mut headers);
    let mut answer = match flow {
        Flow::Answer(status, text) => Some(text_answer(status, text)),
        Flow::Next | Flow::Stop => None,
    };
    if answer.is_none() {
        let denied = edits
            .access
            .iter()
            .find(|rule| {
                rule.from
                    .as_ref()
                    .is_none_or(|cidr| cidr.contains(vars.client))
            })
            .is_some_and(|rule| !rule.allow);
        if denied {
            answer = Some(text_answer(StatusCode::FORBIDDEN, None));
        }
    }
    // Header changes: the top-level ones wherever written, and those of the
    // conditions that held, with the variables as the rewrites left them.
    let top = edits
        .steps
        .iter()
        .filter(|s| matches!(s, Step::RequestHeader(_) | Step::ResponseHeader { .. }));
    let mut request_edits = Vec::new();
    let mut response_edits = Vec::new();
    for step in top.chain(headers) {
        match step {
            Step::RequestHeader(edit) => request_edits.extend(expand(edit, &vars)),
            Step::ResponseHeader { edit, always } => {
                response_edits.extend(expand(edit, &vars).map(|a| (a, *always)))
            }
            _ => {}
        }
    }
    let rewritten = (vars.uri != *request.uri()).then(|| vars.uri.clone());
    drop(vars);
    if let Some(uri) = rewritten {
        *request.uri_mut() = uri;
    }
    ctx.request_edits = request_edits;
    // After those a filter before this one made (CORS): a snippet's wins.
    ctx.response_edits.extend(response_edits);
    ctx.upstream_method = edits.steps.iter().find_map(|s| match s {
        Step::Method(method) => Some(method.clone()),
        _ => None,
    });
    answer
}

fn rewrite_phase<'s>(
    steps: &'s [Step],
    vars: &mut RequestVars<'_>,
    headers: &mut Vec<&'s Step>,
) -> Flow {
    for step in steps {
        match step {
            Step::RequestHeader(_) | Step::ResponseHeader { .. } | Step::Method(_) => {}
            Step::Set { slot, value } => {
                let value = value.expand(vars);
                if let Some(user) = vars.user.get_mut(*slot) {
                    *user = value;
                }
            }
            Step::Return { status, text } => {
                let text = text.as_ref().map(|t| t.expand(vars));
                return Flow::Answer(*status, text);
            }
            Step::Rewrite {
                pattern,
                replacement,
                flag,
            } => {
                let path = vars.uri.path().to_owned();
                let Some(found) = pattern.captures(&path) else {
                    continue;
                };
                vars.captures = found
                    .iter()
                    .map(|m| m.map(|m| m.as_str().to_owned()))
                    .collect();
                let target = replacement.expand(vars);
                // As nginx: the old query follows, unless the replacement ends in `?`.
                let target = match (target.strip_suffix('?'), vars.uri.query()) {
                    (Some(bare), _) => bare.to_owned(),
                    (None, Some(query)) if target.contains('?') => format!("{target}&{query}"),
                    (None, Some(query)) => format!("{target}?{query}"),
                    (None, None) => target,
                };
                match flag {
                    RewriteFlag::Redirect => return Flow::Answer(StatusCode::FOUND, Some(target)),
                    RewriteFlag::Permanent => {
                        return Flow::Answer(StatusCode::MOVED_PERMANENTLY, Some(target))
                    }
                    RewriteFlag::Continue | RewriteFlag::Break => {
                        match PathAndQuery::try_from(target.as_str()) {
                            Ok(path) if target.starts_with('/') => {
                                let mut parts = vars.uri.clone().into_parts();
                                parts.path_and_query = Some(path);
                                if let Ok(uri) = Uri::from_parts(parts) {
                                    vars.uri = uri;
                                }
                            }
                            // A target that is no path: refuse rather than guess.
                            _ => return Flow::Answer(StatusCode::INTERNAL_SERVER_ERROR, None),
                        }
                        if *flag == RewriteFlag::Break {
                            return Flow::Stop;
                        }
                    }
                }
            }
            Step::If {
                subject,
                test,
                then,
            } => {
                let value = subject.expand(vars);
                let holds = match test {
                    Test::NonEmpty => !value.is_empty() && value != "0",
                    Test::Equals(other, negate) => (value == other.expand(vars)) != *negate,
                    Test::Matches(regex, negate) => match regex.captures(&value) {
                        Some(found) if !negate => {
                            vars.captures = found
                                .iter()
                                .map(|m| m.map(|m| m.as_str().to_owned()))
                                .collect();
                            true
                        }
                        Some(_) => false,
                        None => *negate,
                    },
                };
                if holds {
                    headers.extend(then.iter().filter(|s| {
                        matches!(s, Step::RequestHeader(_) | Step::ResponseHeader { .. })
                    }));
                    match rewrite_phase(then, vars, headers) {
                        Flow::Next => {}
                        other => return other,
                    }
                }
            }
        }
    }
    Flow::Next
}

fn expand(edit: &HeaderEdit, vars: &RequestVars<'_>) -> Option<Applied> {
    let value = |template: &crate::routing::edits::Template| {
        HeaderValue::try_from(template.expand(vars)).ok()
    };
    match edit {
        HeaderEdit::Set(name, template) => match value(template) {
            Some(v) if !v.is_empty() => Some(Applied::Set(name.clone(), v)),
            // An empty value removes the header, as nginx.
            Some(_) => Some(Applied::Remove(name.clone())),
            None => None,
        },
        HeaderEdit::Add(name, template) => value(template)
            .filter(|v| !v.is_empty())
            .map(|v| Applied::Add(name.clone(), v)),
        HeaderEdit::Remove(name) => Some(Applied::Remove(name.clone())),
        HeaderEdit::RemovePrefix(prefix) => Some(Applied::RemovePrefix(prefix.clone())),
        HeaderEdit::RedirectPrefix(from, to) => {
            Some(Applied::RedirectPrefix(from.clone(), to.expand(vars)))
        }
        HeaderEdit::CookieAttribute { path, from, to } => Some(Applied::CookieAttribute {
            path: *path,
            from: from.clone(),
            to: to.clone(),
        }),
    }
}

/// sluice's own answer: for a redirect status, `text` is the `Location`;
/// otherwise it is the body (else the status line).
fn text_answer(status: StatusCode, text: Option<String>) -> Response<ResponseBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    let (body, location) = match (redirect, text) {
        (true, Some(location)) => (format!("{} {reason}\n", status.as_u16()), Some(location)),
        (false, Some(text)) => (text, None),
        (_, None) => (format!("{} {reason}\n", status.as_u16()), None),
    };
    let mut response = Response::new(ResponseBody::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}
