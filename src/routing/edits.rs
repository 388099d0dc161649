//! A route's request and response edits, as data: header changes, fixed
//! answers, rewrites and conditions, with nginx's `$variables`. Compiled from
//! snippets (`discovery::annotations::snippets`); Gateway API's header
//! modifiers and the routing annotations compile to the same steps. Expanding
//! a template is pure and lives here; running the steps on a request is
//! `proxy::edits`.

use http::header::HeaderName;
use http::StatusCode;
use std::sync::Arc;

use regex::Regex;

use crate::policy::canary::Cidr;

/// The longest expansion of a template, in bytes (see `Template::expand`).
pub const MAX_EXPANDED: usize = 16 << 10;

/// One variable of a template, as nginx names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `$host`, `$server_name`, `$best_http_host`: the host the request was routed by.
    Host,
    /// `$scheme`, `$pass_access_scheme`: `http` or `https`.
    Scheme,
    /// `$https`: `on` over TLS, else empty.
    Https,
    /// `$request_uri`: the path and query as the client sent them.
    RequestUri,
    /// `$request_uri` without one trailing `/` (ingress-nginx's
    /// `from-to-www-redirect` target); no nginx name.
    RequestUriTrimmed,
    /// `$escaped_request_uri` (ingress-nginx's `set_escape_uri` of
    /// `$request_uri`, used in `auth-signin`): escaped as a URI component.
    EscapedRequestUri,
    /// `$uri`, `$document_uri`: the path, after rewrites.
    Uri,
    /// `$args`, `$query_string`: the query, without `?`.
    Args,
    /// `$is_args`: `?` when there is a query.
    IsArgs,
    /// `$remote_addr`: the one real client address.
    RemoteAddr,
    /// `$request_method`.
    Method,
    /// `$server_port`.
    ServerPort,
    /// `$request_id`, `$req_id`.
    RequestId,
    /// `$http_NAME`: a request header (lower case, `-` for `_`).
    Header(HeaderName),
    /// `$cookie_NAME`.
    Cookie(String),
    /// `$arg_NAME`: a query parameter.
    Arg(String),
    /// `$1` .. `$9`: a group of the last regular expression matched.
    Capture(usize),
    /// A variable the snippet itself `set`s, by its slot.
    User(usize),
}

impl Var {
    /// A built-in variable, by its nginx name; `users` are the names the
    /// snippet `set` before this point, each a slot.
    pub fn parse(name: &str, users: &[String]) -> Result<Var, String> {
        if let Some(slot) = users.iter().position(|u| u == name) {
            return Ok(Var::User(slot));
        }
        if let Ok(n) = name.parse::<usize>() {
            return if (1..=9).contains(&n) {
                Ok(Var::Capture(n))
            } else {
                Err(format!("${name} is not a capture group (1 to 9)"))
            };
        }
        let var = match name {
            "host" | "server_name" | "best_http_host" => Var::Host,
            "scheme" | "pass_access_scheme" => Var::Scheme,
            "https" => Var::Https,
            "request_uri" => Var::RequestUri,
            "escaped_request_uri" => Var::EscapedRequestUri,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "is_args" => Var::IsArgs,
            "remote_addr" | "the_real_ip" => Var::RemoteAddr,
            "request_method" => Var::Method,
            "server_port" | "pass_server_port" => Var::ServerPort,
            "request_id" | "req_id" => Var::RequestId,
            _ => {
                if let Some(header) = name.strip_prefix("http_") {
                    let header = header.replace('_', "-");
                    let header = HeaderName::try_from(header.as_str())
                        .map_err(|_| format!("${name}: not a header name"))?;
                    Var::Header(header)
                } else if let Some(cookie) = name.strip_prefix("cookie_") {
                    Var::Cookie(cookie.to_owned())
                } else if let Some(arg) = name.strip_prefix("arg_") {
                    Var::Arg(arg.to_owned())
                } else {
                    return Err(format!("variable ${name} is not supported"));
                }
            }
        };
        Ok(var)
    }
}

/// Where a template's variables come from: the request being edited.
pub trait Vars {
    /// Appends the variable's value (nothing when it has none).
    fn append(&self, var: &Var, out: &mut String);
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

pub use crate::compat::nginx::escape_uri_component;

/// A text with `$variables` (or `${variables}`), expanded per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// A text, then a variable.
    pub fn text_then(text: &str, var: Var) -> Template {
        let text = (!text.is_empty()).then(|| Part::Text(text.to_owned()));
        Template(text.into_iter().chain([Part::Var(var)]).collect())
    }

    /// This template, then another.
    pub fn then(mut self, next: Template) -> Template {
        self.0.extend(next.0);
        self
    }

    pub fn parse(text: &str) -> Result<Template, String> {
        Template::parse_with(text, &[])
    }

    /// A text without variables (`$` is itself): Gateway API's values.
    pub fn text(text: &str) -> Template {
        Template(vec![Part::Text(text.to_owned())])
    }

    /// A variable alone.
    pub fn var(var: Var) -> Template {
        Template(vec![Part::Var(var)])
    }

    /// `parse`, with the variables the snippet `set` so far.
    pub fn parse_with(text: &str, users: &[String]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: '${{' is not closed"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                // A capture group is one digit: `$1x` is `$1` then `x`.
                let end = if rest.starts_with(|c: char| c.is_ascii_digit()) {
                    end.min(1)
                } else {
                    end
                };
                (&rest[..end], &rest[end..])
            };
            if name.is_empty() {
                // A lone `$` (at the end of a regex-like text) is itself.
                literal.push('$');
                continue;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(Var::parse(name, users)?));
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template(parts))
    }

    /// The text for this request, cut at `MAX_EXPANDED` bytes: a snippet
    /// naming a client's header a thousand times must not make a thousand
    /// copies of it.
    pub fn expand(&self, vars: &impl Vars) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => vars.append(var, &mut out),
            }
            if out.len() > MAX_EXPANDED {
                let mut end = MAX_EXPANDED;
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
                break;
            }
        }
        out
    }

    /// The template's text when it has no variables.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }
}

