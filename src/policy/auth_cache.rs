//! `auth-cache-key` and `auth-cache-duration`: the authentication service's
//! answers remembered for a while, as ingress-nginx's `proxy_cache` on its
//! auth location. An answer is kept only when its status has a duration
//! (`200 202 401 5m` by default) and it sets no cookie (nginx does not
//! cache those); at most `MAX_ENTRIES` are kept, expired ones go first.
//!
//! The key is the host, the service's path and the rendered
//! `auth-cache-key`: what it includes (`$remote_user`,
//! `$http_authorization`) decides whose answers are shared, as in nginx.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{HeaderName, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use sha1::{Digest as _, Sha1};
use tokio::time::Instant;

/// Answers kept per service.
pub const MAX_ENTRIES: usize = 4096;

/// `auth-cache-duration`: statuses and how long their answers are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDurations(Vec<(Vec<u16>, Duration)>);

impl CacheDurations {
    /// ingress-nginx's syntax: entries separated by `,`, each status codes
    /// (none: 200, 301 and 302, as nginx's `proxy_cache_valid`; `any`) and
    /// a time (`5m`, `1h 30m`).
    pub fn parse(value: &str) -> Result<CacheDurations, String> {
        let mut entries = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut codes = Vec::new();
            let mut time = Duration::ZERO;
            let mut timed = false;
            for token in entry.split_ascii_whitespace() {
                let code = token == "any"
                    || (token.len() == 3 && token.bytes().all(|b| b.is_ascii_digit()));
                if code && timed {
                    return Err(format!("{entry:?}: a status after the time"));
                } else if code {
                    codes.push(token.parse().unwrap_or(0));
                } else {
                    time += crate::units::parse_duration(token)
                        .map_err(|_| format!("{token:?} is not a status or a time"))?;
                    timed = true;
                }
            }
            if !timed {
                return Err(format!("{entry:?} has no time"));
            }
            if codes.is_empty() {
                codes = vec![200, 301, 302];
            }
            entries.push((codes, time));
        }
        if entries.is_empty() {
            return Err("no duration".into());
        }
        Ok(CacheDurations(entries))
    }

    /// How long an answer with this status is kept, if at all.
    fn of(&self, status: StatusCode) -> Option<Duration> {
        let code = status.as_u16();
        self.0
            .iter()
            .find(|(codes, _)| codes.iter().any(|c| *c == code || *c == 0))
            .map(|(_, time)| *time)
            .filter(|time| !time.is_zero())
    }
}

impl Default for CacheDurations {
    fn default() -> Self {
        CacheDurations(vec![(vec![200, 202, 401], Duration::from_secs(300))])
    }
}

/// An answer of the service, as the request needs it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// An answer and when it expires.
type Kept = (Instant, Arc<Answer>);

/// One service's remembered answers. Keys are kept as salted digests and
/// answers with only the headers a request reads, so a client that sends
/// large unique keys (its cookies) holds a few dozen bytes per entry.
#[derive(Debug, Default)]
pub struct AuthCache {
    durations: CacheDurations,
    entries: Mutex<HashMap<[u8; 20], Kept>>,
    salt: [u8; 16],
}

/// The same settings (what is kept is not compared).
impl PartialEq for AuthCache {
    fn eq(&self, other: &Self) -> bool {
        self.durations == other.durations
    }
}

impl AuthCache {
    pub fn new(durations: CacheDurations) -> AuthCache {
        let mut salt = [0u8; 16];
        salt.iter_mut().for_each(|b| *b = fastrand::u8(..));
        AuthCache {
            durations,
            entries: Mutex::default(),
            salt,
        }
    }

    pub fn durations(&self) -> &CacheDurations {
        &self.durations
    }

    fn digest(&self, key: &str) -> [u8; 20] {
        Sha1::new()
            .chain_update(self.salt)
            .chain_update(key.as_bytes())
            .finalize()
            .into()
    }

