//! The canary annotations (`canary`, `canary-by-*`, `canary-weight*`),
//! read together.

use std::collections::BTreeMap;

use super::*;

pub(super) fn parse_canary(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<CanaryRule>, AnnotationError> {
    match lookup(annotations, "canary") {
        Some((key, value)) if !parse_bool(value).map_err(|e| invalid_at(key, e))? => {
            return Ok(None)
        }
        None => return Ok(None),
        Some(_) => {}
    }
    let mut rule = CanaryRule {
        weight_total: 100,
        ..CanaryRule::default()
    };
    if let Some((key, name)) = lookup(annotations, "canary-by-header") {
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| invalid_at(key, format!("{name:?} is not a header name")))?;
        let matching = if let Some((_, value)) = lookup(annotations, "canary-by-header-value") {
            HeaderMatch::Value(value.to_owned())
        } else if let Some((key, pattern)) = lookup(annotations, "canary-by-header-pattern") {
            HeaderMatch::Pattern(tenant_regex(pattern).map_err(|e| invalid_at(key, e))?)
        } else {
            HeaderMatch::AlwaysNever
        };
        rule.header = Some((name, matching));
    }
    rule.cookie = lookup(annotations, "canary-by-cookie").map(|(_, v)| v.trim().to_owned());
    let number = |name: &str| -> Result<Option<u32>, AnnotationError> {
        lookup(annotations, name)
            .map(|(key, v)| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| invalid_at(key, format!("{v:?} is not a whole number")))
            })
            .transpose()
    };
    rule.weight = number("canary-weight")?;
    if let Some(total) = number("canary-weight-total")? {
        rule.weight_total = total.max(1);
    }
    if let Some((key, ranges)) = lookup(annotations, "canary-by-source-cidr") {
        rule.sources = ranges
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid_at(key, e))?;
    }
    if let Some((key, pattern)) = lookup(annotations, "canary-by-user-agent") {
        rule.user_agent = Some(tenant_regex(pattern).map_err(|e| invalid_at(key, e))?);
    }
    if let Some((key, sticky)) = lookup(annotations, "canary-sticky-by") {
        rule.sticky = Some(HashBy::parse_key(sticky).map_err(|e| invalid_at(key, e))?);
    }
    Ok(Some(rule))
}
