//! `server-snippet` and `configuration-snippet`, interpreted: the directives
//! people put in them become a route's edits (`routing::edits`); nothing is
//! ever run as nginx configuration.
//!
//! Interpreted: `more_set_headers`, `more_clear_headers`, `add_header`,
//! `proxy_hide_header` (response); `proxy_set_header`, `more_set_input_headers`,
//! `more_clear_input_headers`, `proxy_method` (request); `return`; `rewrite`
//! with its flags; `if` on a variable (`=`, `!=`, `~`, `~*`, `!~`, `!~*`);
//! `set $variable`; `allow` / `deny`. That is Traefik's ingress-nginx subset
//! (`add_header`, `more_set_headers`, `more_set_input_headers`,
//! `proxy_set_header`, `proxy_method`, `set`, `if`, `return`) and more.
//! Anything else is a warning naming the directive. A snippet that holds an
//! access directive (`snippet::ACCESS_DIRECTIVES`, `return 401/403`) and that
//! sluice cannot interpret whole makes the Ingress fail closed.
//!
//! Differences from ingress-nginx: a `server-snippet` applies to this
//! Ingress's own paths, not to every Ingress of the host; `last` ends the
//! rewrites like `break` (the route is not chosen again).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::HeaderName;
use http::StatusCode;

use super::{tenant_regex, Notice, NGINX_PREFIX, SLUICE_PREFIX};
use crate::compat::snippet::{self, Directive};
use crate::policy::canary::Cidr;
use crate::routing::edits::{AccessRule, Edits, HeaderEdit, RewriteFlag, Step, Template, Test};

/// What the snippets of an Ingress came to.
#[derive(Debug, Default)]
pub struct Compiled {
    pub edits: Option<Arc<Edits>>,
    pub notices: Vec<Notice>,
    /// `annotation (directive)` when the Ingress must fail closed.
    pub fail_closed: Option<String>,
}

/// Server-level first: nginx runs the server's rewrite directives before the
/// location's.
const ORDER: &[&str] = &["server-snippet", "configuration-snippet"];

pub fn compile(annotations: &BTreeMap<String, String>) -> Compiled {
    let mut compiled = Compiled::default();
    let mut edits = Edits::default();
    // The variables the snippets `set`, in order (server-snippet's first).
    let mut users: Vec<String> = Vec::new();
    for name in ORDER {
        // `sluice.io/` wins over `nginx.ingress.kubernetes.io/`, as for every key.
        let Some((key, text)) = [SLUICE_PREFIX, NGINX_PREFIX]
            .iter()
            .find_map(|prefix| annotations.get_key_value(&format!("{prefix}{name}")))
        else {
            continue;
        };
        let mut failed = Vec::new();
        // The access directive that closes the Ingress because of this snippet.
        let mut closes = None;
        match snippet::parse(text) {
            Ok(directives) => {
                let mut access = None;
                for directive in &directives {
                    find_access(directive, &mut access);
                    if directive.name == "allow" || directive.name == "deny" {
                        match access_rule(directive) {
                            Ok(rule) => edits.access.push(rule),
                            Err(why) => failed.push((directive.name.clone(), why)),
                        }
                        continue;
                    }
                    match step(directive, &mut users) {
                        Ok(steps) => edits.steps.extend(steps),
                        Err(why) => failed.push((directive.name.clone(), why)),
                    }
                }
                if !failed.is_empty() {
                    closes = access;
                }
            }
            Err(why) => {
                closes = snippet::mentions_access(text).map(str::to_owned);
                failed.push(("(snippet)".into(), format!("cannot be read: {why}")));
            }
        }
        if let Some(access) = &closes {
            compiled
                .fail_closed
                .get_or_insert(format!("{key} ({access})"));
        }
        for (directive, why) in failed {
            let (reason, message) = match &closes {
                Some(access) => ("fail-closed", format!("{key}: {directive}: {why}; the snippet holds the access directive {access:?}, so this Ingress answers 403 until it is fixed")),
                None => ("unsupported-snippet", format!("{key}: {directive}: {why}; ignored, the rest is applied")),
            };
            compiled.notices.push(Notice {
                key: key.clone(),
                reason,
                message,
            });
        }
    }
    edits.variables = users.len();
    if !edits.steps.is_empty() || !edits.access.is_empty() {
        compiled.edits = Some(Arc::new(edits));
    }
    compiled
}

