//! Headers from the config and from ConfigMaps, as ingress-nginx sets
//! them: `hide-headers`, `proxy-add-original-uri-header`, the config's
//! `add-headers` (set on every answer) and `proxy-set-headers` (set on every
//! upstream request), and an Ingress's `custom-headers` (set on its
//! answers). A `custom-headers` ConfigMap must be in the Ingress's own
//! namespace, and may set only the names `global-allowed-response-headers`
//! lists: else the Ingress's routes answer 503, as ingress-nginx's denied
//! location does, with a warning.
//!
//! Values may use nginx's `$variables`, as `more_set_headers` and
//! `proxy_set_header` expand them.

use std::collections::HashMap;

use http::header::HeaderName;
use k8s_openapi::api::core::v1::ConfigMap;

use super::index::namespace_of;
use crate::config::ProxyDefaults;
use crate::discovery::{Snapshot, Warning};
use crate::routing::edits::{HeaderEdit, Step, Template};

/// Most headers one ConfigMap may set.
const MAX_HEADERS: usize = 128;

pub(super) struct ConfigMapHeaders<'a> {
    maps: HashMap<(&'a str, &'a str), &'a ConfigMap>,
    /// `hide-headers`, `add-headers`, `proxy-set-headers`: before every
    /// Ingress's own edits.
    pub(super) global: Vec<Step>,
}

impl<'a> ConfigMapHeaders<'a> {
    pub(super) fn new(
        snapshot: &'a Snapshot,
        defaults: &ProxyDefaults,
        warnings: &mut Vec<Warning>,
    ) -> ConfigMapHeaders<'a> {
        let maps = (snapshot.config_maps.iter())
            .filter_map(|m| {
                Some((
                    (namespace_of(&m.metadata), m.metadata.name.as_deref()?),
                    &**m,
                ))
            })
            .collect();
        let mut headers = ConfigMapHeaders {
            maps,
            global: Vec::new(),
        };
        // nginx's http-level `proxy_hide_header`.
        headers.global = (defaults.hide_headers.iter())
            .map(|name| Step::ResponseHeader {
                edit: HeaderEdit::Remove(name.clone()),
                always: true,
            })
            .collect();
        if defaults.original_uri_header {
            if let Ok(uri) = Template::parse("$request_uri") {
                let name = HeaderName::from_static("x-original-uri");
                headers
                    .global
                    .push(Step::RequestHeader(HeaderEdit::Set(name, uri)));
            }
        }
        let sets = [
            ("add-headers", &defaults.add_headers, true),
            ("proxy-set-headers", &defaults.proxy_set_headers, false),
        ];
        for (key, reference, response) in sets {
            let Some((namespace, name)) = reference else {
                continue;
            };
            match headers.read(namespace, name) {
                Ok(pairs) => {
                    let steps = pairs.into_iter().map(|(name, value)| {
                        let edit = HeaderEdit::Set(name, value);
                        match response {
                            true => Step::ResponseHeader { edit, always: true },
                            false => Step::RequestHeader(edit),
                        }
                    });
                    let steps: Vec<Step> = steps.collect();
                    headers.global.extend(steps);
                }
                Err(message) => warnings.push(Warning {
                    file: None,
                    object: None,
                    field: Some(key.to_owned()),
                    reason: "invalid-config-map",
                    message: format!("{key}: {message}; no headers set"),
                }),
            }
        }
        headers
    }

    /// An Ingress's `custom-headers`: the steps that set them, or why its
    /// routes answer 503.
    pub(super) fn custom(
        &self,
        ingress_namespace: &str,
        (namespace, name): &(Option<String>, String),
        allowed: &[String],
    ) -> Result<Vec<Step>, String> {
        let namespace = namespace.as_deref().unwrap_or(ingress_namespace);
        if namespace != ingress_namespace {
            return Err(format!("the ConfigMap {namespace}/{name} is in another namespace; only the Ingress's own may be named"));
        }
        let pairs = self.read(namespace, name)?;
        if let Some((name, _)) = pairs
            .iter()
            .find(|(n, _)| !allowed.iter().any(|a| a == n.as_str()))
        {
            return Err(format!(
                "header {name} is not listed in the config's global-allowed-response-headers"
            ));
        }
        Ok(pairs
            .into_iter()
            .map(|(name, value)| Step::ResponseHeader {
                edit: HeaderEdit::Set(name, value),
                always: true,
            })
            .collect())
    }

    /// An Ingress's `auth-proxy-set-headers`: the headers the authentication
    /// service gets, from a ConfigMap of its own namespace.
    pub(super) fn for_auth(
        &self,
        ingress_namespace: &str,
        (namespace, name): &(Option<String>, String),
    ) -> Result<Vec<(HeaderName, Template)>, String> {
        let namespace = namespace.as_deref().unwrap_or(ingress_namespace);
        if namespace != ingress_namespace {
            return Err(format!("the ConfigMap {namespace}/{name} is in another namespace; only the Ingress's own may be named"));
        }
        self.read(namespace, name)
    }

    /// The headers a ConfigMap lists, checked as ingress-nginx checks them.
    fn read(&self, namespace: &str, name: &str) -> Result<Vec<(HeaderName, Template)>, String> {
        let map = self
            .maps
            .get(&(namespace, name))
            .ok_or_else(|| format!("ConfigMap {namespace}/{name} not found"))?;
        let data = map.data.as_ref().ok_or_else(|| {
            format!("ConfigMap {namespace}/{name} has no data (or more than sluice reads)")
        })?;
        if data.len() > MAX_HEADERS {
            return Err(format!(
                "ConfigMap {namespace}/{name} lists more than {MAX_HEADERS} headers"
            ));
        }
        data.iter()
            .map(|(key, value)| {
                let valid_name = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                let name = HeaderName::try_from(key.as_str())
                    .ok()
                    .filter(|_| valid_name)
                    .ok_or_else(|| format!("{key:?} in {namespace}/{name} is not a header name"))?;
                let valid_value =
                    !value.is_empty() && value.bytes().all(|b| (b' '..=b'~').contains(&b));
                if !valid_value {
                    return Err(format!(
                        "the value of {key} in {namespace}/{name} is not a header value"
                    ));
                }
                let value = Template::parse(value)
                    .map_err(|e| format!("the value of {key} in {namespace}/{name}: {e}"))?;
                Ok((name, value))
            })
            .collect()
    }
}
