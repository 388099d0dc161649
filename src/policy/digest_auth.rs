//! `auth-type: digest`, as ingress-nginx's (nginx-http-auth-digest): an
//! htdigest file (`user:realm:HA1`, as `htdigest` writes it) under the
//! Secret's `auth` key, RFC 2617 with MD5 and `qop="auth"`.
//!
//! Nonces carry their time and a keyed digest, so any instance can check
//! one it made without remembering it; one is good for `NONCE_TIMEOUT`
//! (the module's `auth_digest_timeout`), then the client is asked again
//! with `stale=true`. Each nonce's count must grow (no replay), up to
//! `MAX_USES` (`auth_digest_replays`); the counts of at most
//! `MAX_NONCES` nonces are kept. Every value in the header is the
//! client's: it is parsed with bounds, and compared in constant time.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use md5::{Digest as _, Md5};
use sha1::{Digest as _, Sha1};

use crate::compat::nginx::constant_time_eq;

/// How long a nonce is good for, in seconds.
pub const NONCE_TIMEOUT: u64 = 60;
/// Requests one nonce may authenticate.
pub const MAX_USES: u32 = 20;
/// Nonces whose counts are kept.
const MAX_NONCES: usize = 4096;
/// Longest `Authorization` header read.
const MAX_HEADER: usize = 4096;
/// Most users in a file.
const MAX_USERS: usize = 10_000;

#[derive(Debug)]
pub struct DigestAuth {
    realm: String,
    /// `HA1` (hex, lowercase) by user, for this realm.
    users: HashMap<String, String>,
    key: [u8; 32],
    /// The last count seen per nonce, and when the nonce was made.
    counts: Mutex<HashMap<String, (u32, u64)>>,
}

/// The same users and realm.
impl PartialEq for DigestAuth {
    fn eq(&self, other: &Self) -> bool {
        self.realm == other.realm && self.users == other.users
    }
}

/// What a request's credentials say.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestVerdict {
    Admit,
    /// Ask again; `stale`: the password was right, the nonce too old.
    Refuse {
        stale: bool,
    },
}

impl DigestAuth {
    /// The lines of an htdigest file whose realm is `realm`.
    pub fn from_file(realm: &str, file: &str) -> Result<DigestAuth, String> {
        let realm = realm.replace(['"', '\\'], "");
        let mut users = HashMap::new();
        for line in file.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let (Some(user), Some(line_realm), Some(ha1)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("{line:?} is not user:realm:hash"));
            };
            if line_realm != realm {
                continue;
            }
            let valid = ha1.len() == 32 && ha1.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(format!("user {user:?}: the hash is not 32 hex digits"));
            }
            if users.len() == MAX_USERS {
                return Err(format!("more than {MAX_USERS} users"));
            }
            users.insert(user.to_owned(), ha1.to_ascii_lowercase());
        }
        if users.is_empty() {
            return Err(format!("no users for the realm {realm:?}"));
        }
        let mut key = [0u8; 32];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut key)
            .map_err(|_| "no random numbers".to_owned())?;
        Ok(DigestAuth {
            realm,
            users,
            key,
            counts: Mutex::default(),
        })
    }

    /// A 401's `WWW-Authenticate`, with a fresh nonce.
    pub fn challenge(&self, now: u64, stale: bool) -> HeaderValue {
        let nonce = self.nonce(now, fastrand::u64(..));
        let stale = if stale { ", stale=\"true\"" } else { "" };
        let value = format!(
            "Digest algorithm=\"MD5\", qop=\"auth\", realm=\"{}\", nonce=\"{nonce}\"{stale}",
            self.realm
        );
        HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("Digest"))
    }

    /// `{time:016x}{salt:016x}{keyed digest}`.
    fn nonce(&self, time: u64, salt: u64) -> String {
        let head = format!("{time:016x}{salt:016x}");
        let mac = Sha1::new()
            .chain_update(self.key)
            .chain_update(head.as_bytes())
            .finalize();
        format!("{head}{}", hex(&mac))
    }

    /// Checks the request's `Authorization: Digest ...` (`now`: Unix seconds).
    pub fn check(&self, method: &str, uri: &str, headers: &HeaderMap, now: u64) -> DigestVerdict {
        let refuse = DigestVerdict::Refuse { stale: false };
        let Some(fields) = headers.get(AUTHORIZATION).and_then(|v| parse(v.as_bytes())) else {
            return refuse;
        };
        let field = |name: &str| fields.get(name).map(String::as_str);
        let (Some(user), Some(nonce), Some(asked), Some(response)) = (
            field("username"),
            field("nonce"),
            field("uri"),
            field("response"),
        ) else {
            return refuse;
        };
        let (Some(qop), Some(nc), Some(cnonce)) = (field("qop"), field("nc"), field("cnonce"))
        else {
            return refuse;
        };
        let Some(ha1) = self.users.get(user) else {
            return refuse;
        };
        let realm_ok = field("realm") == Some(self.realm.as_str());
        let algorithm_ok = field("algorithm").is_none_or(|a| a.eq_ignore_ascii_case("md5"));
        // The credentials are for this request: a captured header cannot
        // be replayed against another URI.
        if !realm_ok || !algorithm_ok || qop != "auth" || asked != uri {
            return refuse;
        }
        let Some(time) = self.nonce_time(nonce) else {
            return refuse;
        };
        let Ok(count) = u32::from_str_radix(nc, 16) else {
            return refuse;
        };
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"));
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return refuse;
        }
        if now.saturating_sub(time) > NONCE_TIMEOUT || count > MAX_USES {
            return DigestVerdict::Refuse { stale: true };
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_NONCES && !counts.contains_key(nonce) {
            counts.retain(|_, (_, made)| now.saturating_sub(*made) <= NONCE_TIMEOUT);
            if counts.len() >= MAX_NONCES {
                // Still full: refuse rather than forget a count (which
                // would let a captured request be replayed).
                return DigestVerdict::Refuse { stale: true };
            }
        }
        let last = counts.entry(nonce.to_owned()).or_insert((0, time));
        if count <= last.0 {
            return refuse;
        }
        last.0 = count;
        DigestVerdict::Admit
    }

    /// When a nonce of ours was made; `None` for one we did not make.
    fn nonce_time(&self, nonce: &str) -> Option<u64> {
        let head = nonce.get(..32)?;
        let time = u64::from_str_radix(head.get(..16)?, 16).ok()?;
        let salt = u64::from_str_radix(head.get(16..)?, 16).ok()?;
        constant_time_eq(self.nonce(time, salt).as_bytes(), nonce.as_bytes()).then_some(time)
    }
}