    pub fn get(&self, key: &str, now: Instant) -> Option<Arc<Answer>> {
        let key = self.digest(key);
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (expires, answer) = entries.get(&key)?;
        (*expires > now).then(|| answer.clone())
    }

    /// Keeps an answer when its status has a duration and it sets no cookie,
    /// with only the headers in `keep` and its `WWW-Authenticate`.
    pub fn put(&self, key: &str, answer: &Answer, keep: &[HeaderName], now: Instant) {
        let Some(time) = self.durations.of(answer.status) else {
            return;
        };
        if answer.headers.contains_key(http::header::SET_COOKIE) {
            return;
        }
        let mut headers = HeaderMap::new();
        for name in keep.iter().chain([&WWW_AUTHENTICATE]) {
            for value in answer.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let kept = Answer {
            status: answer.status,
            headers,
        };
        let key = self.digest(key);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                // Still full of live answers: forget the one that ends first.
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| *k);
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, (now + time, Arc::new(kept)));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn durations_as_ingress_nginx_writes_them() {
        let d = CacheDurations::parse("200 202 401 5m").unwrap();
        assert_eq!(d, CacheDurations::default());
        let d = CacheDurations::parse("200 1h 30m, 401 10s, any 1s").unwrap();
        assert_eq!(d.of(StatusCode::OK), Some(Duration::from_secs(5400)));
        assert_eq!(
            d.of(StatusCode::UNAUTHORIZED),
            Some(Duration::from_secs(10))
        );
        assert_eq!(d.of(StatusCode::FORBIDDEN), Some(Duration::from_secs(1)));
        let d = CacheDurations::parse("5m").unwrap();
        assert_eq!(d.of(StatusCode::FOUND), Some(Duration::from_secs(300)));
        assert_eq!(d.of(StatusCode::UNAUTHORIZED), None);
        for bad in ["", "200", "5m 200", "200 soon"] {
            assert!(CacheDurations::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_are_kept_for_their_time_and_bounded() {
        let cache = AuthCache::new(CacheDurations::default());
        let t0 = Instant::now();
        cache.put("a", &answer(200), &[], t0);
        cache.put("b", &answer(500), &[], t0);
        let mut cookie = answer(200);
        cookie
            .headers
            .insert(http::header::SET_COOKIE, "s=1".parse().unwrap());
        cache.put("c", &cookie, &[], t0);
        assert!(cache.get("a", t0 + Duration::from_secs(299)).is_some());
        assert!(cache.get("a", t0 + Duration::from_secs(300)).is_none());
        assert!(cache.get("b", t0).is_none(), "500 has no duration");
        assert!(
            cache.get("c", t0).is_none(),
            "answers that set cookies are not kept"
        );
        for i in 0..MAX_ENTRIES + 10 {
            cache.put(
                &format!("k{i}"),
                &answer(401),
                &[],
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(
            cache.get("k0", t0).is_none(),
            "the soonest to end went first"
        );
        assert!(cache.get(&format!("k{}", MAX_ENTRIES + 9), t0).is_some());
    }

    /// Only what a request reads is kept: the listed headers and the
    /// challenge, under a digest of the key.
    #[test]
    fn answers_keep_only_what_requests_read() {
        let cache = AuthCache::new(CacheDurations::default());
        let t0 = Instant::now();
        let mut full = answer(200);
        full.headers.insert("x-auth-user", "bob".parse().unwrap());
        full.headers
            .insert("x-padding", "x".repeat(4096).parse().unwrap());
        let key = "k".repeat(16 << 10);
        cache.put(&key, &full, &[HeaderName::from_static("x-auth-user")], t0);
        let kept = cache.get(&key, t0).unwrap();
        assert_eq!(kept.headers["x-auth-user"], "bob");
        assert!(kept.headers.get("x-padding").is_none());
        assert!(cache.get("k", t0).is_none());
    }
}
