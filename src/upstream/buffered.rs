//! `proxy-request-buffering: on` (ingress-nginx's default): a request body
//! read whole from the client before the request goes to a pod, so that
//! a slow client never holds a pod's connection, an oversized body is a 413
//! before any pod sees it, and a retry can send the body again.
//!
//! The first `client-body-buffer-size` bytes stay in memory; the rest goes
//! to an unlinked temporary file (`client-body-temp-path`), as nginx's
//! `client_body_temp_path`. Every spooled byte counts against one budget
//! for the whole process (`client-body-temp-limit`): a body that would pass
//! it, or a file that cannot be written, is not refused: what was read so
//! far goes first and the rest streams from the client, and such a request
//! cannot be sent twice (`Spool::read` says how it ended).

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use super::error::ProxyError;

/// Bytes written to (or read from) the file at once.
const FILE_CHUNK: usize = 64 << 10;

/// Bytes spooled to temporary files by all requests, now.
static SPOOLED: AtomicU64 = AtomicU64::new(0);

/// Where bodies beyond memory go, for the whole process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    pub dir: PathBuf,
    /// Bytes on disk at once, for all requests together.
    pub limit: u64,
}

/// How one request is buffered (its route's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// `client-body-buffer-size`: bytes kept in memory.
    pub memory: u64,
    /// `client-body-timeout`: the longest wait for the client's next bytes.
    pub timeout: Duration,
}

/// How reading a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Memory,
    File,
    /// The spool was full or failed: the rest streams.
    Streamed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Memory => "memory",
            Outcome::File => "file",
            Outcome::Streamed => "streamed",
        }
    }
}

/// A body read (wholly or in part), shared by every attempt that sends it.
#[derive(Debug, Default)]
pub struct Buffered {
    chunks: Vec<Chunk>,
    file: Option<SpoolFile>,
    trailers: Option<HeaderMap>,
    len: u64,
}

#[derive(Debug)]
enum Chunk {
    Memory(Bytes),
    /// A range of the spool file.
    File {
        offset: u64,
        len: u64,
    },
}

/// The temporary file and the budget it holds; both are released when the
/// last attempt's body is dropped.
#[derive(Debug)]
struct SpoolFile {
    file: Arc<File>,
    /// Bytes written, counted in `SPOOLED`: also the file's length.
    reserved: u64,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        SPOOLED.fetch_sub(self.reserved, Ordering::Relaxed);
    }
}

impl Spool {
    /// Reads `body` into memory and the spool until it ends, counting its
    /// bytes in `seen` against `limit` (`proxy-body-size`). Returns what was
    /// read and how it ended; unless `Outcome::Streamed`, the body is done.
    pub async fn read(
        &self,
        body: &mut Incoming,
        settings: Buffering,
        limit: Option<u64>,
        seen: &mut u64,
    ) -> Result<(Buffered, Outcome), ProxyError> {
        let mut buffered = Buffered::default();
        // Bytes read but not yet placed: past `memory`, they wait for a full
        // file chunk.
        let mut pending = BytesMut::new();
        let mut spooling = false;
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
            let frame = match tokio::time::timeout(settings.timeout, next).await {
                Err(_) => return Err(ProxyError::ClientBodyTimeout),
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    tracing::debug!(%error, "client request body failed");
                    return Err(ProxyError::ClientBody);
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        buffered.trailers = Some(trailers);
                    }
                    continue;
                }
            };
            *seen += data.len() as u64;
            if limit.is_some_and(|limit| *seen > limit) {
                return Err(ProxyError::BodyTooLarge);
            }
            if !spooling && buffered.len + data.len() as u64 <= settings.memory {
                buffered.push_memory(data);
                continue;
            }
            spooling = true;
            pending.extend_from_slice(&data);
            if pending.len() >= FILE_CHUNK && !self.write(&mut buffered, &mut pending).await {
                return Ok((buffered, Outcome::Streamed));
            }
        }
        if !pending.is_empty() && !self.write(&mut buffered, &mut pending).await {
            return Ok((buffered, Outcome::Streamed));
        }
        let outcome = if buffered.file.is_some() {
            Outcome::File
        } else {
            Outcome::Memory
        };
        Ok((buffered, outcome))
    }

    /// Appends `pending` to the spool file; false (and `pending` kept in
    /// memory, in order) when the budget or the disk says no.
    async fn write(&self, buffered: &mut Buffered, pending: &mut BytesMut) -> bool {
        let data = pending.split().freeze();
        let len = data.len() as u64;
        if SPOOLED.fetch_add(len, Ordering::Relaxed) + len > self.limit {
            SPOOLED.fetch_sub(len, Ordering::Relaxed);
            tracing::debug!(
                limit = self.limit,
                "client-body-temp-limit reached; streaming the rest of a request body"
            );
            buffered.push_memory(data);
            return false;
        }
        if let Err(error) = self.append(buffered, data.clone()).await {
            SPOOLED.fetch_sub(len, Ordering::Relaxed);
            tracing::warn!(%error, dir = %self.dir.display(), "a request body could not be spooled; streaming the rest");
            buffered.push_memory(data);
            return false;
        }
        true
    }

    /// Writes `data` (already counted in `SPOOLED`) at the end of the file.
    async fn append(&self, buffered: &mut Buffered, data: Bytes) -> io::Result<()> {
        let spool = match &mut buffered.file {
            Some(spool) => spool,
            none => none.insert(SpoolFile {
                file: Arc::new(create(&self.dir).await?),
                reserved: 0,
            }),
        };
        let (file, offset, len) = (spool.file.clone(), spool.reserved, data.len() as u64);
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(io::Error::other)??;
        spool.reserved += len;
        buffered.len += len;
        match buffered.chunks.last_mut() {
            Some(Chunk::File { len: last, .. }) => *last += len,
            _ => buffered.chunks.push(Chunk::File { offset, len }),
        }
        Ok(())
    }
}

