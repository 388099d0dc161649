//! nginx's own text rules that sluice reproduces in more than one place:
//! its URI component escaping (`$escaped_request_uri`,
//! `$ssl_client_escaped_cert`, the sign-in redirect's `rd`), and comparing
//! secrets without a timing signal.

/// nginx's `set_escape_uri` / `ngx_escape_uri` component escaping:
/// everything but letters, digits and `-._~` percent-escaped.
pub fn escape_uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Equal bytes, compared in a time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
