//! SSL passthrough (`ssl-passthrough: "true"` with `--enable-ssl-passthrough`,
//! as ingress-nginx): on the HTTPS port, a connection whose SNI names a
//! passthrough host is spliced as TCP to one of its pods, TLS and all; any
//! other is terminated as usual. The ClientHello is peeked, never consumed,
//! so a terminated connection's handshake sees every byte.
//!
//! The parse is bounded: one TLS record of at most `MAX_HELLO` bytes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::window::Outcome;
use crate::balance::ThreadRandom;
use crate::routing::Passthrough;

/// The largest ClientHello record read (a TLS record's limit plus its header).
const MAX_HELLO: usize = 16 * 1024 + 5;
/// Pods tried for one connection before giving up.
const ATTEMPTS: usize = 3;

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not all of the ClientHello has arrived.
    Partial,
    /// A ClientHello, with its server name if it has one.
    Complete(Option<String>),
    /// Not a TLS ClientHello.
    NotTls,
}

/// Reads the server name from a ClientHello record.
pub fn server_name(bytes: &[u8]) -> Hello {
    if bytes.len() < 5 {
        return Hello::Partial;
    }
    // A handshake record (22) of TLS 1.x.
    if bytes[0] != 22 || bytes[1] != 3 {
        return Hello::NotTls;
    }
    let length = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if bytes.len() < 5 + length {
        return if 5 + length > MAX_HELLO {
            Hello::NotTls
        } else {
            Hello::Partial
        };
    }
    match parse_hello(&bytes[5..5 + length]) {
        Some(name) => Hello::Complete(name),
        None => Hello::NotTls,
    }
}

/// A cursor that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// `Some(name)` for a ClientHello (the name when it has one); `None` otherwise.
fn parse_hello(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let length = r.u24()?;
    let mut r = Reader(r.take(length)?);
    r.take(2 + 32)?; // version, random
    let session = r.u8()?;
    r.take(session)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let compression = r.u8()?;
    r.take(compression)?;
    if r.0.is_empty() {
        return Some(None); // no extensions
    }
    let extensions = r.u16()?;
    let mut r = Reader(r.take(extensions)?);
    while !r.0.is_empty() {
        let kind = r.u16()?;
        let size = r.u16()?;
        let body = r.take(size)?;
        if kind != 0 {
            continue;
        }
        // server_name: a list of (type, name); type 0 is a host name.
        let mut names = Reader(body);
        let list = names.u16()?;
        let mut names = Reader(names.take(list)?);
        while !names.0.is_empty() {
            let kind = names.u8()?;
            let size = names.u16()?;
            let name = names.take(size)?;
            if kind == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// The server name of the ClientHello waiting on `stream`, peeked. `None`
/// when there is none, it is not TLS, or it does not come within `timeout`.
pub async fn peek_server_name(stream: &TcpStream, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; MAX_HELLO];
    loop {
        let seen = tokio::time::timeout_at(deadline, stream.peek(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if seen == 0 {
            return None;
        }
        match server_name(&buffer[..seen]) {
            Hello::Complete(name) => return name,
            Hello::NotTls => return None,
            // The rest of a ClientHello split over segments: `peek` returns at
            // once while bytes are waiting, so look again shortly.
            Hello::Partial => {
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Splices `client` to a pod of `backend` until either side closes. Connect
/// failures feed the pod's breaker and move to another pod.
pub async fn splice(mut client: TcpStream, to: Passthrough) {
    let Passthrough {
        backend,
        balance: policy,
        connect_timeout,
    } = to;
    let mut tried: Vec<SocketAddr> = Vec::new();
    for _ in 0..ATTEMPTS {
        let Some(pick) = backend.pick(&policy, None, &tried, Instant::now(), &mut ThreadRandom)
        else {
            return;
        };
        let addr = pick.endpoint.addr();
        let started = Instant::now();
        let connected = tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await;
        let finished = Instant::now();
        let latency = finished.saturating_duration_since(started);
        match connected {
            Ok(Ok(mut pod)) => {
                backend.record(
                    &policy,
                    &pick,
                    Outcome::Response(200),
                    latency,
                    finished,
                    &mut ThreadRandom,
                );
                let _ = pod.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
                return;
            }
            _ => {
                backend.record(
                    &policy,
                    &pick,
                    Outcome::ConnectFailure,
                    latency,
                    finished,
                    &mut ThreadRandom,
                );
                tried.push(addr);
            }
        }
    }
    tracing::debug!(backend = %backend.name, "passthrough: no pod could be reached");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A ClientHello as rustls writes it, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        use std::io::Write as _;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out.flush().unwrap();
        out
    }

    #[test]
    fn reads_the_server_name_of_a_real_client_hello() {
        let hello = client_hello("Pass.Example");
        assert_eq!(
            server_name(&hello),
            Hello::Complete(Some("pass.example".into()))
        );
        assert_eq!(server_name(&hello[..hello.len() - 1]), Hello::Partial);
        assert_eq!(server_name(&hello[..3]), Hello::Partial);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotTls);
    }

    #[test]
    fn fuzzed_hellos_never_panic() {
        let hello = client_hello("pass.example");
        let seed = String::from_utf8_lossy(&hello).into_owned();
        crate::fuzz::texts(&[seed.as_str()], crate::fuzz::iterations(5_000), |text| {
            let _ = server_name(text.as_bytes());
        });
        let mut bytes = hello.clone();
        for i in 5..bytes.len() {
            let saved = bytes[i];
            bytes[i] = 0xff;
            let _ = server_name(&bytes);
            bytes[i] = saved;
        }
    }
}