impl Buffered {
    fn push_memory(&mut self, data: Bytes) {
        self.len += data.len() as u64;
        if !data.is_empty() {
            self.chunks.push(Chunk::Memory(data));
        }
    }
}

/// An anonymous file in `dir` (Linux's `O_TMPFILE`, else created and
/// unlinked at once): nothing is left behind, whatever happens.
async fn create(dir: &Path) -> io::Result<File> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
        .await
        .map_err(io::Error::other)?
}

/// One pass over a buffered body, as frames.
#[derive(Debug)]
pub struct Reader {
    body: Arc<Buffered>,
    chunk: usize,
    /// How far into a file chunk.
    offset: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    trailers_sent: bool,
}

impl Reader {
    pub fn new(body: Arc<Buffered>) -> Reader {
        Reader {
            body,
            chunk: 0,
            offset: 0,
            reading: None,
            trailers_sent: false,
        }
    }

    /// Another pass from the start.
    pub fn again(&self) -> Reader {
        Reader::new(self.body.clone())
    }

    pub fn is_end_stream(&self) -> bool {
        self.chunk >= self.body.chunks.len() && (self.trailers_sent || self.body.trailers.is_none())
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        let rest: u64 = self.body.chunks[self.chunk.min(self.body.chunks.len())..]
            .iter()
            .map(|c| match c {
                Chunk::Memory(data) => data.len() as u64,
                Chunk::File { len, .. } => *len,
            })
            .sum();
        rest - self.offset
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            let Some(chunk) = self.body.chunks.get(self.chunk) else {
                if self.trailers_sent {
                    return Poll::Ready(None);
                }
                self.trailers_sent = true;
                return Poll::Ready(self.body.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            };
            match chunk {
                Chunk::Memory(data) => {
                    self.chunk += 1;
                    return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
                }
                Chunk::File { offset, len } => {
                    if self.offset >= *len {
                        self.chunk += 1;
                        self.offset = 0;
                        continue;
                    }
                    let reading = self.reading.get_or_insert_with(|| {
                        let file = self.body.file.as_ref().map(|f| f.file.clone());
                        let at = offset + self.offset;
                        let size = (len - self.offset).min(FILE_CHUNK as u64) as usize;
                        tokio::task::spawn_blocking(move || {
                            let file = file.ok_or_else(|| io::Error::other("no spool file"))?;
                            let mut buf = vec![0; size];
                            file.read_exact_at(&mut buf, at)?;
                            Ok(Bytes::from(buf))
                        })
                    });
                    let read = ready!(Pin::new(reading).poll(cx));
                    self.reading = None;
                    let data = match read.map_err(io::Error::other).and_then(|r| r) {
                        Ok(data) => data,
                        Err(error) => return Poll::Ready(Some(Err(error))),
                    };
                    self.offset += data.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(reader: &mut Reader) -> Vec<u8> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = reader.poll_frame(&mut cx) {
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
            }
        }
        out
    }

    #[test]
    fn a_memory_body_reads_the_same_on_every_pass() {
        let mut body = Buffered::default();
        body.push_memory(Bytes::from_static(b"hello "));
        body.push_memory(Bytes::from_static(b"world"));
        let mut first = Reader::new(Arc::new(body));
        assert_eq!(first.remaining(), 11);
        let mut second = first.again();
        assert_eq!(chunks(&mut first), b"hello world");
        assert!(first.is_end_stream());
        assert_eq!(chunks(&mut second), b"hello world");
    }

    #[tokio::test]
    async fn past_memory_the_body_goes_to_a_file_and_comes_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            dir: dir.path().to_owned(),
            limit: 1 << 30,
        };
        let mut body = Buffered::default();
        body.push_memory(Bytes::from_static(b"head:"));
        let mut pending = BytesMut::from(&vec![b'x'; 100_000][..]);
        assert!(spool.write(&mut body, &mut pending).await);
        let mut pending = BytesMut::from(&b"tail"[..]);
        assert!(spool.write(&mut body, &mut pending).await);
        assert!(SPOOLED.load(Ordering::Relaxed) >= 100_004);
        // Nothing is left in the directory: the file is anonymous.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let body = Arc::new(body);
        let mut reader = Reader::new(body.clone());
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut out = Vec::new();
        loop {
            match reader.poll_frame(&mut cx) {
                Poll::Ready(None) => break,
                Poll::Ready(Some(frame)) => {
                    out.extend_from_slice(&frame.unwrap().into_data().unwrap())
                }
                Poll::Pending => tokio::task::yield_now().await,
            }
        }
        assert_eq!(out.len(), 5 + 100_000 + 4);
        assert!(out.starts_with(b"head:x") && out.ends_with(b"xtail"));
    }

    #[tokio::test]
    async fn a_spool_over_its_budget_keeps_the_bytes_in_memory_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            dir: dir.path().to_owned(),
            limit: 0,
        };
        let mut body = Buffered::default();
        let mut pending = BytesMut::from(&b"abc"[..]);
        assert!(!spool.write(&mut body, &mut pending).await);
        assert!(body.file.is_none());
        assert_eq!(chunks(&mut Reader::new(Arc::new(body))), b"abc");
    }
}
