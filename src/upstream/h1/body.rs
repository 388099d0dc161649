//! The body of an HTTP/1.1 answer, read straight from the upstream socket as
//! the client side asks for it. Its connection goes back to the pool when the
//! body has been read to the end, and is closed otherwise.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::connection::Connection;
use super::decode::{Decoded, Decoder};
use super::PoolHandle;
use crate::upstream::error::ProxyError;

/// A response body read straight off the upstream connection, which goes back to
/// the endpoint's pool as soon as the body has been read to the end.
#[derive(Debug)]
pub struct H1Body {
    /// `None` once the body has ended (or failed).
    conn: Option<Connection>,
    decoder: Decoder,
    reusable: bool,
    pool: PoolHandle,
}

impl H1Body {
    pub(super) fn new(
        conn: Connection,
        decoder: Decoder,
        reusable: bool,
        pool: PoolHandle,
    ) -> H1Body {
        let mut body = H1Body {
            conn: Some(conn),
            decoder,
            reusable,
            pool,
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
                self.pool.checkin(conn);
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
