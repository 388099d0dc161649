//! Limits: `sluice.io/limit-*` (the Ingress as a whole, or per
//! `limit-key`) and ingress-nginx's `limit-*` (per client address); the
//! response pace (`limit-rate`); request buffering.

use std::collections::BTreeMap;

use super::*;
use crate::policy::access::parse_cidrs;

/// `sluice.io/limit-*` limit the Ingress as a whole (or per `limit-key`);
/// ingress-nginx's `limit-*` keep their per-client-address meaning.
pub(super) fn parse_limit(
    annotations: &BTreeMap<String, String>,
) -> Result<(Option<LimitSpec>, bool), AnnotationError> {
    let get = |prefix: &str, name: &str| {
        let key = format!("{prefix}{name}");
        annotations.get(&key).map(|v| (key, v.trim().to_owned()))
    };
    let rate = |prefix: &str| -> Result<Option<f64>, AnnotationError> {
        let number = |name: &str| -> Result<Option<f64>, AnnotationError> {
            get(prefix, name)
                .map(|(key, v)| match v.parse::<f64>() {
                    Ok(n) if n > 0.0 => Ok(n),
                    _ => Err(invalid_at(&key, format!("{v:?} is not a positive number"))),
                })
                .transpose()
        };
        let rps = number("limit-rps")?;
        let rpm = number("limit-rpm")?.map(|m| m / 60.0);
        // Both: the stricter.
        Ok(match (rps, rpm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    };
    let exempt = |prefix: &str| -> Result<Vec<Cidr>, AnnotationError> {
        match get(prefix, "limit-whitelist") {
            Some((key, list)) => parse_cidrs(&list).map_err(|e| invalid_at(&key, e)),
            None => Ok(Vec::new()),
        }
    };
    if let Some(per_second) = rate(SLUICE_PREFIX)? {
        let burst = match get(SLUICE_PREFIX, "limit-burst") {
            Some((key, v)) => v
                .parse::<u32>()
                .map_err(|_| invalid_at(&key, format!("{v:?} is not a whole number")))?,
            // One second's worth.
            None => per_second.ceil() as u32,
        };
        let key = match get(SLUICE_PREFIX, "limit-key") {
            None => LimitKey::Ingress,
            Some((_, v)) if v == "ingress" => LimitKey::Ingress,
            Some((_, v)) if v == "client-ip" => LimitKey::ClientIp,
            Some((key, v)) => match v.strip_prefix("header:").map(HeaderName::try_from) {
                Some(Ok(name)) => LimitKey::Header(name),
                _ => {
                    return Err(invalid_at(
                        &key,
                        format!("{v:?}: expected client-ip or header:NAME"),
                    ))
                }
            },
        };
        let cluster = match get(SLUICE_PREFIX, "limit-scope") {
            None => false,
            Some((_, v)) if v == "instance" => false,
            Some((_, v)) if v == "cluster" => true,
            Some((key, v)) => {
                return Err(invalid_at(
                    &key,
                    format!("{v:?}: expected instance or cluster"),
                ))
            }
        };
        let mut whitelist = exempt(SLUICE_PREFIX)?;
        whitelist.extend(exempt(NGINX_PREFIX)?);
        let spec = LimitSpec {
            per_second,
            burst,
            key,
            exempt: whitelist,
        };
        return Ok((Some(spec), cluster));
    }
    if let Some(per_second) = rate(NGINX_PREFIX)? {
        let multiplier = match get(NGINX_PREFIX, "limit-burst-multiplier") {
            Some((key, v)) => v
                .parse::<u32>()
                .map_err(|_| invalid_at(&key, format!("{v:?} is not a whole number")))?,
            None => 5,
        };
        let spec = LimitSpec {
            per_second,
            burst: (per_second * f64::from(multiplier)).ceil() as u32,
            key: LimitKey::ClientIp,
            exempt: exempt(NGINX_PREFIX)?,
        };
        return Ok((Some(spec), false));
    }
    Ok((None, false))
}

/// `limit-rate` (kilobytes a second, as ingress-nginx writes `limit_rate
/// Nk`; 0: none, whatever the ConfigMap says) and `limit-rate-after`
/// (kilobytes sent at full speed).
pub(super) fn parse_limit_rate(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<(u64, u64)>, AnnotationError> {
    let kilobytes = |name: &str| -> Result<u64, AnnotationError> {
        match lookup(annotations, name) {
            None => Ok(0),
            Some((key, value)) => value
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|k| k.checked_mul(1024))
                .ok_or_else(|| invalid_at(key, format!("{value:?} is not a number of kilobytes"))),
        }
    };
    if lookup(annotations, "limit-rate").is_none() {
        return Ok(None);
    }
    // A rate of 0 is kept: it turns the ConfigMap's limit off for this Ingress.
    Ok(Some((
        kilobytes("limit-rate")?,
        kilobytes("limit-rate-after")?,
    )))
}

/// `proxy-request-buffering` (`on` / `off`) and `client-body-buffer-size`;
/// `None` keeps the ConfigMap's.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestBuffering {
    pub on: Option<bool>,
    pub memory: Option<u64>,
}

impl RequestBuffering {
    /// The route's: bytes kept in memory when buffering, else `None`.
    pub fn policy(&self, defaults: &ProxyDefaults) -> Option<u64> {
        self.on
            .unwrap_or(defaults.request_buffering)
            .then(|| self.memory.unwrap_or(defaults.client_body_buffer_size))
    }
}

pub(super) fn parse_request_buffering(
    annotations: &BTreeMap<String, String>,
) -> Result<RequestBuffering, AnnotationError> {
    let mut buffering = RequestBuffering::default();
    if let Some((key, value)) = lookup(annotations, "proxy-request-buffering") {
        buffering.on = Some(match value.trim() {
            "on" => true,
            "off" => false,
            other => return Err(invalid_at(key, format!("{other:?}: expected on or off"))),
        });
    }
    if let Some((key, value)) = lookup(annotations, "client-body-buffer-size") {
        buffering.memory = Some(parse_size(value).map_err(|e| invalid_at(key, e.to_string()))?);
    }
    Ok(buffering)
}

/// `limit-connections`: requests in progress at once per client address,
/// with the `limit-whitelist` ranges exempt (as ingress-nginx, which keys
/// every limit of the Ingress by the same whitelisted address).
pub(super) fn parse_limit_connections(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<(u32, Vec<Cidr>)>, AnnotationError> {
    let Some((key, value)) = lookup(annotations, "limit-connections") else {
        return Ok(None);
    };
    let max = value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid_at(key, format!("{value:?} is not a positive whole number")))?;
    let exempt = match lookup(annotations, "limit-whitelist") {
        Some((key, list)) => parse_cidrs(list).map_err(|e| invalid_at(key, e))?,
        None => Vec::new(),
    };
    Ok(Some((max, exempt)))
}
