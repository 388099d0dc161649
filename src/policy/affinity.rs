//! Cookie session affinity, as ingress-nginx's sticky balancers
//! (`affinity: cookie`): the cookie holds a key on the backend's hash ring
//! and the backend it belongs to, `KEY|BACKEND`. A request with a valid
//! cookie goes to the key's endpoint; while that endpoint is ejected or
//! already tried, to the next one on the ring, so a failed or removed pod
//! moves only its own users.
//!
//! * `balanced` (the default): a new user gets a random key, so scaling up
//!   moves some users to the new pods.
//! * `persistent`: the key is the serving endpoint's own point, and it is
//!   written again whenever another endpoint served, so new pods take no
//!   existing user.
//!
//! A cookie can only choose among the pods of its own backend: a key from
//! another backend (another route, another tenant) is ignored.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use crate::balance::pick::endpoint_key;
use crate::balance::policy::{cookie, hash64};

pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// One route's cookie affinity (the `session-cookie-*` annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub name: String,
    /// The cookie's `Path`; else the path of the Ingress rule.
    pub path: Option<String>,
    pub domain: Option<String>,
    pub max_age: Option<u64>,
    /// `Expires`, in seconds from now.
    pub expires: Option<u64>,
    pub samesite: Option<SameSite>,
    /// Leave `SameSite=None` out for browsers that reject it.
    pub conditional_samesite_none: bool,
    /// `Secure`; else only over HTTPS.
    pub secure: Option<bool>,
    /// After a failure, the user stays where the retry succeeded.
    pub change_on_failure: bool,
    pub persistent: bool,
    /// `affinity-canary-behavior: sticky` (ingress-nginx's default): a user
    /// whose cookie names the main or the canary backend stays there,
    /// whatever the canary's rules say; `legacy`: the rules decide.
    pub canary_sticky: bool,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            name: DEFAULT_COOKIE.into(),
            path: None,
            domain: None,
            max_age: None,
            expires: None,
            samesite: None,
            conditional_samesite_none: false,
            secure: None,
            change_on_failure: false,
            persistent: false,
            canary_sticky: true,
        }
    }
}

/// A request's place on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sticky {
    pub key: u64,
    /// The key came from a valid cookie (else the answer sets one).
    pub from_cookie: bool,
}

/// What the answer needs to say about the cookie.
pub struct Answered {
    pub endpoint: SocketAddr,
    /// The request was tried on more than one endpoint.
    pub retried: bool,
    pub https: bool,
    /// The client accepts `SameSite=None` (`same_site_none_compatible`).
    pub samesite_none_ok: bool,
    pub now: SystemTime,
}

/// The backend part of the cookie: which backend the key belongs to.
pub fn backend_tag(backend: &(impl std::hash::Hash + ?Sized)) -> u64 {
    hash64(backend)
}

impl Affinity {
    /// This affinity for one Ingress rule: the cookie's `Path` is the rule's
    /// path unless `session-cookie-path` says otherwise.
    pub fn for_rule(self: std::sync::Arc<Self>, rule_path: &str) -> std::sync::Arc<Affinity> {
        if self.path.is_some() {
            return self;
        }
        std::sync::Arc::new(Affinity {
            path: Some(rule_path.to_owned()),
            ..(*self).clone()
        })
    }

    /// The backend the request's cookie names (its tag), if it has one.
    pub fn cookie_backend(&self, headers: &HeaderMap) -> Option<u64> {
        let value = cookie(headers, &self.name)?;
        let (_, tag) = value.split_once('|')?;
        u64::from_str_radix(tag, 16).ok()
    }

    /// The request's key: its cookie's if the cookie is for this backend,
    /// else `fresh` (a random one).
    pub fn sticky(&self, headers: &HeaderMap, backend: u64, fresh: u64) -> Sticky {
        let from_cookie = cookie(headers, &self.name).and_then(|value| {
            let (key, tag) = value.split_once('|')?;
            let tag = u64::from_str_radix(tag, 16).ok()?;
            (tag == backend).then(|| u64::from_str_radix(key, 16).ok())?
        });
        match from_cookie {
            Some(key) => Sticky {
                key,
                from_cookie: true,
            },
            None => Sticky {
                key: fresh,
                from_cookie: false,
            },
        }
    }

    /// The `Set-Cookie` the answer carries, if any: for a new user; in
    /// persistent mode whenever another endpoint than the key's served; and
    /// after a retry with `change-on-failure`.
    pub fn set_cookie(
        &self,
        sticky: Sticky,
        backend: u64,
        answered: &Answered,
    ) -> Option<HeaderValue> {
        let own = endpoint_key(answered.endpoint);
        let key = if !sticky.from_cookie {
            if self.persistent {
                own
            } else {
                sticky.key
            }
        } else if (self.persistent || (self.change_on_failure && answered.retried))
            && sticky.key != own
        {
            own
        } else {
            return None;
        };
        let mut cookie = format!("{}={key:016x}|{backend:016x}", self.name);
        let path = self.path.as_deref().unwrap_or("/");
        cookie += &format!("; Path={path}");
        if let Some(domain) = &self.domain {
            cookie += &format!("; Domain={domain}");
        }
        if let Some(seconds) = self.expires {
            let at = answered.now + Duration::from_secs(seconds);
            cookie += &format!("; Expires={}", httpdate::fmt_http_date(at));
        }
        if let Some(seconds) = self.max_age {
            cookie += &format!("; Max-Age={seconds}");
        }
        if self.secure.unwrap_or(answered.https) {
            cookie += "; Secure";
        }
        cookie += "; HttpOnly";
        match self.samesite {
            Some(SameSite::None)
                if self.conditional_samesite_none && !answered.samesite_none_ok => {}
            Some(SameSite::None) => cookie += "; SameSite=None",
            Some(SameSite::Lax) => cookie += "; SameSite=Lax",
            Some(SameSite::Strict) => cookie += "; SameSite=Strict",
            None => {}
        }
        HeaderValue::try_from(cookie).ok()
    }
}

