//! Writing an HTTP/1.1 request: the head, and how its body is framed on the wire.
//! Pure: the request in, bytes out.

use http::header;
use http::request::Parts;
use http::Method;
use http_body::Body;

use crate::upstream::body::RequestBody;

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    /// `Content-Length` from the client, or a size known in advance.
    Length,
    Chunked,
}

pub(super) fn request_framing(head: &Parts, body: &RequestBody) -> Framing {
    if head.headers.contains_key(header::CONTENT_LENGTH) {
        Framing::Length
    } else if body.is_end_stream() {
        Framing::Empty
    } else if body.size_hint().exact().is_some() {
        Framing::Length
    } else {
        Framing::Chunked
    }
}

pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `METHOD target HTTP/1.1`, the headers and the framing header. Header values
/// cannot hold CR or LF (`HeaderValue` refuses them), so nothing can be injected.
pub(super) fn encode_head(out: &mut Vec<u8>, head: &Parts, body: &RequestBody, framing: Framing) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length if !head.headers.contains_key(header::CONTENT_LENGTH) => {
            let length = body.size_hint().exact().unwrap_or(0);
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // A body-carrying method with an empty body still says so, as hyper does.
        Framing::Empty if matches!(head.method, Method::POST | Method::PUT | Method::PATCH) => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// `{hex}\r\n`, written into `out`.
pub(super) fn chunk_size_line(size: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 16;
    let mut rest = size;
    loop {
        start -= 1;
        out[start] = HEX[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out[16] = b'\r';
    out[17] = b'\n';
    &out[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_hex() {
        let mut out = [0u8; 18];
        assert_eq!(chunk_size_line(0x1a2b, &mut out), b"1a2b\r\n");
        assert_eq!(chunk_size_line(1, &mut out), b"1\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut out),
            b"ffffffffffffffff\r\n"
        );
    }
}