/// The first access directive in `directive` or its block.
fn find_access(directive: &Directive, found: &mut Option<String>) {
    if found.is_some() {
        return;
    }
    if snippet::is_access(directive) {
        *found = Some(directive.name.clone());
        return;
    }
    for inner in directive.block.iter().flatten() {
        find_access(inner, found);
    }
}

/// The steps of one directive (one per header for the multi-header ones).
fn step(d: &Directive, users: &mut Vec<String>) -> Result<Vec<Step>, String> {
    if d.block.is_some() && d.name != "if" {
        return Err("blocks are not interpreted".into());
    }
    let args = d.args.as_slice();
    match d.name.as_str() {
        "more_set_headers" => Ok(response(headers_to_set(args, users)?, true)),
        "more_clear_headers" => Ok(response(headers_to_clear(args)?, true)),
        "add_header" => {
            let (name, value, always) = match args {
                [name, value] => (name, value, false),
                [name, value, always] if always == "always" => (name, value, true),
                _ => return Err("expected: add_header NAME VALUE [always]".into()),
            };
            let edit = HeaderEdit::Add(header_name(name)?, Template::parse_with(value, users)?);
            Ok(vec![Step::ResponseHeader { edit, always }])
        }
        "proxy_hide_header" => match args {
            [name] => Ok(response(vec![HeaderEdit::Remove(header_name(name)?)], true)),
            _ => Err("expected: proxy_hide_header NAME".into()),
        },
        "proxy_set_header" => match args {
            [name, value] => Ok(vec![Step::RequestHeader(HeaderEdit::Set(
                header_name(name)?,
                Template::parse_with(value, users)?,
            ))]),
            _ => Err("expected: proxy_set_header NAME VALUE".into()),
        },
        "more_set_input_headers" => Ok(request(headers_to_set(args, users)?)),
        "more_clear_input_headers" => Ok(request(headers_to_clear(args)?)),
        "return" => Ok(vec![return_step(args, users)?]),
        "rewrite" => Ok(vec![rewrite_step(args, users)?]),
        "if" => {
            let (subject, test) = condition(&d.condition, users)?;
            let mut then = Vec::new();
            for inner in d.block.iter().flatten() {
                if inner.name == "proxy_method" {
                    return Err("proxy_method is not allowed inside if".into());
                }
                then.extend(
                    step(inner, users).map_err(|why| format!("{} inside if: {why}", inner.name))?,
                );
            }
            Ok(vec![Step::If {
                subject,
                test,
                then,
            }])
        }
        "set" => match args {
            [name, value] => {
                let name = name
                    .strip_prefix('$')
                    .ok_or_else(|| format!("set {name:?}: expected a $variable"))?;
                if crate::routing::edits::Var::parse(name, &[]).is_ok() {
                    return Err(format!("${name} is nginx's own variable; it cannot be set"));
                }
                // The value is read before the name is declared: `set $a "$a x"`
                // uses the old value, as nginx.
                let value = Template::parse_with(value, users)?;
                let slot = match users.iter().position(|u| u == name) {
                    Some(slot) => slot,
                    None => {
                        users.push(name.to_owned());
                        users.len() - 1
                    }
                };
                Ok(vec![Step::Set { slot, value }])
            }
            _ => Err("expected: set $NAME VALUE".into()),
        },
        "proxy_method" => match args {
            [method] => {
                let method = http::Method::from_bytes(method.as_bytes())
                    .map_err(|_| format!("{method:?} is not a method"))?;
                Ok(vec![Step::Method(method)])
            }
            _ => Err("expected: proxy_method METHOD".into()),
        },
        other => Err(format!("directive {other:?} is not interpreted by sluice")),
    }
}

