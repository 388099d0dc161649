//! HTTP/1.1 to the upstream, driven by the request's own task.
//!
//! hyper's client runs every connection as a task of its own and passes each
//! request and response across channels to it: per proxied request, two task
//! switches, a channel round trip and a oneshot. Here, as in nginx, the task that
//! serves the client connection also drives the upstream connection: `send`
//! writes the head, streams the body and parses the answer's head, and the
//! answer's body (`H1Body`) reads straight from the upstream socket while the
//! client side writes it on. The connection goes back to the pool when its
//! response has been read to the end.
//!
//! Framing follows RFC 9112: `Content-Length`, `chunked` (trailers are read and
//! dropped), or until the upstream closes; none for HEAD, 1xx, 204 and 304.
//! Interim 1xx answers are skipped; a `101` hands the socket to the tunnel.

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::body::RequestBody;
use super::error::ProxyError;
use crate::balance::EndpointState;
use crate::telemetry::connections::Upstream;

/// Most headers a response may have; past this the upstream's answer is refused
/// (as nginx's "upstream sent too many headers").
const MAX_HEADERS: usize = 128;
/// Largest response head, and longest chunk-size or trailer line.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Read at least this much room at a time.
const READ_CHUNK: usize = 16 * 1024;

/// One upstream HTTP/1.1 connection, idle in the pool or lent to one exchange.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read from the upstream and not consumed yet.
    read: BytesMut,
    /// The request head is encoded here; kept to reuse its allocation.
    write: Vec<u8>,
    /// Requests sent on this connection, the current one included.
    pub requests: u32,
    /// nginx's `proxy_send_timeout`: the longest a write may stall.
    send_timeout: Duration,
    _open: Open,
}

/// Counts the connection as open while it exists.
#[derive(Debug)]
struct Open;

impl Open {
    fn new() -> Open {
        Upstream::Http1.opened();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        Upstream::Http1.closed();
    }
}

/// One attempt's result: the answer, or the error and, when the upstream cannot
/// have seen the request, the request itself so it can be sent elsewhere.
pub type Sent = Result<Response<H1Body>, (ProxyError, Option<Request<RequestBody>>)>;

