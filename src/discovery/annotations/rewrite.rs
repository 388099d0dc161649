//! `use-regex`, `rewrite-target` and `x-forwarded-prefix`, as ingress-nginx
//! writes them: a path of a regex Ingress is a case-insensitive regular
//! expression anchored at the start (and puts its whole host in regex mode,
//! `routing::regex_paths`); `rewrite-target` becomes, after the
//! configuration snippet, `rewrite "(?i)PATH" TARGET break;` (unanchored, as
//! nginx has it), with `X-Forwarded-Prefix` set when asked.

use std::sync::Arc;

use http::HeaderName;

use super::tenant_regex;
use crate::routing::edits::{Edits, HeaderEdit, RewriteFlag, Step, Template};

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// `use-regex: "true"`.
    pub use_regex: bool,
    /// `rewrite-target`, as written (compared with each path) and parsed.
    pub target: Option<(String, Template)>,
    /// `x-forwarded-prefix`: sent upstream with a rewrite.
    pub x_forwarded_prefix: Option<Template>,
}

impl Rewrite {
    /// Whether this path is a regular expression and puts its host in regex
    /// mode (ingress-nginx's `enforceRegexModifier`).
    pub fn regex_for(&self, path: &str) -> bool {
        self.use_regex || self.rewrites(path)
    }

    /// A target equal to the path rewrites nothing (`needsRewrite`).
    fn rewrites(&self, path: &str) -> bool {
        self.target.as_ref().is_some_and(|(text, _)| text != path)
    }

    /// The edits of a route for `path`: the Ingress's own (its snippets),
    /// then the rewrite. An error when the path is no regular expression.
    pub fn edits_for(
        &self,
        path: &str,
        snippets: &Option<Arc<Edits>>,
    ) -> Result<Option<Arc<Edits>>, String> {
        if self.regex_for(path) {
            tenant_regex(&format!("(?i)^{path}"))
                .map_err(|e| format!("path {path:?} is not a regular expression: {e}"))?;
        }
        let Some((_, target)) = self.target.as_ref().filter(|_| self.rewrites(path)) else {
            return Ok(snippets.clone());
        };
        let mut after = vec![Step::Rewrite {
            pattern: tenant_regex(&format!("(?i){path}"))?,
            replacement: target.clone(),
            flag: RewriteFlag::Break,
        }];
        if let Some(prefix) = &self.x_forwarded_prefix {
            let edit = HeaderEdit::Set(X_FORWARDED_PREFIX.clone(), prefix.clone());
            after.push(Step::RequestHeader(edit));
        }
        Ok(Edits::around(snippets, Vec::new(), after))
    }
}
