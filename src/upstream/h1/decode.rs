//! Reading an HTTP/1.1 answer: the response head (httparse, bounded in size and
//! header count) and the body's framing, then its bytes (`Content-Length`,
//! `chunked` with its trailers read and dropped, or until the upstream closes).
//! Pure: bytes in, parts out, no IO. Ambiguous framing is refused, never guessed.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use crate::upstream::error::ProxyError;

/// Most headers a response may have; past this the upstream's answer is refused
/// (as nginx's "upstream sent too many headers").
const MAX_HEADERS: usize = 128;
/// Largest response head, and longest chunk-size or trailer line.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why no response head came.
#[derive(Debug)]
pub(super) enum HeadError {
    /// Closed before sending a byte of it.
    Closed,
    Io(io::Error),
    Invalid(&'static str),
}

impl From<HeadError> for ProxyError {
    fn from(error: HeadError) -> ProxyError {
        match error {
            HeadError::Closed => ProxyError::UpstreamConnection(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before answering",
            )),
            HeadError::Io(e) => ProxyError::UpstreamConnection(e),
            HeadError::Invalid(what) => ProxyError::UpstreamResponse(what),
        }
    }
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) keep_alive: bool,
}

/// Parses a complete head off the front of `buf`, or `None` if more is needed.
/// Header values share the head's bytes: one allocation for them all.
pub(super) fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    // Uninitialised: zeroing 128 headers cost more than parsing a small head.
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Invalid("too many response headers"))
        }
        Err(_) => return Err(HeadError::Invalid("malformed response head")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(HeadError::Invalid("invalid status code"))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Names are taken now; values are sliced out of the head once it is frozen,
    // which needs `buf` back from the parser: remember where each one sits.
    let base = buf.as_ptr() as usize;
    // Room for what the proxy adds (`x-request-id`, at times `connection` or
    // HSTS), so the map does not grow again on the way out.
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + 3);
    let mut values = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Invalid("invalid header name"))?;
        let start = h.value.as_ptr() as usize - base;
        values.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(length).freeze();
    let mut close = version == Version::HTTP_10;
    for (name, start, end) in values {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| HeadError::Invalid("invalid header value"))?;
        if name == header::CONNECTION {
            for token in value.to_str().unwrap_or_default().split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        keep_alive: !close,
    }))
}

/// How the response body is delimited.
pub(super) fn response_framing(head: &Head, head_request: bool) -> Result<Decoder, ProxyError> {
    let status = head.status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Decoder::Upgrade);
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Decoder::Length(0));
    }
    if let Some(codings) = last_value(&head.headers, &header::TRANSFER_ENCODING) {
        // Chunked must be the last coding; anything else runs until the close.
        let chunked = codings
            .rsplit(',')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            Decoder::Chunked(Chunk::Size)
        } else {
            Decoder::Eof
        });
    }
    let mut length = None;
    for value in head.headers.get_all(header::CONTENT_LENGTH) {
        // Digits only: `+5`, ` 5` or `5, 5` mean different lengths to different parsers.
        let parsed = parse_digits(value.as_bytes(), 10)
            .ok_or(ProxyError::UpstreamResponse("invalid Content-Length"))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(ProxyError::UpstreamResponse("conflicting Content-Length"));
        }
        length = Some(parsed);
    }
    Ok(length.map_or(Decoder::Eof, Decoder::Length))
}

fn last_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .map(|v| v.to_str().unwrap_or_default())
}

/// Where the body decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Eof,
    /// A `101`: the connection now carries another protocol.
    Upgrade,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// One step of decoding what is buffered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Decoder {
    pub(super) fn is_done(self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }

    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProxyError> {
        loop {
            match self {
                Decoder::Done | Decoder::Upgrade | Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(Decoded::Done);
                }
                Decoder::Length(left) => return Ok(take_data(buf, left)),
                Decoder::Eof => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    let data = take_data(buf, left);
                    if *left == 0 {
                        *self = Decoder::Chunked(Chunk::DataEnd);
                    }
                    return Ok(data);
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if !line.is_empty() {
                        return Err(ProxyError::UpstreamResponse("chunk without CRLF"));
                    }
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Hex digits, then optionally `;extensions`: no sign, no space.
                    let digits = line[..].split(|&b| b == b';').next().unwrap_or_default();
                    let size = parse_digits(digits, 16)
                        .ok_or(ProxyError::UpstreamResponse("invalid chunk size"))?;
                    *self = Decoder::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Decoder::Chunked(Chunk::Trailers) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Decoder::Done;
                    }
                }
            }
        }
    }
}