/// Browsers that reject `SameSite=None` cookies outright (ingress-nginx's
/// `util/same_site.lua`, after Chromium's list of incompatible clients).
pub fn same_site_none_compatible(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent else { return true };
    let old_chrome = ["Chrome/4", "Chrome/5", "Chrome/6"]
        .iter()
        .any(|v| ua.contains(v));
    let ios12 = ua.contains("CPU iPhone OS 12") || ua.contains("iPad; CPU OS 12");
    let mojave_safari = ua.contains("Macintosh")
        && ua.contains("Intel Mac OS X 10_14")
        && ua.contains("Safari")
        && !ua.contains("Chrome");
    !(old_chrome || ios12 || mojave_safari)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, cookie.parse().unwrap());
        headers
    }

    fn answered(endpoint: &str, retried: bool) -> Answered {
        Answered {
            endpoint: endpoint.parse().unwrap(),
            retried,
            https: false,
            samesite_none_ok: true,
            now: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_cookie_counts_only_for_its_own_backend() {
        let affinity = Affinity::default();
        let mine = headers("INGRESSCOOKIE=00000000000000ff|000000000000000a");
        assert_eq!(
            affinity.sticky(&mine, 10, 7),
            Sticky {
                key: 255,
                from_cookie: true
            }
        );
        // Another backend's cookie, or garbage: a fresh key.
        assert_eq!(
            affinity.sticky(&mine, 11, 7),
            Sticky {
                key: 7,
                from_cookie: false
            }
        );
        let garbage = headers("INGRESSCOOKIE=zz|a; other=1");
        assert_eq!(
            affinity.sticky(&garbage, 10, 7),
            Sticky {
                key: 7,
                from_cookie: false
            }
        );
    }

    #[test]
    fn the_cookie_is_set_for_new_users_and_as_the_mode_says() {
        let balanced = Affinity {
            path: Some("/shop".into()),
            samesite: Some(SameSite::Lax),
            max_age: Some(60),
            expires: Some(3600),
            ..Affinity::default()
        };
        let new = Sticky {
            key: 0xab,
            from_cookie: false,
        };
        let cookie = balanced
            .set_cookie(new, 0xa, &answered("10.0.0.1:80", false))
            .unwrap();
        assert_eq!(
            cookie,
            "INGRESSCOOKIE=00000000000000ab|000000000000000a; Path=/shop; Expires=Thu, 01 Jan 1970 01:00:00 GMT; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        // A returning user keeps the cookie; a retry changes it only when asked.
        let known = Sticky {
            key: 0xab,
            from_cookie: true,
        };
        assert!(balanced
            .set_cookie(known, 0xa, &answered("10.0.0.1:80", true))
            .is_none());
        let change = Affinity {
            change_on_failure: true,
            ..Affinity::default()
        };
        let moved = change
            .set_cookie(known, 0xa, &answered("10.0.0.2:80", true))
            .unwrap();
        let own = endpoint_key("10.0.0.2:80".parse().unwrap());
        assert!(moved
            .to_str()
            .unwrap()
            .starts_with(&format!("INGRESSCOOKIE={own:016x}|")));
        // Persistent: the key is the endpoint's own, rewritten when another served.
        let persistent = Affinity {
            persistent: true,
            ..Affinity::default()
        };
        let first = persistent
            .set_cookie(new, 0xa, &answered("10.0.0.2:80", false))
            .unwrap();
        assert!(first
            .to_str()
            .unwrap()
            .starts_with(&format!("INGRESSCOOKIE={own:016x}|")));
        let stays = Sticky {
            key: own,
            from_cookie: true,
        };
        assert!(persistent
            .set_cookie(stays, 0xa, &answered("10.0.0.2:80", false))
            .is_none());
        assert!(persistent
            .set_cookie(stays, 0xa, &answered("10.0.0.3:80", false))
            .is_some());
    }

    #[test]
    fn samesite_none_is_left_out_for_browsers_that_reject_it() {
        let affinity = Affinity {
            samesite: Some(SameSite::None),
            conditional_samesite_none: true,
            secure: Some(true),
            ..Affinity::default()
        };
        let new = Sticky {
            key: 1,
            from_cookie: false,
        };
        let iphone12 = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X)";
        assert!(!same_site_none_compatible(Some(iphone12)));
        let mut old = answered("10.0.0.1:80", false);
        old.samesite_none_ok = false;
        let cookie = affinity.set_cookie(new, 1, &old).unwrap();
        assert!(!cookie.to_str().unwrap().contains("SameSite"), "{cookie:?}");
        assert!(cookie.to_str().unwrap().contains("; Secure"));
        assert!(same_site_none_compatible(Some("Mozilla/5.0 Chrome/120.0")));
        let cookie = affinity
            .set_cookie(new, 1, &answered("10.0.0.1:80", false))
            .unwrap();
        assert!(cookie.to_str().unwrap().ends_with("; SameSite=None"));
    }
}
