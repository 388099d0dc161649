//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies it), for
//! `use-proxy-protocol: true`: an edge tier of TCP load balancers tells sluice
//! the client's address in a header before the connection's first byte.
//!
//! Every connection must then start with the header; one that does not is
//! closed. The address it declares is believed only from peers in
//! `proxy-real-ip-cidr`: anyone else could claim any address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes with its CRLF.
const V1_MAX: usize = 107;
/// Longest v2 header read: addresses and the TLVs balancers add (AWS, GCP).
const V2_MAX: usize = 16 + 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// This many bytes of header, declaring this source (`None`: `LOCAL`,
    /// `UNKNOWN` or a family without addresses, such as a health check).
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// More bytes are needed.
    Partial,
}

/// Parses a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Header, &'static str> {
    if buf.len() < V2_SIGNATURE.len() {
        let v1 = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        let v2 = V2_SIGNATURE.starts_with(buf);
        return if v1 || v2 {
            Ok(Header::Partial)
        } else {
            Err("no PROXY protocol header")
        };
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    Err("no PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Result<Header, &'static str> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("PROXY v1 line too long")
        } else {
            Ok(Header::Partial)
        };
    };
    let line = std::str::from_utf8(&window[..end]).map_err(|_| "PROXY v1 line is not text")?;
    let mut fields = line.split(' ');
    let _proxy = fields.next();
    let source = match fields.next() {
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let ip = |s: Option<&str>| -> Result<IpAddr, &'static str> {
                s.and_then(|s| s.parse().ok())
                    .ok_or("PROXY v1: bad address")
            };
            let port = |s: Option<&str>| -> Result<u16, &'static str> {
                s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or("PROXY v1: bad port")
            };
            let (src, _dst) = (ip(fields.next())?, ip(fields.next())?);
            let (sport, _dport) = (port(fields.next())?, port(fields.next())?);
            if fields.next().is_some() || (family == "TCP4") != src.is_ipv4() {
                return Err("PROXY v1: malformed line");
            }
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err("PROXY v1: unknown protocol family"),
    };
    Ok(Header::Complete {
        len: end + 2,
        source,
    })
}

fn parse_v2(buf: &[u8]) -> Result<Header, &'static str> {
    if buf.len() < 16 {
        return Ok(Header::Partial);
    }
    let (version_command, family) = (buf[12], buf[13]);
    if version_command >> 4 != 2 {
        return Err("PROXY v2: unknown version");
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Err("PROXY v2: header too long");
    }
    let Some(body) = buf.get(16..len) else {
        return Ok(Header::Partial);
    };
    let source = match (version_command & 0x0f, family) {
        // LOCAL: the balancer's own connection (a health check).
        (0, _) => None,
        (1, 0x11) => {
            let a = body.get(..12).ok_or("PROXY v2: short IPv4 addresses")?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (1, 0x21) => {
            let a = body.get(..36).ok_or("PROXY v2: short IPv6 addresses")?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, UDP, unix sockets: no address to use.
        (1, _) => None,
        _ => return Err("PROXY v2: unknown command"),
    };
    Ok(Header::Complete { len, source })
}

/// Reads (and consumes exactly) the PROXY header at the start of `stream`.
pub async fn read(stream: &mut TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, String> {
    let mut buf = vec![0u8; V2_MAX];
    let found = tokio::time::timeout(timeout, async {
        loop {
            // Peek, so that not a byte past the header is taken from the stream.
            let n = stream.peek(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before the PROXY header".to_owned());
            }
            match parse(&buf[..n])? {
                Header::Complete { len, source } => return Ok((len, source)),
                // The rest of the header is on its way (it nearly always
                // arrives in the first packet).
                Header::Partial => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
    .await
    .map_err(|_| "no PROXY header in time".to_owned())??;
    let (len, source) = found;
    stream
        .read_exact(&mut buf[..len])
        .await
        .map_err(|e| e.to_string())?;
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([0x20 | command, family]);
        out.extend((addresses.len() as u16).to_be_bytes());
        out.extend(addresses);
        out
    }

    #[test]
    fn v1_and_v2_headers_declare_the_source() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5123 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Ok(Header::Complete {
                len: 41,
                source: Some("203.0.113.7:5123".parse().unwrap())
            })
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(
            matches!(parse(six), Ok(Header::Complete { source: Some(s), .. }) if s.port() == 1)
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Header::Complete {
                len: 15,
                source: None
            })
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Header::Partial));
        assert_eq!(parse(b"PRO"), Ok(Header::Partial));
        let mut four = vec![198, 51, 100, 9, 10, 0, 0, 1];
        four.extend(4242u16.to_be_bytes());
        four.extend(80u16.to_be_bytes());
        let header = v2(1, 0x11, &four);
        assert_eq!(
            parse(&header),
            Ok(Header::Complete {
                len: 28,
                source: Some("198.51.100.9:4242".parse().unwrap())
            })
        );
        assert_eq!(parse(&header[..20]), Ok(Header::Partial));
        assert_eq!(
            parse(&v2(0, 0, &[])),
            Ok(Header::Complete {
                len: 16,
                source: None
            })
        );
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let endless = [&b"PROXY "[..], &[b'x'; 200]].concat();
        assert!(parse(&endless).is_err(), "a v1 line has at most 107 bytes");
    }

    #[test]
    fn fuzzed_headers_never_panic() {
        let mut four = vec![198, 51, 100, 9, 10, 0, 0, 1, 0, 1, 0, 80];
        let v2_four = v2(1, 0x11, &four);
        four.resize(36, 7);
        let v2_six = v2(1, 0x21, &four);
        crate::fuzz::bytes(
            &[
                b"PROXY TCP4 203.0.113.7 10.0.0.1 5123 80\r\n",
                b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
                &v2_four,
                &v2_six,
            ],
            crate::fuzz::iterations(20_000),
            |raw| {
                if let Ok(Header::Complete { len, .. }) = parse(raw) {
                    assert!(len <= raw.len());
                }
            },
        );
    }
}