impl Connection {
    pub fn new(stream: TcpStream, send_timeout: Duration) -> Connection {
        Connection {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            requests: 0,
            send_timeout,
            _open: Open::new(),
        }
    }

    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    /// False when the upstream closed the idle connection (or sent something
    /// unasked). Costs no syscall unless the socket has become readable.
    pub fn is_open(&mut self) -> bool {
        make_room(&mut self.read);
        matches!(self.stream.try_read_buf(&mut self.read), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `request` and reads the head of its answer.
    #[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
    pub fn send(
        mut self,
        request: Request<RequestBody>,
        endpoint: &Arc<EndpointState>,
    ) -> impl Future<Output = Sent> + '_ {
        async move {
            let reused = self.requests > 0;
            self.requests += 1;
            let framing = request_framing(&request);
            encode_head(&mut self.write, &request, framing);
            // Requests that arrived together go out together: a pod woken for each
            // one separately costs more than the wait (on loopback, each wake-up is
            // paid by the waker; measured in benches/README.md).
            behind_ready_tasks().await;
            match write_all(
                &self.stream,
                &mut [IoSlice::new(&self.write)],
                self.send_timeout,
            )
            .await
            {
                Ok(()) => {}
                Err((error, 0)) => return Err((error, Some(request))),
                Err((error, _)) => return Err((error, None)),
            }
            let head_request = request.method() == Method::HEAD;
            let (parts, body) = request.into_parts();
            let (head, body_left) = match framing {
                Framing::Empty => (read_head(&mut self.stream, &mut self.read).await, false),
                _ => {
                    let timeout = self.send_timeout;
                    // Boxed: only requests with a body take this path, and its
                    // state would otherwise enlarge every request's future.
                    let sent = Box::pin(send_body_and_read_head(
                        &mut self.stream,
                        &mut self.read,
                        body,
                        framing,
                        timeout,
                    ));
                    match sent.await {
                        Ok(answer) => answer,
                        Err(error) => return Err((error, None)),
                    }
                }
            };
            let mut head = match head {
                Ok(head) => head,
                // The classic keep-alive race: the upstream closed the idle connection
                // as the request went out. A bodiless idempotent request cannot have
                // been acted on, so it may go again (Go's http.Transport does the same).
                Err(error @ HeadError::Closed)
                    if reused && framing == Framing::Empty && is_idempotent(&parts.method) =>
                {
                    let request = Request::from_parts(parts, RequestBody::empty());
                    return Err((error.into(), Some(request)));
                }
                Err(error) => return Err((error.into(), None)),
            };
            let mut reusable = head.keep_alive && !body_left;
            // Both framings at once smell of response splitting: Transfer-Encoding
            // wins, the length must not reach the client, and the connection ends.
            if head.headers.contains_key(header::TRANSFER_ENCODING)
                && head.headers.remove(header::CONTENT_LENGTH).is_some()
            {
                reusable = false;
            }
            let framing = match response_framing(&head, head_request) {
                Ok(framing) => framing,
                Err(error) => return Err((error, None)),
            };
            if matches!(framing, Decoder::Eof | Decoder::Upgrade) {
                reusable = false;
            }
            let body = H1Body::new(self, framing, reusable, endpoint.clone());
            let mut response = Response::new(body);
            *response.status_mut() = head.status;
            *response.version_mut() = head.version;
            *response.headers_mut() = head.headers;
            Ok(response)
        }
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_read_more(&mut self.stream, &mut self.read, cx)
    }
}

/// Streams the request body while watching for the answer: a pod may answer
/// early (a 413, a redirect) without reading it all. Also says whether part of
/// the body was left unsent, which makes the connection unusable afterwards.
async fn send_body_and_read_head(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    body: RequestBody,
    framing: Framing,
    timeout: Duration,
) -> Result<(Result<Head, HeadError>, bool), ProxyError> {
    let (mut reader, writer) = stream.split();
    let mut sending = std::pin::pin!(send_body(writer.as_ref(), body, framing, timeout));
    let sent = tokio::select! {
        biased;
        head = read_head(&mut reader, read) => return Ok((head, true)),
        sent = &mut sending => sent,
    };
    match sent {
        Ok(()) => Ok((read_head(&mut reader, read).await, false)),
        // The write failed, maybe because the pod answered and closed: an answer
        // already received is still the answer.
        Err(error @ ProxyError::UpstreamConnection(_)) => {
            match read_head(&mut reader, read).await {
                Ok(head) => Ok((Ok(head), true)),
                Err(_) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

/// Lets every task already woken run first, then resumes, without polling the
/// IO driver in between (unlike `yield_now`). When nothing else is ready, that
/// is at once.
fn behind_ready_tasks() -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    /// `Content-Length` from the client, or a size known in advance.
    Length,
    Chunked,
}

fn request_framing(request: &Request<RequestBody>) -> Framing {
    if request.headers().contains_key(header::CONTENT_LENGTH) {
        Framing::Length
    } else if request.body().is_end_stream() {
        Framing::Empty
    } else if request.body().size_hint().exact().is_some() {
        Framing::Length
    } else {
        Framing::Chunked
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `METHOD target HTTP/1.1`, the headers and the framing header. Header values
/// cannot hold CR or LF (`HeaderValue` refuses them), so nothing can be injected.
fn encode_head(out: &mut Vec<u8>, request: &Request<RequestBody>, framing: Framing) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length if !request.headers().contains_key(header::CONTENT_LENGTH) => {
            let length = request.body().size_hint().exact().unwrap_or(0);
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // A body-carrying method with an empty body still says so, as hyper does.
        Framing::Empty
            if matches!(
                *request.method(),
                Method::POST | Method::PUT | Method::PATCH
            ) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes every slice; a write that stalls past `timeout` fails. The timer is
/// armed only when the socket is full. On failure, says how much went out.
async fn write_all(
    stream: &TcpStream,
    mut bufs: &mut [IoSlice<'_>],
    timeout: Duration,
) -> Result<(), (ProxyError, usize)> {
    let mut written = 0;
    while !bufs.is_empty() {
        match stream.try_write_vectored(bufs) {
            Ok(0) => {
                let error = io::Error::from(io::ErrorKind::WriteZero);
                return Err((ProxyError::UpstreamConnection(error), written));
            }
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(timeout, stream.writable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err((ProxyError::UpstreamConnection(e), written)),
                    Err(_) => return Err((ProxyError::SendTimeout, written)),
                }
            }
            Err(e) => return Err((ProxyError::UpstreamConnection(e), written)),
        }
    }
    Ok(())
}

/// Streams the request body as it arrives from the client, framed as announced.
async fn send_body(
    stream: &TcpStream,
    mut body: RequestBody,
    framing: Framing,
    timeout: Duration,
) -> Result<(), ProxyError> {
    let chunked = framing == Framing::Chunked;
    while let Some(frame) = body.frame().await {
        // Trailers are dropped: an HTTP/1.1 pod has no use for them here.
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let mut size = [0u8; 18];
        let size = if chunked {
            chunk_size_line(data.len(), &mut size)
        } else {
            &[]
        };
        let end: &[u8] = if chunked { b"\r\n" } else { b"" };
        let mut bufs = [IoSlice::new(size), IoSlice::new(&data), IoSlice::new(end)];
        write_all(stream, &mut bufs, timeout)
            .await
            .map_err(|(e, _)| e)?;
    }
    if chunked {
        write_all(stream, &mut [IoSlice::new(b"0\r\n\r\n")], timeout)
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// `{hex}\r\n`, written into `out`.
fn chunk_size_line(size: usize, out: &mut [u8; 18]) -> &[u8] {
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

/// Room to read into, so that a read of 0 bytes can only mean the end.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Reads what has arrived. Through `AsyncRead`, not `try_read`: a short read
/// clears tokio's readiness flag, which spares the next read's `EAGAIN` syscall
/// (and makes the idle check at checkout free).
fn poll_read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    make_room(buf);
    poll_read_buf(Pin::new(reader), cx, buf)
}

/// Why no response head came.
#[derive(Debug)]
enum HeadError {
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
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    keep_alive: bool,
}

/// Reads until a final (non-1xx, or 101) response head is complete.
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Head, HeadError> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf)? {
                let interim = head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS;
                if !interim {
                    return Ok(head);
                }
                continue;
            }
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(HeadError::Invalid("response head too large"));
            }
        }
        let had = buf.len();
        let read = std::future::poll_fn(|cx| poll_read_more(reader, buf, cx)).await;
        match read {
            Ok(0) if had == 0 => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Invalid(
                    "closed in the middle of the response head",
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Parses a complete head off the front of `buf`, or `None` if more is needed.
/// Header values share the head's bytes: one allocation for them all.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
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
fn response_framing(head: &Head, head_request: bool) -> Result<Decoder, ProxyError> {
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
enum Decoder {
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
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// One step of decoding what is buffered.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Decoder {
    fn is_done(self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProxyError> {
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
fn parse_digits(digits: &[u8], radix: u32) -> Option<u64> {
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

/// A response body read straight off the upstream connection, which goes back to
/// the endpoint's pool as soon as the body has been read to the end.
#[derive(Debug)]
pub struct H1Body {
    /// `None` once the body has ended (or failed).
    conn: Option<Connection>,
    decoder: Decoder,
    reusable: bool,
    endpoint: Arc<EndpointState>,
}

impl H1Body {
    fn new(
        conn: Connection,
        decoder: Decoder,
        reusable: bool,
        endpoint: Arc<EndpointState>,
    ) -> H1Body {
        let mut body = H1Body {
            conn: Some(conn),
            decoder,
            reusable,
            endpoint,
        };
        if decoder.is_done() {
            body.finish();
        }
        body
    }

    /// The connection, for a tunnel once the upstream switched protocols: the
    /// socket and what it already sent past the `101` head. The body is empty
    /// afterwards.
    pub fn take_upgraded(&mut self) -> Option<(TcpStream, BytesMut)> {
        if self.decoder != Decoder::Upgrade {
            return None;
        }
        self.decoder = Decoder::Done;
        let Connection { stream, read, .. } = self.conn.take()?;
        Some((stream, read))
    }

    /// The body has ended: the connection goes back to the pool if it may.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.read.is_empty() {
                self.endpoint.pool.checkin(conn);
            }
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body the client side never reads because it knows it is empty still
        // ended; any other unfinished body leaves its connection in an unknown
        // state, so the connection is closed.
        if self.decoder.is_done() {
            self.finish();
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.read) {
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) if this.decoder == Decoder::Eof => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(ProxyError::UpstreamResponse(
                        "closed in the middle of the response body",
                    ))));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(ProxyError::UpstreamConnection(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A `101` has no body: what follows belongs to the tunnel.
        self.decoder.is_done() || self.decoder == Decoder::Upgrade
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            Decoder::Done | Decoder::Upgrade => SizeHint::with_exact(0),
            Decoder::Chunked(_) | Decoder::Eof => SizeHint::default(),
        }
    }
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
