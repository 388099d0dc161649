//! Address lists: `denylist-source-range` and `whitelist-source-range`
//! (or its new name, `allowlist-source-range`), comma-separated ranges. An
//! Ingress without its own takes the ConfigMap's. A list that does not
//! parse refuses everyone (403), with a warning: an access rule fails
//! closed, never open.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{lookup, Notice};
use crate::policy::access::{parse_cidrs, AccessList};
use crate::policy::canary::Cidr;

/// The Ingress's own lists; `None` keeps the ConfigMap's.
#[derive(Debug, Clone, Default)]
pub struct Access {
    allow: Option<Vec<Cidr>>,
    deny: Option<Vec<Cidr>>,
    invalid: bool,
}

impl Access {
    /// The route's list, over the ConfigMap's `defaults`; `None`: open.
    pub fn list(&self, defaults: &AccessList) -> Option<Arc<AccessList>> {
        if self.invalid {
            return Some(Arc::new(AccessList::nobody()));
        }
        let list = AccessList {
            deny: self.deny.clone().unwrap_or_else(|| defaults.deny.clone()),
            allow: self.allow.clone().unwrap_or_else(|| defaults.allow.clone()),
        };
        (!list.is_empty()).then(|| Arc::new(list))
    }
}

pub(super) fn parse_access(
    annotations: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> Access {
    let mut access = Access::default();
    let mut read = |name: &str| -> Option<Vec<Cidr>> {
        let (key, value) = lookup(annotations, name)?;
        match parse_cidrs(value) {
            Ok(list) => Some(list),
            Err(error) => {
                access.invalid = true;
                notices.push(Notice {
                    key: key.to_owned(),
                    reason: "invalid-access-list",
                    message: format!(
                        "{key}: {error}; every request is refused (403) until it is fixed"
                    ),
                });
                None
            }
        }
    };
    // ingress-nginx reads the new name first.
    let allow = read("allowlist-source-range").or_else(|| read("whitelist-source-range"));
    let deny = read("denylist-source-range");
    access.allow = allow;
    access.deny = deny;
    access
}

/// `satisfy: any` (else `all`, nginx's default): either the address list
/// or the authentication admits a request. Any other value keeps `all`,
/// the stricter, with a warning.
pub(super) fn parse_satisfy(
    annotations: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> bool {
    match lookup(annotations, "satisfy") {
        None => false,
        Some((_, value)) if value.trim() == "any" => true,
        Some((_, value)) if value.trim() == "all" => false,
        Some((key, value)) => {
            notices.push(Notice {
                key: key.to_owned(),
                reason: "annotation-differs",
                message: format!("{key}: {value:?} is not any or all; all applies"),
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> (Access, Vec<Notice>) {
        let map = pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect();
        let mut notices = Vec::new();
        (parse_access(&map, &mut notices), notices)
    }

    #[test]
    fn own_lists_win_over_the_configmaps_and_bad_ones_close() {
        let global = AccessList {
            deny: parse_cidrs("192.0.2.0/24").unwrap(),
            allow: parse_cidrs("10.0.0.0/8").unwrap(),
        };
        let (none, _) = parse(&[]);
        assert_eq!(none.list(&global).as_deref(), Some(&global));
        assert_eq!(none.list(&AccessList::default()), None, "open");
        let (own, _) = parse(&[("whitelist-source-range", "172.16.0.0/12")]);
        let list = own.list(&global).unwrap();
        assert_eq!(list.allow, parse_cidrs("172.16.0.0/12").unwrap());
        assert_eq!(list.deny, global.deny, "the ConfigMap's deny list stays");
        let (both, _) = parse(&[
            ("allowlist-source-range", "10.1.0.0/16"),
            ("whitelist-source-range", "10.2.0.0/16"),
        ]);
        assert_eq!(
            both.list(&global).unwrap().allow,
            parse_cidrs("10.1.0.0/16").unwrap()
        );
        let (bad, notices) = parse(&[("whitelist-source-range", "10.0.0.0/8, nonsense")]);
        assert_eq!(*bad.list(&global).unwrap(), AccessList::nobody());
        assert_eq!(notices[0].reason, "invalid-access-list");
    }
}
