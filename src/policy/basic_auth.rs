//! `auth-type: basic`: users and password hashes from a Secret, in the
//! formats htpasswd writes and nginx's `auth_basic_user_file` reads:
//! bcrypt (`$2y$`), apr1-MD5 (`$apr1$`), SHA-1 (`{SHA}`), salted SHA-1
//! (`{SSHA}`), `{PLAIN}`, and crypt(3) (DES, `$1$`, `$5$`, `$6$`).
//!
//! Slow hashes (bcrypt, SHA-crypt) are verified off the event loop, a few
//! at a time for the whole process, and a bounded set remembers the
//! credentials that passed, so a client's repeated requests cost one
//! verification, not one each. What it remembers is a salted digest,
//! never a password.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use md5::{Digest as _, Md5};
use sha1::{Digest as _, Sha1};
use tokio::sync::Semaphore;

/// Users one Secret may list.
const MAX_USERS: usize = 10_000;
/// Credentials remembered per Secret; the set starts again when full.
const MAX_REMEMBERED: usize = 4096;
/// Longest user name and password read from a request.
const MAX_CREDENTIALS: usize = 1024;
/// Slow verifications waiting at once, for the whole process; beyond, a
/// request is refused (a flood of wrong passwords must not queue without
/// bound).
const MAX_WAITING: usize = 1024;

/// One stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    /// Verified by crypt(3) rules (`pwhash`): bcrypt, DES, `$1$`, `$5$`, `$6$`.
    Crypt(String),
    Apr1(String),
    Sha1([u8; 20]),
    Ssha(Vec<u8>),
    Plain(String),
}

impl Hash {
    fn parse(text: &str) -> Result<Hash, String> {
        let base64 = base64::engine::general_purpose::STANDARD;
        if let Some(digest) = text.strip_prefix("{SHA}") {
            let bytes = base64
                .decode(digest)
                .map_err(|_| "a {SHA} hash is not base64")?;
            return bytes
                .try_into()
                .map(Hash::Sha1)
                .map_err(|_| "a {SHA} hash is not 20 bytes".into());
        }
        if let Some(digest) = text.strip_prefix("{SSHA}") {
            let bytes = base64
                .decode(digest)
                .map_err(|_| "a {SSHA} hash is not base64")?;
            if bytes.len() <= 20 {
                return Err("a {SSHA} hash without its salt".into());
            }
            return Ok(Hash::Ssha(bytes));
        }
        if let Some(plain) = text.strip_prefix("{PLAIN}") {
            return Ok(Hash::Plain(plain.to_owned()));
        }
        if text.starts_with("$apr1$") {
            return Ok(Hash::Apr1(text.to_owned()));
        }
        let known = ["$2y$", "$2a$", "$2b$", "$1$", "$5$", "$6$"]
            .iter()
            .any(|p| text.starts_with(p))
            || (text.len() == 13
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/'));
        if known {
            return Ok(Hash::Crypt(text.to_owned()));
        }
        Err("not a hash htpasswd writes (bcrypt, apr1, {SHA}, crypt)".into())
    }

    /// Whether checking it costs milliseconds.
    fn is_slow(&self) -> bool {
        matches!(self, Hash::Crypt(h) if h.starts_with("$2") || h.starts_with("$5$") || h.starts_with("$6$"))
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Hash::Crypt(hash) => pwhash::unix::verify(password, hash),
            Hash::Apr1(hash) => {
                let salt = hash["$apr1$".len()..].split('$').next().unwrap_or_default();
                constant_eq(
                    apr1(password.as_bytes(), salt.as_bytes()).as_bytes(),
                    hash.as_bytes(),
                )
            }
            Hash::Sha1(digest) => constant_eq(&Sha1::digest(password.as_bytes()), digest),
            Hash::Ssha(bytes) => {
                let (digest, salt) = bytes.split_at(20);
                let mut sha = Sha1::new();
                sha.update(password.as_bytes());
                sha.update(salt);
                constant_eq(&sha.finalize(), digest)
            }
            Hash::Plain(plain) => constant_eq(plain.as_bytes(), password.as_bytes()),
        }
    }
}