fn request(edits: Vec<HeaderEdit>) -> Vec<Step> {
    edits.into_iter().map(Step::RequestHeader).collect()
}

fn response(edits: Vec<HeaderEdit>, always: bool) -> Vec<Step> {
    edits
        .into_iter()
        .map(|edit| Step::ResponseHeader { edit, always })
        .collect()
}

/// `'Name: value'` arguments (headers-more's syntax); options such as `-s`
/// and `-t` restrict by status or type, which sluice does not interpret.
fn headers_to_set(args: &[String], users: &[String]) -> Result<Vec<HeaderEdit>, String> {
    if args.iter().any(|a| a.starts_with('-')) {
        return Err("options -s, -t and -r are not interpreted".into());
    }
    if args.is_empty() {
        return Err("no header given".into());
    }
    args.iter()
        .map(|arg| {
            let (name, value) = arg.split_once(':').unwrap_or((arg, ""));
            Ok(HeaderEdit::Set(
                header_name(name.trim())?,
                Template::parse_with(value.trim(), users)?,
            ))
        })
        .collect()
}

fn headers_to_clear(args: &[String]) -> Result<Vec<HeaderEdit>, String> {
    if args.iter().any(|a| a.starts_with('-')) {
        return Err("options -s, -t and -r are not interpreted".into());
    }
    if args.is_empty() {
        return Err("no header given".into());
    }
    args.iter()
        .map(|name| match name.strip_suffix('*') {
            Some(prefix) => Ok(HeaderEdit::RemovePrefix(prefix.to_ascii_lowercase())),
            None => Ok(HeaderEdit::Remove(header_name(name)?)),
        })
        .collect()
}

/// Headers that frame the message are sluice's to set, never a snippet's.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

pub(super) fn header_name(name: &str) -> Result<HeaderName, String> {
    let header =
        HeaderName::try_from(name.trim()).map_err(|_| format!("{name:?} is not a header name"))?;
    if FRAMING.contains(&header.as_str()) {
        return Err(format!("{name} frames the message; sluice sets it"));
    }
    Ok(header)
}

fn return_step(args: &[String], users: &[String]) -> Result<Step, String> {
    let status = |code: &str| -> Result<StatusCode, String> {
        match code.parse::<u16>() {
            Ok(444) => Err("return 444 (close without answering) is not interpreted".into()),
            Ok(n) if (200..600).contains(&n) => StatusCode::from_u16(n).map_err(|e| e.to_string()),
            _ => Err(format!("{code:?} is not a status code")),
        }
    };
    match args {
        [code] if code.bytes().all(|b| b.is_ascii_digit()) => Ok(Step::Return {
            status: status(code)?,
            text: None,
        }),
        [url] if is_url(url) => Ok(Step::Return {
            status: StatusCode::FOUND,
            text: Some(Template::parse_with(url, users)?),
        }),
        [code, text] => Ok(Step::Return {
            status: status(code)?,
            text: Some(Template::parse_with(text, users)?),
        }),
        _ => Err("expected: return CODE [TEXT|URL] or return URL".into()),
    }
}

fn is_url(text: &str) -> bool {
    ["http://", "https://", "$scheme"]
        .iter()
        .any(|p| text.starts_with(p))
}

fn rewrite_step(args: &[String], users: &[String]) -> Result<Step, String> {
    let (pattern, replacement, flag) = match args {
        [p, r] => (p, r, None),
        [p, r, f] => (p, r, Some(f.as_str())),
        _ => return Err("expected: rewrite REGEX REPLACEMENT [FLAG]".into()),
    };
    let flag = match flag {
        None if is_url(replacement) => RewriteFlag::Redirect,
        None => RewriteFlag::Continue,
        Some("last" | "break") => RewriteFlag::Break,
        Some("redirect") => RewriteFlag::Redirect,
        Some("permanent") => RewriteFlag::Permanent,
        Some(other) => return Err(format!("unknown rewrite flag {other:?}")),
    };
    Ok(Step::Rewrite {
        pattern: tenant_regex(pattern)?,
        replacement: Template::parse_with(replacement, users)?,
        flag,
    })
}

