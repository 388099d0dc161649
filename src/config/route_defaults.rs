//! The per-route defaults: what the config says for every route, and what
//! an Ingress's annotations can override (`discovery::annotations`).

use std::sync::Arc;
use std::time::Duration;

use super::{Config, OnOff};
use crate::balance::policy::BalancePolicy;
use crate::policy::access::AccessList;
use crate::policy::retry::RetryPolicy;

/// Per-route settings that annotations can override.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyDefaults {
    pub proxy_connect_timeout: Duration,
    pub proxy_read_timeout: Duration,
    pub proxy_send_timeout: Duration,
    pub proxy_body_size: u64,
    pub ssl_redirect: bool,
    pub force_ssl_redirect: bool,
    /// Shared by every route that does not override it.
    pub balance: Arc<BalancePolicy>,
    pub retry: RetryPolicy,
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_second: u32,
    pub custom_http_errors: Vec<u16>,
    pub hide_headers: Vec<http::HeaderName>,
    /// `add-headers` and `proxy-set-headers`: (namespace, name) of ConfigMaps.
    pub add_headers: Option<(String, String)>,
    pub proxy_set_headers: Option<(String, String)>,
    /// `global-allowed-response-headers`, lowercase.
    pub allowed_response_headers: Vec<String>,
    /// `proxy-add-original-uri-header`.
    pub original_uri_header: bool,
    /// `no-auth-locations`: rule path prefixes no `auth-url` guards.
    pub no_auth_locations: Vec<String>,
    /// `whitelist-source-range` and `denylist-source-range`: the default of
    /// an Ingress's address list.
    pub access: AccessList,
    pub limit_rate: Option<(u64, u64)>,
    /// `proxy-request-buffering: on`.
    pub request_buffering: bool,
    pub client_body_buffer_size: u64,
}

impl Default for ProxyDefaults {
    fn default() -> Self {
        Config::default().proxy_defaults()
    }
}

/// `custom-http-errors`: comma-separated statuses (400 to 599), at most 64.
pub fn parse_status_list(value: &str) -> Result<Vec<u16>, String> {
    let mut codes = Vec::new();
    for code in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match code.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => codes.push(code),
            _ => return Err(format!("{code:?} is not an error status (400 to 599)")),
        }
    }
    if codes.len() > 64 {
        return Err("more than 64 statuses".into());
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

/// `hide-headers`: comma-separated header names.
pub(super) fn parse_header_list(value: &str) -> Result<Vec<http::HeaderName>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| http::HeaderName::try_from(n).map_err(|_| format!("{n:?} is not a header name")))
        .collect()
}

/// `namespace/name` of a Secret.
pub fn parse_secret_ref(s: &str) -> Option<(String, String)> {
    let (namespace, name) = s.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (namespace.to_owned(), name.to_owned()))
}

impl Config {
    pub fn proxy_defaults(&self) -> ProxyDefaults {
        let balance = BalancePolicy {
            algorithm: self.load_balance,
            hash_by: None,
            hash_subset: None,
            breaker: Arc::new(self.circuit_breaker.clone()),
            decay: self.ewma_decay,
            slow_start: self.slow_start,
            max_ejection_percent: self.max_ejection_percent,
        };
        ProxyDefaults {
            proxy_connect_timeout: self.proxy_connect_timeout,
            proxy_read_timeout: self.proxy_read_timeout,
            proxy_send_timeout: self.proxy_send_timeout,
            proxy_body_size: self.proxy_body_size,
            ssl_redirect: self.ssl_redirect,
            force_ssl_redirect: self.force_ssl_redirect,
            balance: Arc::new(balance),
            retry: RetryPolicy {
                next_upstream: self.proxy_next_upstream,
                tries: self.proxy_next_upstream_tries,
                timeout: (!self.proxy_next_upstream_timeout.is_zero())
                    .then_some(self.proxy_next_upstream_timeout),
            },
            retry_budget_ratio: self.retry_budget_ratio,
            retry_budget_min_per_second: self.retry_budget_min_per_second,
            // Checked by `validate`.
            custom_http_errors: parse_status_list(&self.custom_http_errors).unwrap_or_default(),
            hide_headers: parse_header_list(&self.hide_headers).unwrap_or_default(),
            // Checked by `validate`.
            add_headers: self.add_headers.as_deref().and_then(parse_secret_ref),
            proxy_set_headers: self.proxy_set_headers.as_deref().and_then(parse_secret_ref),
            original_uri_header: self.proxy_add_original_uri_header,
            no_auth_locations: (self.no_auth_locations.split(','))
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            access: AccessList {
                deny: self.denylist_source_range.0.clone(),
                allow: self.whitelist_source_range.0.clone(),
            },
            allowed_response_headers: (self.global_allowed_response_headers.split(','))
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            limit_rate: (self.limit_rate > 0).then_some((self.limit_rate, self.limit_rate_after)),
            request_buffering: self.proxy_request_buffering == OnOff::On,
            client_body_buffer_size: self.client_body_buffer_size,
        }
    }
}
