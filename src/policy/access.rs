//! Who may send requests at all, as ingress-nginx's access rules: an
//! Ingress's `denylist-source-range` and `whitelist-source-range` (nginx's
//! `deny` lines, then `allow` lines and `deny all`), with the ConfigMap's
//! lists as their defaults; and the ConfigMap's `block-cidrs`,
//! `block-user-agents` and `block-referers`, for every request. Addresses
//! are matched against the one real client address (`client_addr`), never
//! against what a client says of itself.

use std::net::IpAddr;

use http::header::{HeaderMap, REFERER, USER_AGENT};
use regex::{Regex, RegexBuilder};

use super::canary::Cidr;

/// An address list of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Refused first (`denylist-source-range`).
    pub deny: Vec<Cidr>,
    /// When not empty, only these are let in (`whitelist-source-range`).
    pub allow: Vec<Cidr>,
}

impl AccessList {
    /// Nobody: what an invalid list means (fail closed).
    pub fn nobody() -> AccessList {
        let all = ["0.0.0.0/0", "::/0"].map(|c| Cidr::parse(c).ok());
        AccessList {
            deny: all.into_iter().flatten().collect(),
            allow: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty()
    }

    pub fn admits(&self, client: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(client)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(client))
    }
}

/// A comma-separated address list, as annotations and the ConfigMap write it.
pub fn parse_cidrs(list: &str) -> Result<Vec<Cidr>, String> {
    list.parse::<super::canary::CidrList>().map(|l| l.0)
}

/// Longest pattern read from `block-user-agents` / `block-referers`.
const MAX_PATTERN: usize = 1024;

/// One entry of nginx's `map`: a string (compared ignoring case) or, after
/// `~` (`~*`: ignoring case), a regular expression.
#[derive(Debug, Clone)]
enum TextMatch {
    Exact(String),
    /// The entry as written, and its expression.
    Pattern(String, Regex),
}

/// The same entry (a reloaded config swaps settings only when they differ).
impl PartialEq for TextMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TextMatch::Exact(a), TextMatch::Exact(b)) => a == b,
            (TextMatch::Pattern(a, _), TextMatch::Pattern(b, _)) => a == b,
            _ => false,
        }
    }
}

impl Eq for TextMatch {}

impl TextMatch {
    fn parse(entry: &str) -> Result<TextMatch, String> {
        if entry.len() > MAX_PATTERN {
            return Err(format!("an entry longer than {MAX_PATTERN} bytes"));
        }
        let (pattern, insensitive) = match entry.strip_prefix("~*") {
            Some(p) => (p, true),
            None => match entry.strip_prefix('~') {
                Some(p) => (p, false),
                None => return Ok(TextMatch::Exact(entry.to_ascii_lowercase())),
            },
        };
        RegexBuilder::new(pattern)
            .case_insensitive(insensitive)
            .size_limit(1 << 20)
            .build()
            .map(|regex| TextMatch::Pattern(entry.to_owned(), regex))
            .map_err(|e| format!("{entry:?}: {e}"))
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatch::Exact(exact) => text.eq_ignore_ascii_case(exact),
            TextMatch::Pattern(_, regex) => regex.is_match(text),
        }
    }
}

/// The ConfigMap's blocks: every request from these addresses, or with
/// these `User-Agent` or `Referer` values, gets a 403.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    cidrs: Vec<Cidr>,
    user_agents: Vec<TextMatch>,
    referers: Vec<TextMatch>,
}

impl Blocklist {
    /// `None` when nothing is blocked.
    pub fn parse(
        cidrs: &[Cidr],
        user_agents: &str,
        referers: &str,
    ) -> Result<Option<Blocklist>, String> {
        let entries = |list: &str| -> Result<Vec<TextMatch>, String> {
            list.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(TextMatch::parse)
                .collect()
        };
        let list = Blocklist {
            cidrs: cidrs.to_vec(),
            user_agents: entries(user_agents)?,
            referers: entries(referers)?,
        };
        let empty =
            list.cidrs.is_empty() && list.user_agents.is_empty() && list.referers.is_empty();
        Ok((!empty).then_some(list))
    }

    pub fn blocks(&self, client: IpAddr, headers: &HeaderMap) -> bool {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        self.cidrs.iter().any(|c| c.contains(client))
            || header(USER_AGENT).is_some_and(|ua| self.user_agents.iter().any(|m| m.matches(ua)))
            || header(REFERER).is_some_and(|r| self.referers.iter().any(|m| m.matches(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_lines_come_first_then_the_allow_list() {
        let list = AccessList {
            deny: parse_cidrs("10.0.0.9").unwrap(),
            allow: parse_cidrs("10.0.0.0/24, 2001:db8::/32").unwrap(),
        };
        assert!(list.admits(ip("10.0.0.1")));
        assert!(list.admits(ip("::ffff:10.0.0.2")), "an IPv4-mapped client");
        assert!(list.admits(ip("2001:db8::7")));
        assert!(!list.admits(ip("10.0.0.9")), "denied although allowed");
        assert!(!list.admits(ip("192.0.2.1")));
        let deny_only = AccessList {
            deny: parse_cidrs("192.0.2.0/24").unwrap(),
            allow: Vec::new(),
        };
        assert!(deny_only.admits(ip("10.0.0.1")));
        assert!(!deny_only.admits(ip("192.0.2.1")));
        assert!(!AccessList::nobody().admits(ip("10.0.0.1")));
        assert!(!AccessList::nobody().admits(ip("::1")));
        assert!(parse_cidrs("10.0.0.0/33").is_err());
    }

    #[test]
    fn blocks_as_nginx_maps_match() {
        let list = Blocklist::parse(
            &parse_cidrs("198.51.100.0/24").unwrap(),
            "BadBot/1.0, ~*python-requests, ~^curl/",
            "~*spam\\.example",
        )
        .unwrap()
        .unwrap();
        let with = |ua: &str, referer: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(USER_AGENT, ua.parse().unwrap());
            headers.insert(REFERER, referer.parse().unwrap());
            headers
        };
        let client = ip("10.0.0.1");
        assert!(!list.blocks(client, &with("Mozilla/5.0", "https://ok.example/")));
        assert!(list.blocks(ip("198.51.100.3"), &HeaderMap::new()));
        assert!(
            list.blocks(client, &with("badbot/1.0", "")),
            "strings ignore case"
        );
        assert!(
            !list.blocks(client, &with("BadBot/1.0 (more)", "")),
            "and match whole"
        );
        assert!(list.blocks(client, &with("Python-Requests/2.31", "")));
        assert!(list.blocks(client, &with("curl/8.0", "")));
        assert!(
            !list.blocks(client, &with("CURL/8.0", "")),
            "~ is case-sensitive"
        );
        assert!(list.blocks(client, &with("x", "http://SPAM.example/a")));
        assert!(Blocklist::parse(&[], "", "").unwrap().is_none());
        assert!(Blocklist::parse(&[], "~(", "").is_err());
    }
}
