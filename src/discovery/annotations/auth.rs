//! `auth-type: basic` with `auth-secret` (`name` or `namespace/name`, the
//! Ingress's own namespace only), `auth-secret-type` (`auth-file`: an
//! htpasswd file under the key `auth`; `auth-map`: a key per user) and
//! `auth-realm`. The Secret is read by `translate`. `auth-type: digest`
//! reads an htdigest file (`user:realm:HA1`) the same ways.

use std::collections::BTreeMap;

use super::{fail_closed, lookup, Notice};

/// What the annotations ask; `translate` reads the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthSpec {
    /// (namespace, else the Ingress's; name).
    pub secret: Option<(Option<String>, String)>,
    /// `auth-secret-type: auth-map`.
    pub map: bool,
    pub realm: String,
    /// `auth-type: digest`: the file is htdigest's (`user:realm:HA1`).
    pub digest: bool,
}

/// `Ok(None)`: no authentication. `Err(key)`: the request must fail
/// closed, for the reason pushed to `notices`.
pub(super) fn parse_basic_auth(
    annotations: &BTreeMap<String, String>,
    notices: &mut Vec<Notice>,
) -> Result<Option<BasicAuthSpec>, String> {
    let Some((key, kind)) = lookup(annotations, "auth-type") else {
        return Ok(None);
    };
    let mut closed = |reason: String| Err(fail_closed(notices, key, &reason));
    let digest = match kind.trim() {
        "basic" => false,
        "digest" => true,
        other => return closed(format!("{other:?} is not basic or digest")),
    };
    let secret = lookup(annotations, "auth-secret").map(|(_, value)| {
        let value = value.trim();
        match value.split_once('/') {
            Some((namespace, name)) => (Some(namespace.to_owned()), name.to_owned()),
            None => (None, value.to_owned()),
        }
    });
    let map = match lookup(annotations, "auth-secret-type").map(|(_, v)| v.trim()) {
        None | Some("auth-file") => false,
        Some("auth-map") => true,
        Some(other) => {
            return closed(format!(
                "auth-secret-type {other:?} is not auth-file or auth-map"
            ))
        }
    };
    let realm = lookup(annotations, "auth-realm")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok(Some(BasicAuthSpec {
        secret,
        map,
        realm,
        digest,
    }))
}