/// Up to `left` bytes of what is buffered, counted off `left`.
fn take_data(buf: &mut BytesMut, left: &mut u64) -> Decoded {
    if buf.is_empty() {
        return Decoded::NeedMore;
    }
    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= n as u64;
    Decoded::Data(buf.split_to(n).freeze())
}

/// A number in `radix` made of digits only (at most 16 of them), as framing
/// needs: what `str::parse` would also accept (`+`, spaces) is refused.
pub(super) fn parse_digits(digits: &[u8], radix: u32) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(radix)?;
        n.checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))
    })
}

/// Takes one CRLF-terminated line (without the CRLF) off the front of `buf`. A
/// bare LF is an error: parsers that accept it and those that do not would
/// split the body differently.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, ProxyError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ProxyError::UpstreamResponse("chunk line too long"));
        }
        return Ok(None);
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(ProxyError::UpstreamResponse("bare LF in a chunk line"));
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a decoder `step` bytes at a time; returns the data.
    fn decode_all(mut decoder: Decoder, input: &[u8], step: usize) -> Result<Vec<u8>, ProxyError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut chunks = input.chunks(step);
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => out.extend_from_slice(&data),
                Decoded::Done => return Ok(out),
                Decoded::NeedMore => match chunks.next() {
                    Some(more) => buf.extend_from_slice(more),
                    None => return Err(ProxyError::UpstreamResponse("input ended")),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let body =
            b"5\r\nhello\r\n6;name=value\r\n world\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            let out = decode_all(Decoder::Chunked(Chunk::Size), body, step).unwrap();
            assert_eq!(out, b"hello world0123456789", "step {step}");
        }
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for body in [&b"zz\r\nhello\r\n"[..], b"5\r\nhelloXY0\r\n\r\n"] {
            assert!(
                decode_all(Decoder::Chunked(Chunk::Size), body, 1).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let mut buf = BytesMut::from(&b"abcdefNEXT"[..]);
        let mut decoder = Decoder::Length(6);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"abcdef"))
        );
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn heads_parse_once_complete_and_say_whether_to_keep_the_connection() {
        let cases: [(&[u8], Option<bool>); 5] = [
            (b"HTTP/1.1 200 OK\r\ncontent-le", None),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Some(true)),
            (b"HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n", Some(false)),
            (b"HTTP/1.0 200 OK\r\n\r\n", Some(false)),
            (
                b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n",
                Some(true),
            ),
        ];
        for (input, keep_alive) in cases {
            let mut buf = BytesMut::from(input);
            let head = parse_head(&mut buf).unwrap();
            assert_eq!(
                head.map(|h| h.keep_alive),
                keep_alive,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 404 Not Found\r\nx-a: 1\r\nx-a: 2\r\n\r\nbody"[..]);
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"body", "the body stays in the buffer");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let head = |raw: &[u8]| parse_head(&mut BytesMut::from(raw)).unwrap().unwrap();
        let cases: [(&[u8], bool, Decoder); 6] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                false,
                Decoder::Length(5),
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                false,
                Decoder::Chunked(Chunk::Size),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                true,
                Decoder::Length(0),
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                false,
                Decoder::Length(0),
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                false,
                Decoder::Eof,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", false, Decoder::Eof),
        ];
        for (raw, head_request, want) in cases {
            let got = response_framing(&head(raw), head_request).unwrap();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// Lengths and chunk lines that parsers read differently are refused (the
    /// caller answers 502 and drops the connection), never guessed at.
    #[test]
    fn ambiguous_framing_is_refused() {
        let head = |raw: &[u8]| parse_head(&mut BytesMut::from(raw)).unwrap().unwrap();
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                response_framing(&head(raw), false).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        for body in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"00000000000000005\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(Decoder::Chunked(Chunk::Size), body, 1).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse_digits(b"ffffffffffffffff", 16), Some(u64::MAX));
        assert_eq!(parse_digits(b"18446744073709551616", 10), None);
    }

    #[test]
    fn fuzzed_heads_and_chunked_bodies_never_panic() {
        let heads: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.0 101 Switching\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nx-a: 1\r\n\r\n",
        ];
        crate::fuzz::bytes(&heads, crate::fuzz::iterations(20_000), |raw| {
            let mut buf = BytesMut::from(raw);
            if let Ok(Some(head)) = parse_head(&mut buf) {
                let _ = response_framing(&head, false);
            }
        });
        let bodies: [&[u8]; 2] = [
            b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\n\r\n",
        ];
        crate::fuzz::bytes(&bodies, crate::fuzz::iterations(20_000), |raw| {
            // Whatever comes out, never more than went in.
            if let Ok(out) = decode_all(Decoder::Chunked(Chunk::Size), raw, 3) {
                assert!(out.len() <= raw.len());
            }
        });
    }
}
