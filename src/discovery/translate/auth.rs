//! `auth-url`: the service's backend, as `mirror-target`'s.
//!
//! `auth-type: basic`: the users of an Ingress's `auth-secret`, read from
//! its own namespace only. A Secret that is missing, of another namespace,
//! or without a valid user list makes the Ingress's routes answer 503 with
//! a warning, as ingress-nginx's denied location: never open.

use std::sync::Arc;

use super::parse::Field;
use super::Builder;
use crate::config::ForeignKey;
use crate::discovery::annotations::{global_auth, BasicAuthSpec, ExternalAuthSpec};
use crate::discovery::{ObjectRef, Warning};
use crate::policy::basic_auth::BasicAuth;
use crate::policy::digest_auth::DigestAuth;
use crate::routing::{
    Backend, BackendRef, ExternalAuth, ExternalAuthRequest, IngressRef, Passwords, Protocol,
};

impl Builder<'_> {
    /// The Ingress's basic or digest authentication, or why its routes
    /// answer 503.
    pub(super) fn basic_auth(
        &mut self,
        spec: &BasicAuthSpec,
        object: &ObjectRef,
    ) -> Result<Passwords, ()> {
        let read = || -> Result<Passwords, String> {
            let (namespace, name) = spec
                .secret
                .as_ref()
                .ok_or("auth-type without auth-secret")?;
            let namespace = namespace.as_deref().unwrap_or(&object.namespace);
            if namespace != object.namespace {
                return Err(format!("auth-secret {namespace}/{name} is in another namespace; only the Ingress's own may be named"));
            }
            let secret = self
                .index
                .secrets
                .get(&(namespace, name.as_str()))
                .ok_or_else(|| format!("auth-secret {namespace}/{name} not found"))?;
            let text =
                |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned());
            // `auth-map`: a key per user, its value the rest of the line.
            let file = if spec.map {
                let mut lines = String::new();
                for key in super::index::secret_keys(secret) {
                    let value = super::index::secret_key(secret, &key).unwrap_or_default();
                    lines += &format!("{key}:{}\n", text(value)?.trim());
                }
                lines
            } else {
                let file = super::index::secret_key(secret, "auth")
                    .ok_or_else(|| format!("auth-secret {namespace}/{name} has no key auth"))?;
                text(file)?
            };
            Ok(if spec.digest {
                Passwords::Digest(Arc::new(DigestAuth::from_file(&spec.realm, &file)?))
            } else {
                Passwords::Basic(Arc::new(BasicAuth::from_file(&spec.realm, &file)?))
            })
        };
        read().map_err(|message| {
            let message =
                format!("{message}; the Ingress's routes answer 503, as in ingress-nginx");
            self.warn(
                Some((object, Field::Annotations)),
                "invalid-auth-secret",
                message,
            );
        })
    }
}

impl Builder<'_> {
    /// An Ingress's `auth-url` service. One that cannot be spoken to has no
    /// address: every request is then answered 500, never let through.
    pub(super) fn external_auth(
        &mut self,
        spec: &ExternalAuthSpec,
        ingress: &IngressRef,
        object: &ObjectRef,
    ) -> Arc<ExternalAuth> {
        let named = spec.internal.is_none();
        let backend = named
            .then(|| {
                self.url_backend(
                    ("auth-url", "auth"),
                    &spec.host,
                    spec.port,
                    spec.tls,
                    ingress,
                    object,
                )
            })
            .flatten()
            .unwrap_or_else(|| {
                let name = BackendRef {
                    namespace: ingress.namespace.clone(),
                    service: format!("auth {}", spec.host),
                    port: spec.port.to_string(),
                    via_service_ip: false,
                };
                let budget = (
                    self.defaults.retry_budget_ratio,
                    self.defaults.retry_budget_min_per_second,
                );
                let state = self.retained.backend(&name, Protocol::Http1, budget);
                Arc::new(Backend::new(name, Protocol::Http1, Vec::new(), state))
            });
        let host = match spec.port {
            80 | 443 => spec.host.clone(),
            port => format!("{}:{port}", spec.host),
        };
        let metrics = self.request_metrics(
            &ingress.namespace,
            &ingress.name,
            &backend.name.service,
            false,
        );
        Arc::new(ExternalAuth {
            backend,
            spec: ExternalAuthRequest {
                path: spec.path.clone(),
                host: http::HeaderValue::try_from(host)
                    .unwrap_or(http::HeaderValue::from_static("localhost")),
                method: spec.method.clone(),
                signin: spec.signin.clone(),
                redirect_param: spec.redirect_param.clone(),
                response_headers: spec.response_headers.clone(),
                request_redirect: spec.request_redirect.clone(),
                always_set_cookie: spec.always_set_cookie,
                internal: spec.internal.clone(),
                set_headers: spec.set_headers.clone(),
                // Kept across rebuilds: a table swap does not send every
                // client back to the service at once.
                cache: (spec.cache.as_ref()).map(|(key, durations)| {
                    (key.clone(), self.retained.auth_cache(ingress, durations))
                }),
            },
            metrics,
        })
    }
}

impl Builder<'_> {
    /// The config's `global-auth-*` keys as one service for every route; a
    /// value that cannot be honoured makes every route answer 403.
    pub(super) fn global_auth(&mut self, keys: &[ForeignKey]) -> Option<Arc<ExternalAuth>> {
        let pairs: Vec<(&str, &str)> = keys
            .iter()
            .filter(|k| k.key.starts_with("global-auth-"))
            .map(|k| (k.key.as_str(), k.value.as_str()))
            .collect();
        let object = ObjectRef {
            kind: "ConfigMap",
            namespace: String::new(),
            name: "global-auth-url".into(),
        };
        match global_auth(&pairs) {
            Ok(spec) => {
                let ingress = IngressRef {
                    namespace: String::new(),
                    name: String::new(),
                    kind: "Ingress",
                };
                spec.map(|spec| self.external_auth(&spec, &ingress, &object))
            }
            Err(message) => {
                self.deny_all.get_or_insert_with(|| {
                    "403 Forbidden: the config's global authentication cannot be honoured; denied\n".into()
                });
                self.warnings.push(Warning {
                    file: None,
                    object: None,
                    field: Some("config global-auth-url".into()),
                    reason: "fail-closed",
                    message: format!("{message}; every route answers 403 until it is fixed"),
                });
                None
            }
        }
    }
}