/// A change to a request's or a response's headers.
#[derive(Debug, Clone)]
pub enum HeaderEdit {
    /// Replace every value (an empty one removes the header, as nginx).
    Set(HeaderName, Template),
    /// Add a value beside those there.
    Add(HeaderName, Template),
    Remove(HeaderName),
    /// Remove every header whose name starts with this (`X-Debug-*`).
    RemovePrefix(String),
    /// nginx's `proxy_redirect FROM TO`: a `Location` (or the URL of a
    /// `Refresh`) that starts with `FROM` starts with `TO` instead.
    RedirectPrefix(String, Template),
    /// nginx's `proxy_cookie_domain` (`path: false`) and `proxy_cookie_path`
    /// (`path: true`): the attribute of every `Set-Cookie` that matches
    /// `FROM` is `TO` instead.
    CookieAttribute {
        path: bool,
        from: String,
        to: String,
    },
}

/// What a condition tests.
#[derive(Debug, Clone)]
pub enum Test {
    /// `if ($var)`: not empty and not `0`.
    NonEmpty,
    /// `=` / `!=` (`negate`).
    Equals(Template, bool),
    /// `~`, `~*` (case-insensitive), `!~`, `!~*` (`negate`); a match sets `$1`...
    Matches(Regex, bool),
}

/// How a rewrite ends (its flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteFlag {
    /// No flag: the path changes and the next steps run.
    Continue,
    /// `break` and `last`: the path changes and no further rewrite step runs.
    Break,
    /// `redirect` (302), or a replacement that is a URL.
    Redirect,
    /// `permanent` (301).
    Permanent,
}

/// One step of a route's edits, run in order on each request.
#[derive(Debug, Clone)]
pub enum Step {
    RequestHeader(HeaderEdit),
    /// `always`: on every answer; else only on 2xx and 3xx, as `add_header`.
    ResponseHeader {
        edit: HeaderEdit,
        always: bool,
    },
    /// `return`: an answer with this status; the text is the body, or for a
    /// redirect status the `Location`.
    Return {
        status: StatusCode,
        text: Option<Template>,
    },
    Rewrite {
        pattern: Regex,
        replacement: Template,
        flag: RewriteFlag,
    },
    If {
        subject: Template,
        test: Test,
        then: Vec<Step>,
    },
    /// `set $name value`: the variable's slot takes the value.
    Set {
        slot: usize,
        value: Template,
    },
    /// `proxy_method`: the method the pod sees.
    Method(http::Method),
}

/// The statuses `add_header` without `always` applies to.
pub fn add_header_applies(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

/// One `allow` or `deny` line; `None` is `all`.
#[derive(Debug, Clone)]
pub struct AccessRule {
    pub allow: bool,
    pub from: Option<Cidr>,
}

/// A route's edits.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    /// Run in order on each request.
    pub steps: Vec<Step>,
    /// How many variables the snippets `set` (their slots).
    pub variables: usize,
    /// `allow` / `deny`, checked against the real client address after the
    /// steps (nginx's access phase follows its rewrite phase): the first
    /// rule that matches decides; none matching lets the request through.
    pub access: Vec<AccessRule>,
}

impl Edits {
    /// One step alone (a redirect's `return`).
    pub fn of(step: Step) -> Arc<Edits> {
        Arc::new(Edits {
            steps: vec![step],
            ..Edits::default()
        })
    }

    /// `base` with `before` run ahead of its steps and `after` behind them:
    /// how an annotation places its directives around the snippets', as
    /// ingress-nginx's template writes them. `base` itself, shared, when
    /// there is nothing to add.
    pub fn around(
        base: &Option<Arc<Edits>>,
        before: Vec<Step>,
        after: Vec<Step>,
    ) -> Option<Arc<Edits>> {
        if before.is_empty() && after.is_empty() {
            return base.clone();
        }
        let mut edits = base.as_deref().cloned().unwrap_or_default();
        edits.steps.splice(0..0, before);
        edits.steps.extend(after);
        Some(Arc::new(edits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Vars for Fixed {
        fn append(&self, var: &Var, out: &mut String) {
            match var {
                Var::Host => out.push_str("shop.example"),
                Var::RequestUri => out.push_str("/a?b=1"),
                Var::Capture(n) => out.push_str(&format!("<{n}>")),
                Var::Header(h) => out.push_str(h.as_str()),
                _ => {}
            }
        }
    }

    #[test]
    fn templates_expand_variables_as_nginx_names_them() {
        let t = Template::parse("https://$host${request_uri}#$1x$http_x_user").unwrap();
        assert_eq!(t.expand(&Fixed), "https://shop.example/a?b=1#<1>xx-user");
        assert_eq!(Template::parse("plain").unwrap().literal(), Some("plain"));
        assert_eq!(Template::parse("^/a$").unwrap().expand(&Fixed), "^/a$");
        assert!(Template::parse("$nope").unwrap_err().contains("$nope"));
        assert!(Template::parse("${host").is_err());
        // Bounded, whatever the variables hold.
        let many = Template::parse(&"$http_a_long_header_name".repeat(2_000)).unwrap();
        assert_eq!(many.expand(&Fixed).len(), MAX_EXPANDED);
    }
}
