//! The path a request is routed by, normalized as nginx does before it matches
//! its locations: percent-encoded unreserved characters decoded, `.` and `..`
//! segments resolved, repeated slashes merged. Otherwise `/admin` guarded by
//! one rule could be reached as `/public/../admin` or `/%61dmin` through
//! another. A path that climbs above `/` is refused (400). The pod still gets
//! the request URI exactly as the client sent it.

use std::borrow::Cow;

/// The routing path for `path`, or `None` when it climbs above the root.
pub fn routing_path(path: &str) -> Option<Cow<'_, str>> {
    if is_plain(path) {
        return Some(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    let ends_in_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || ends_in_slash {
        out.push('/');
    }
    Some(Cow::Owned(out))
}

/// Most paths need nothing: no escapes, no dot segments, no doubled slashes.
/// One pass over the bytes: this runs for every request.
fn is_plain(path: &str) -> bool {
    let mut after_slash = false;
    for &b in path.as_bytes() {
        if b == b'%' || (after_slash && (b == b'.' || b == b'/')) {
            return false;
        }
        after_slash = b == b'/';
    }
    true
}

/// Decodes `%XX` where XX is an unreserved character (RFC 3986: letters, digits,
/// `-._~`); every other escape (`%2F`, `%00`...) stays as it is.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex.filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b)) {
                out.push(char::from(byte));
                i += 3;
                continue;
            }
        }
        // Request paths are ASCII (hyper refuses others); push char by char anyway.
        let c = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_nginx_locations_see_them() {
        let cases = [
            ("/", Some("/")),
            ("/a/b", Some("/a/b")),
            ("/a/b/", Some("/a/b/")),
            ("/public/../admin", Some("/admin")),
            ("/public/./x", Some("/public/x")),
            ("//admin", Some("/admin")),
            ("/%61dmin", Some("/admin")),
            ("/public/%2e%2e/admin", Some("/admin")),
            ("/a%2Fb", Some("/a%2Fb")),
            ("/a/..", Some("/")),
            ("/a/.", Some("/a/")),
            ("/..", None),
            ("/a/../../etc/passwd", None),
            ("/%2e%2e/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(routing_path(path).as_deref(), want, "{path}");
        }
        assert!(matches!(
            routing_path("/plain/path"),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn fuzzed_paths_never_panic_and_stay_rooted() {
        crate::fuzz::texts(
            &["/a/./b/../c", "/%2e%2E/%41%7e", "//x//y/"],
            crate::fuzz::iterations(20_000),
            |path| {
                if let Some(normal) = routing_path(path) {
                    if path.starts_with('/') {
                        assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
                        assert!(!normal.contains("/../"), "{path:?} -> {normal:?}");
                    }
                }
            },
        );
    }
}
