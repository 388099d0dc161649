//! One upstream HTTP/1.1 connection and one exchange on it: write the head
//! (`encode`), stream the body while watching for an early answer, read the
//! answer's head (`decode`), and hand the socket to the response body (`body`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::body::H1Body;
use super::decode::{parse_head, response_framing, Decoder, Head, HeadError, MAX_HEAD_BYTES};
use super::encode::{chunk_size_line, encode_head, is_idempotent, request_framing, Framing};
use super::PoolHandle;
use crate::telemetry::connections::Upstream;
use crate::upstream::body::RequestBody;
use crate::upstream::error::ProxyError;

/// Read at least this much room at a time.
const READ_CHUNK: usize = 16 * 1024;

/// One upstream HTTP/1.1 connection, idle in the pool or lent to one exchange.
#[derive(Debug)]
pub struct Connection {
    pub(super) stream: TcpStream,
    /// Bytes read from the upstream and not consumed yet.
    pub(super) read: BytesMut,
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
/// have seen the request, its body, so that the request (whose head the caller
/// kept) can be sent elsewhere.
pub type Sent = Result<Response<H1Body>, (ProxyError, Option<RequestBody>)>;

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

    /// Sends the request (`head`, `body`) and reads the head of its answer. The
    /// head is borrowed, not taken: whatever happens, the caller still has it,
    /// so a bodiless request can go again without having been copied.
    #[allow(clippy::manual_async_fn)] // a smaller future: see `proxy`
    pub fn send<'h>(
        mut self,
        head: &'h Parts,
        body: RequestBody,
        pool: PoolHandle,
    ) -> impl Future<Output = Sent> + 'h {
        async move {
            let reused = self.requests > 0;
            self.requests += 1;
            let framing = request_framing(head, &body);
            encode_head(&mut self.write, head, &body, framing);
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
                Err((error, 0)) => return Err((error, Some(body))),
                Err((error, _)) => return Err((error, None)),
            }
            let head_request = head.method == Method::HEAD;
            let request_head = head;
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
                    if reused
                        && framing == Framing::Empty
                        && is_idempotent(&request_head.method) =>
                {
                    return Err((error.into(), Some(RequestBody::empty())));
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
            let body = H1Body::new(self, framing, reusable, pool);
            let mut response = Response::new(body);
            *response.status_mut() = head.status;
            *response.version_mut() = head.version;
            *response.headers_mut() = head.headers;
            Ok(response)
        }
    }

    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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

/// Writes every slice; a write that stalls past `timeout` fails. The timer is
/// armed only when the socket is full. On failure, says how much went out.
pub(super) async fn write_all(
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

/// Room to read into, so that a read of 0 bytes can only mean the end.
pub(super) fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Reads what has arrived. Through `AsyncRead`, not `try_read`: a short read
/// clears tokio's readiness flag, which spares the next read's `EAGAIN` syscall
/// (and makes the idle check at checkout free).
pub(super) fn poll_read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    make_room(buf);
    poll_read_buf(Pin::new(reader), cx, buf)
}

/// Reads until a final (non-1xx, or 101) response head is complete.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
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