/// Equal, in a time that does not depend on where they differ.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's apr1: MD5-crypt with the magic `$apr1$`.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain(password)
        .chain(salt)
        .chain(password)
        .finalize();
    let mut context = Md5::new().chain(password).chain(MAGIC).chain(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        context.update(&alternate[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut next = Md5::new();
        if round & 1 == 1 {
            next.update(password);
        } else {
            next.update(digest);
        }
        if round % 3 != 0 {
            next.update(salt);
        }
        if round % 7 != 0 {
            next.update(password);
        }
        if round & 1 == 1 {
            next.update(digest);
        } else {
            next.update(password);
        }
        digest = next.finalize();
    }
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::from("$apr1$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut push = |value: u32, chars: usize| {
        let mut value = value;
        for _ in 0..chars {
            out.push(ALPHABET[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    push(d(11), 2);
    out
}

/// A route's basic authentication.
#[derive(Debug)]
pub struct BasicAuth {
    /// `WWW-Authenticate` of a 401.
    pub challenge: HeaderValue,
    users: HashMap<String, Hash>,
    /// Digests of credentials that passed (`remembered`).
    passed: Mutex<HashSet<[u8; 20]>>,
    /// Slow verifications under way, by the credentials' digest: a burst
    /// of requests with the same credentials (a browser's parallel
    /// connections) waits for one verification, not one each.
    under_way: Mutex<HashMap<[u8; 20], Arc<tokio::sync::OnceCell<bool>>>>,
    salt: [u8; 16],
}

/// The same users and realm (a table swap keeps the remembered set).
impl PartialEq for BasicAuth {
    fn eq(&self, other: &Self) -> bool {
        self.challenge == other.challenge && self.users == other.users
    }
}

/// What a request's credentials say.
pub enum Verdict {
    Admit,
    Refuse,
    /// A slow hash: `SlowCheck::verify` off the event loop.
    Slow(SlowCheck),
}

pub struct SlowCheck {
    auth: Arc<BasicAuth>,
    user: String,
    password: String,
    /// The credentials' salted digest (`BasicAuth::digest`).
    digest: [u8; 20],
}

impl BasicAuth {
    /// From `user:hash` lines (an htpasswd file, or an `auth-map`'s
    /// entries); lines that are empty or start with `#` are skipped.
    pub fn new<'a>(
        realm: &str,
        entries: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<BasicAuth, String> {
        let mut users = HashMap::new();
        for (user, hash) in entries {
            let (user, hash) = (user.trim(), hash.trim());
            if user.is_empty() || user.starts_with('#') {
                continue;
            }
            if users.len() == MAX_USERS {
                return Err(format!("more than {MAX_USERS} users"));
            }
            let hash = Hash::parse(hash).map_err(|e| format!("user {user:?}: {e}"))?;
            users.insert(user.to_owned(), hash);
        }
        if users.is_empty() {
            return Err("no users".into());
        }
        let realm = realm.replace(['"', '\\'], "");
        let challenge = HeaderValue::try_from(format!("Basic realm=\"{realm}\""))
            .map_err(|_| format!("{realm:?} is not a realm"))?;
        let mut salt = [0u8; 16];
        salt.iter_mut().for_each(|b| *b = fastrand::u8(..));
        Ok(BasicAuth {
            challenge,
            users,
            passed: Mutex::default(),
            under_way: Mutex::default(),
            salt,
        })
    }

    /// An htpasswd file's lines.
    pub fn from_file(realm: &str, file: &str) -> Result<BasicAuth, String> {
        let entries = file
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l.split_once(':').unwrap_or((l, "")));
        BasicAuth::new(realm, entries)
    }

    pub fn check(self: &Arc<Self>, headers: &HeaderMap) -> Verdict {
        let Some((user, password)) = credentials(headers) else {
            return Verdict::Refuse;
        };
        let Some(hash) = self.users.get(&user) else {
            return Verdict::Refuse;
        };
        // One digest per request: the remembered set's key, and the slow
        // check's.
        let digest = self.digest(&user, &password);
        if self.remembers(&digest) {
            return Verdict::Admit;
        }
        if hash.is_slow() {
            return Verdict::Slow(SlowCheck {
                auth: self.clone(),
                user,
                password,
                digest,
            });
        }
        self.settle(digest, hash.verify(&password))
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 20] {
        Sha1::new()
            .chain_update(self.salt)
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn remembers(&self, digest: &[u8; 20]) -> bool {
        let passed = self.passed.lock().unwrap_or_else(PoisonError::into_inner);
        passed.contains(digest)
    }

    fn settle(&self, digest: [u8; 20], ok: bool) -> Verdict {
        if !ok {
            return Verdict::Refuse;
        }
        let mut passed = self.passed.lock().unwrap_or_else(PoisonError::into_inner);
        if passed.len() >= MAX_REMEMBERED {
            passed.clear();
        }
        passed.insert(digest);
        Verdict::Admit
    }
}

impl SlowCheck {
    /// The 401's challenge, should it fail.
    pub fn challenge(&self) -> &HeaderValue {
        &self.auth.challenge
    }

    /// Verifies on the blocking pool, a few at a time, once for a burst of
    /// the same credentials; false when refused (or when too many are
    /// waiting).
    pub async fn verify(self) -> bool {
        let digest = self.digest;
        let cell = {
            let mut under_way =
                (self.auth.under_way.lock()).unwrap_or_else(PoisonError::into_inner);
            under_way.entry(digest).or_default().clone()
        };
        let auth = self.auth.clone();
        let verified = *cell.get_or_init(|| self.verify_alone()).await;
        let mut under_way = auth
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        under_way.remove(&digest);
        verified
    }

    async fn verify_alone(self) -> bool {
        static SLOTS: OnceLock<Semaphore> = OnceLock::new();
        static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        use std::sync::atomic::Ordering::Relaxed;
        let slots = SLOTS.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Semaphore::new(cores)
        });
        if WAITING.fetch_add(1, Relaxed) >= MAX_WAITING {
            WAITING.fetch_sub(1, Relaxed);
            tracing::warn!("too many password verifications waiting; refusing");
            return false;
        }
        let permit = slots.acquire().await;
        WAITING.fetch_sub(1, Relaxed);
        let Ok(_permit) = permit else { return false };
        let SlowCheck {
            auth,
            user,
            password,
            digest,
        } = self;
        let verified = tokio::task::spawn_blocking(move || {
            let ok = auth
                .users
                .get(&user)
                .is_some_and(|hash| hash.verify(&password));
            matches!(auth.settle(digest, ok), Verdict::Admit)
        })
        .await;
        verified.unwrap_or(false)
    }
}

/// `Authorization: Basic base64(user:password)`, bounded.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    if value.len() > MAX_CREDENTIALS * 2 {
        return None;
    }
    let (scheme, encoded) = std::str::from_utf8(value).ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by htpasswd 2.4 (apache2-utils) for the password "p@ss word".
    const BCRYPT: &str = "$2y$05$1H.Wm3RRNWkQ80HMISOZTuUTbIY0lKQc8ExM5RH.afrEeCi9hl4mS";
    const APR1: &str = "$apr1$znDAcQOy$3OD8o0rm3OEvkzMj0n8x7/";
    const SHA: &str = "{SHA}sBKkJl3+0/ZJlTnZyV6He0ZjMq0=";
    const DES: &str = "blYptt7oDHv8A";

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        headers
    }

    #[test]
    fn every_hash_htpasswd_writes_verifies() {
        for hash in [BCRYPT, APR1, SHA, DES, "{PLAIN}p@ss word"] {
            let parsed = Hash::parse(hash).unwrap();
            assert!(parsed.verify("p@ss word"), "{hash}");
            // (DES crypt reads only a password's first 8 bytes.)
            assert!(!parsed.verify("P@ss word"), "{hash}");
            assert!(!parsed.verify(""), "{hash}");
        }
        assert_eq!(apr1(b"p@ss word", b"znDAcQOy"), APR1);
        assert!(Hash::parse("password").is_err(), "not a hash");
        assert!(Hash::parse("{SHA}short").is_err());
    }

    #[tokio::test]
    async fn a_file_of_users_admits_each_with_its_password_and_remembers_it() {
        let file = format!("# users\nalice:{BCRYPT}\nbob:{APR1}\n\ncarol:{SHA}\n");
        let auth = Arc::new(BasicAuth::from_file("Staff only", &file).unwrap());
        assert_eq!(auth.challenge, "Basic realm=\"Staff only\"");
        assert!(matches!(
            auth.check(&basic("bob", "p@ss word")),
            Verdict::Admit
        ));
        assert!(matches!(
            auth.check(&basic("carol", "p@ss word")),
            Verdict::Admit
        ));
        assert!(matches!(
            auth.check(&basic("bob", "wrong")),
            Verdict::Refuse
        ));
        assert!(matches!(
            auth.check(&basic("mallory", "p@ss word")),
            Verdict::Refuse
        ));
        assert!(matches!(auth.check(&HeaderMap::new()), Verdict::Refuse));
        // bcrypt: once off the event loop, then remembered.
        let Verdict::Slow(check) = auth.check(&basic("alice", "p@ss word")) else {
            panic!("bcrypt is slow");
        };
        assert!(check.verify().await);
        assert!(matches!(
            auth.check(&basic("alice", "p@ss word")),
            Verdict::Admit
        ));
        let Verdict::Slow(wrong) = auth.check(&basic("alice", "nope")) else {
            panic!("a wrong password is verified too");
        };
        assert!(!wrong.verify().await);
        assert!(BasicAuth::from_file("", "").is_err(), "no users");
        assert!(BasicAuth::from_file("", "eve:plaintext").is_err());
    }
}
