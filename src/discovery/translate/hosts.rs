//! What `translate` adds to hosts beyond their Ingress rules: the default
//! backend's route for `custom-http-errors`, the other name of a
//! `from-to-www-redirect` host, and, once every rule is in, the regex mode
//! of hosts whose Ingresses ask for it.

use std::sync::Arc;

use super::parse::{Field, ParsedIngress};
use super::Builder;
use crate::discovery::{ObjectRef, Warning};
use crate::routing::edits::{Edits, Step, Template, Var};
use crate::routing::{Backend, ErrorPages, Filters, HostRoutes, IngressRef, Route};

impl Builder<'_> {
    /// `custom-http-errors` (the Ingress's, else the global ones): answered by
    /// its `default-backend`, else by the global default backend.
    pub(super) fn error_pages(
        &mut self,
        parsed: &ParsedIngress,
        fallback: &Option<Arc<Backend>>,
    ) -> Option<Arc<ErrorPages>> {
        let codes = parsed
            .custom_errors
            .clone()
            .unwrap_or_else(|| self.defaults.custom_http_errors.clone());
        if codes.is_empty() {
            return None;
        }
        let route = match fallback {
            Some(backend) => Arc::new(Route {
                ingress: parsed.ingress.clone(),
                metrics: self.request_metrics(
                    &parsed.ingress.namespace,
                    &parsed.ingress.name,
                    &backend.name.service,
                    false,
                ),
                backend: backend.clone(),
                filters: Filters::default(),
                fallback: None,
                policy: parsed.policy.clone(),
            }),
            None => match &self.default_route {
                Some(route) => route.clone(),
                None => {
                    if parsed.custom_errors.is_some() {
                        let message = "custom-http-errors has no default backend to answer (neither the default-backend annotation nor the default-backend config key); the statuses pass through".to_owned();
                        self.warn(
                            Some((&parsed.object, Field::Annotations)),
                            "annotation-differs",
                            message,
                        );
                    }
                    return None;
                }
            },
        };
        Some(Arc::new(ErrorPages { codes, route }))
    }

    /// Ends the hosts: `from-to-www-redirect` names no Ingress routes get
    /// their redirect, and hosts in regex mode get their patterns compiled.
    pub(super) fn finish_hosts(&mut self) {
        // `from-to-www-redirect`: the other name answers with a redirect,
        // unless an Ingress routes it.
        for (other, redirect) in std::mem::take(&mut self.www) {
            if let std::collections::btree_map::Entry::Vacant(entry) = self.hosts.entry(other) {
                let mut routes = HostRoutes::default();
                let _ = routes.set_default(redirect);
                entry.insert(routes);
            }
        }
        // Hosts in ingress-nginx's regex mode get their patterns compiled.
        for (host, routes) in &mut self.hosts {
            let mode = routes.finish();
            let object = |ingress: &IngressRef| {
                Some(ObjectRef {
                    kind: "Ingress",
                    namespace: ingress.namespace.clone(),
                    name: ingress.name.clone(),
                })
            };
            for (route, why) in mode.invalid {
                self.warnings.push(Warning {
                    file: None,
                    object: object(&route.ingress),
                    field: None,
                    reason: "invalid-path",
                    message: format!("host {host} is matched by regular expressions (an Ingress of it has use-regex or rewrite-target): {why}; path not served"),
                });
            }
            // Never silently: another Ingress's annotation changed how this
            // one's paths match (ingress-nginx's host-wide regex mode).
            if !mode.affected.is_empty() {
                let by: Vec<String> = mode.by.iter().map(ToString::to_string).collect();
                for ingress in &mode.affected {
                    self.warnings.push(Warning {
                        file: None,
                        object: object(ingress),
                        field: None,
                        reason: "host-regex-mode",
                        message: format!("host {host} is matched by regular expressions because {} use use-regex or rewrite-target (ingress-nginx's host-wide regex mode): this Ingress's paths match case-insensitively, as prefixes (Exact paths too)", by.join(", ")),
                    });
                }
            }
        }
    }
}

/// ingress-nginx's redirect server for `from-to-www-redirect`: 308 to the
/// host, with the request's URI less one trailing `/`.
pub(super) fn www_redirect(host: &str) -> Arc<Edits> {
    let target = Template::text_then(&format!("://{host}"), Var::RequestUriTrimmed);
    let scheme = Template::text_then("", Var::Scheme);
    let step = Step::Return {
        status: http::StatusCode::PERMANENT_REDIRECT,
        text: Some(scheme.then(target)),
    };
    Edits::of(step)
}
