//! Header work the pipeline does on every request: the `Host` it routes by,
//! the forwarded headers the pod gets, the hop-by-hop headers that stop here,
//! upgrades, and request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use hyper::body::Incoming;

use super::client_addr::ClientAddr;
use super::conn::ConnInfo;
use crate::upstream::error::ProxyError;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What the pod is told about the client, as ingress-nginx: `X-Forwarded-For`
/// and `X-Real-IP` are the real client address (never the client's own claim);
/// `X-Forwarded-Proto/Host/Port` are ours unless a trusted edge set them.
pub(super) fn set_forwarded_headers(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    client: &ClientAddr,
    host: &HeaderValue,
) {
    headers.insert(X_FORWARDED_FOR.clone(), client.header.clone());
    headers.insert(X_REAL_IP.clone(), client.header.clone());
    let mut set = |name: &HeaderName, value: HeaderValue| {
        if !(client.trusted_peer && headers.contains_key(name)) {
            headers.insert(name.clone(), value);
        }
    };
    let proto = if conn.tls { "https" } else { "http" };
    set(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    set(&X_FORWARDED_HOST, host.clone());
    set(&X_FORWARDED_PORT, conn.local_port.clone());
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form), else
/// `Host`. A clone of the client's `Host` value shares its bytes.
pub(super) fn request_host(request: &Request<Incoming>) -> Result<HeaderValue, ProxyError> {
    if let Some(authority) = request.uri().authority() {
        return HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority"));
    }
    let host = request
        .headers()
        .get(header::HOST)
        .ok_or(ProxyError::BadRequest("missing Host header"))?;
    if host.is_empty() {
        return Err(ProxyError::BadRequest("empty Host header"));
    }
    // A name, an IPv4 or a bracketed IPv6 address, and a port: nothing else, so
    // the value the pod, the headers and the log get is a host, not a payload.
    let valid = host.as_bytes().iter().all(|&b| HOST_BYTES[usize::from(b)]);
    if !valid {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    Ok(host.clone())
}

/// The bytes a `Host` may hold: letters, digits and `-._:[]` (one lookup each).
static HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b':' | b'[' | b']');
        b += 1;
    }
    table
};

/// The length the request declares, if it declares a valid one.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An upgrade to a protocol the operator allows (`allowed-upgrades`, default
/// `websocket`). Any other `Upgrade` is removed with the hop-by-hop headers: a
/// pod never sees a protocol switch sluice would not tunnel (h2c smuggling).
pub(super) fn is_upgrade_request(request: &Request<Incoming>, allowed: &[String]) -> bool {
    let headers = request.headers();
    request.version() == Version::HTTP_11
        && request.method() != Method::CONNECT
        && header_has_token(headers, &header::CONNECTION, "upgrade")
        && headers.get_all(header::UPGRADE).iter().count() == 1
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| allowed.iter().any(|a| v.trim().eq_ignore_ascii_case(a)))
}

fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes headers that describe one connection, not the message (RFC 9110 7.6.1),
/// including any the `Connection` header names. `te: trailers` is end-to-end for
/// gRPC and kept; `Upgrade` is kept when the request is being upgraded.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one look at the names is cheaper than
    // the removals below, each of which hashes its name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    let te_trailers = header_has_token(headers, &header::TE, "trailers");
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The headers `strip_hop_by_hop` acts on (those the `Connection` header names
/// only matter when it is there).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
    .contains(&name)
}

/// 32 random hex digits, as ingress-nginx's `$req_id`, written without the
/// formatting machinery.
pub(super) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut random = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut().rev() {
        *digit = HEX[(random & 0xf) as usize];
        random >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-kept"], "1");
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
        // A hop-by-hop header without `Connection` still goes.
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
    }

    #[test]
    fn upgrade_header_survives_an_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert!(!headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let id = new_request_id();
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