/// `Digest k=v, k="v", ...`: at most 16 fields, quoted values unescaped.
fn parse(value: &[u8]) -> Option<HashMap<String, String>> {
    if value.len() > MAX_HEADER {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, mut rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut fields = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            return Some(fields);
        }
        if fields.len() == 16 {
            return None;
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let value;
        if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end?..];
        } else {
            let end = after.find(',').unwrap_or(after.len());
            value = after[..end].trim().to_owned();
            rest = &after[end..];
        }
        fields.insert(name, value);
    }
}

fn md5_hex(text: &str) -> String {
    hex(&Md5::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn auth() -> DigestAuth {
        let ha1 = md5_hex("alice:Ops:s3cret");
        DigestAuth::from_file("Ops", &format!("alice:Ops:{ha1}\nbob:Other:{ha1}\n")).unwrap()
    }

    /// What a client sends, for `nonce`, count `nc` and `password`.
    fn answer(nonce: &str, nc: u32, uri: &str, password: &str) -> HeaderMap {
        let ha1 = md5_hex(&format!("alice:Ops:{password}"));
        let ha2 = md5_hex(&format!("GET:{uri}"));
        let nc = format!("{nc:08x}");
        let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}"));
        let value = format!("Digest username=\"alice\", realm=\"Ops\", nonce=\"{nonce}\", uri=\"{uri}\", qop=auth, nc={nc}, cnonce=\"abc\", response=\"{response}\", algorithm=MD5");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn nonce_of(challenge: &HeaderValue) -> String {
        let text = challenge.to_str().unwrap();
        text.split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_right_password_passes_once_per_count() {
        let auth = auth();
        let nonce = nonce_of(&auth.challenge(NOW, false));
        let check = |nc, uri: &str, password, now| {
            auth.check("GET", uri, &answer(&nonce, nc, uri, password), now)
        };
        assert_eq!(check(1, "/a?x=1", "s3cret", NOW), DigestVerdict::Admit);
        assert_eq!(
            check(1, "/a?x=1", "s3cret", NOW),
            DigestVerdict::Refuse { stale: false },
            "replayed"
        );
        assert_eq!(check(2, "/a?x=1", "s3cret", NOW + 1), DigestVerdict::Admit);
        assert_eq!(
            check(3, "/a?x=1", "wrong", NOW),
            DigestVerdict::Refuse { stale: false }
        );
        // Made for /a, sent for /b.
        let headers = answer(&nonce, 4, "/a", "s3cret");
        assert_eq!(
            auth.check("GET", "/b", &headers, NOW),
            DigestVerdict::Refuse { stale: false }
        );
        assert_eq!(
            check(5, "/a", "s3cret", NOW + NONCE_TIMEOUT + 1),
            DigestVerdict::Refuse { stale: true }
        );
        assert_eq!(
            check(MAX_USES + 1, "/a", "s3cret", NOW),
            DigestVerdict::Refuse { stale: true }
        );
    }

    #[test]
    fn nonces_we_did_not_make_and_other_realms_are_refused() {
        let auth = auth();
        let forged = format!("{NOW:016x}{:016x}{}", 7, "0".repeat(40));
        let verdict = auth.check("GET", "/", &answer(&forged, 1, "/", "s3cret"), NOW);
        assert_eq!(verdict, DigestVerdict::Refuse { stale: false });
        let other =
            DigestAuth::from_file("Ops", &format!("alice:Ops:{}", md5_hex("alice:Ops:s3cret")))
                .unwrap();
        let nonce = nonce_of(&other.challenge(NOW, false));
        assert_eq!(
            auth.check("GET", "/", &answer(&nonce, 1, "/", "s3cret"), NOW),
            DigestVerdict::Refuse { stale: false }
        );
        assert!(
            DigestAuth::from_file("Nowhere", "alice:Ops:00000000000000000000000000000000").is_err()
        );
        assert!(DigestAuth::from_file("Ops", "alice:Ops:nothex").is_err());
    }

    /// The header is the client's: never a panic.
    #[test]
    fn fuzzed_headers_never_panic() {
        let auth = auth();
        let nonce = nonce_of(&auth.challenge(NOW, false));
        let seed = answer(&nonce, 1, "/", "s3cret");
        let seed = seed[AUTHORIZATION].as_bytes().to_vec();
        crate::fuzz::bytes(&[&seed], crate::fuzz::iterations(20_000), |raw| {
            if let Ok(value) = HeaderValue::from_bytes(raw) {
                let mut headers = HeaderMap::new();
                headers.insert(AUTHORIZATION, value);
                let _ = auth.check("GET", "/", &headers, NOW);
            }
        });
    }
}