fn condition(words: &[String], users: &[String]) -> Result<(Template, Test), String> {
    let variable = |word: &str| {
        if !word.starts_with('$') {
            return Err(format!("{word:?}: a condition tests a $variable"));
        }
        Template::parse_with(word, users)
    };
    match words {
        [subject] => Ok((variable(subject)?, Test::NonEmpty)),
        [subject, op, value] => {
            let subject = variable(subject)?;
            let test = match op.as_str() {
                "=" => Test::Equals(Template::parse_with(value, users)?, false),
                "!=" => Test::Equals(Template::parse_with(value, users)?, true),
                "~" | "!~" => Test::Matches(tenant_regex(value)?, op.starts_with('!')),
                "~*" | "!~*" => {
                    Test::Matches(tenant_regex(&format!("(?i){value}"))?, op.starts_with('!'))
                }
                other => return Err(format!("condition operator {other:?} is not interpreted")),
            };
            Ok((subject, test))
        }
        _ => Err("condition not interpreted (file tests and the like)".into()),
    }
}

fn access_rule(d: &Directive) -> Result<AccessRule, String> {
    let allow = d.name == "allow";
    match d.args.as_slice() {
        [all] if all == "all" => Ok(AccessRule { allow, from: None }),
        [range] => Ok(AccessRule {
            allow,
            from: Some(Cidr::parse(range)?),
        }),
        _ => Err(format!("expected: {} ADDRESS|CIDR|all", d.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_one(key: &str, text: &str) -> Compiled {
        compile(&BTreeMap::from([(
            format!("{NGINX_PREFIX}{key}"),
            text.to_owned(),
        )]))
    }

    #[test]
    fn common_snippets_compile_whole() {
        let c = compile_one(
            "configuration-snippet",
            r#"more_set_headers "X-Frame-Options: DENY" "X-Team: shop";
               proxy_set_header X-Forwarded-Proto https;
               add_header Cache-Control "no-store" always;
               if ($http_x_debug = "1") { return 403 "no debugging"; }
               rewrite ^/old/(.*)$ /new/$1 break;
               allow 10.0.0.0/8; deny all;"#,
        );
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        assert_eq!(c.fail_closed, None);
        let edits = c.edits.unwrap();
        assert_eq!(edits.steps.len(), 6);
        assert_eq!(edits.access.len(), 2);
    }

    #[test]
    fn unknown_directives_warn_and_access_fails_closed() {
        let c = compile_one(
            "configuration-snippet",
            "proxy_buffering off; more_set_headers 'A: b';",
        );
        assert_eq!(c.notices.len(), 1);
        assert!(
            c.notices[0].message.contains("proxy_buffering"),
            "{:?}",
            c.notices
        );
        assert!(c.fail_closed.is_none());
        assert_eq!(c.edits.unwrap().steps.len(), 1);

        let c = compile_one("server-snippet", "location /metrics { deny all; }");
        assert_eq!(
            c.fail_closed.as_deref(),
            Some("nginx.ingress.kubernetes.io/server-snippet (deny)")
        );
        let c = compile_one(
            "configuration-snippet",
            "auth_request /auth; more_set_headers 'A: b';",
        );
        assert!(c.fail_closed.unwrap().contains("auth_request"));
        let c = compile_one("configuration-snippet", "satisfy any; deny all");
        assert!(c.fail_closed.is_some(), "unreadable and access: closed");
        let c = compile_one(
            "configuration-snippet",
            "more_set_headers 'Content-Length: 0';",
        );
        assert!(c.notices[0].message.contains("frames"), "{:?}", c.notices);
    }
}
