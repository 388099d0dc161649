//! The HTTP/1.1 side towards pods, against a scripted pod that writes exact bytes:
//! framings a hyper server never sends (close-delimited, chunked with trailers,
//! interim 1xx), malformed answers, and connections closed under a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use sluice::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted pod does with one request.
enum Script {
    /// Writes these bytes and keeps the connection.
    Reply(&'static [u8]),
    /// Writes these bytes and closes.
    ReplyAndClose(&'static [u8]),
    /// Closes without answering.
    Drop,
}

/// Every request head and body a pod received, in order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Chooses the script from (connection number, request number on it, request head).
type Scripter = fn(usize, usize, &str) -> Script;

struct Pod {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Received,
}

async fn scripted_pod(script: Scripter) -> Pod {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod = Pod {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        requests: Arc::default(),
    };
    let (connections, requests) = (pod.connections.clone(), pod.requests.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let conn = connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_scripted(stream, conn, script, requests.clone()));
        }
    });
    pod
}

async fn serve_scripted(mut stream: TcpStream, conn: usize, script: Scripter, requests: Received) {
    let mut buf = Vec::new();
    for n in 0.. {
        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        requests.lock().unwrap().push((head.clone(), body));
        match script(conn, n, &head) {
            Script::Reply(bytes) => stream.write_all(bytes).await.unwrap(),
            Script::ReplyAndClose(bytes) => {
                stream.write_all(bytes).await.unwrap();
                return;
            }
            Script::Drop => return,
        }
    }
}

/// One request: its head (lowercased) and its body, Content-Length or chunked.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    buf.drain(..end);
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                fill(stream, buf).await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await?;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < length {
            fill(stream, buf).await?;
        }
        body.extend(buf.drain(..length));
    }
    Some((head, body))
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn sluice_for(pod: &Pod) -> (Manifests, Server) {
    sluice_with(pod, &[]).await
}

async fn sluice_with(pod: &Pod, annotations: &[(&str, &str)]) -> (Manifests, Server) {
    let m = Manifests::new();
    let mut all = vec![("sluice.io/proxy-read-timeout", "2s")];
    all.extend_from_slice(annotations);
    m.write(
        "app.yaml",
        &(service_yaml("pod", &[pod.addr])
            + &ingress_yaml("app", None, &all, &[("/", "Prefix", "pod")])),
    );
    let sluice = start_sluice(m.path(), "").await;
    (m, sluice)
}

#[tokio::test]
async fn chunked_close_delimited_and_interim_answers_pass_through() {
    let pod = scripted_pod(|_, _, head| {
        if head.starts_with("get /chunked") {
            Script::Reply(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            )
        } else if head.starts_with("get /interim") {
            Script::Reply(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                  HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            )
        } else if head.starts_with("head ") {
            Script::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        } else if head.starts_with("get /no-content") {
            Script::Reply(b"HTTP/1.1 204 No Content\r\n\r\n")
        } else {
            Script::ReplyAndClose(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
            )
        }
    })
    .await;
    let (_m, sluice) = sluice_for(&pod).await;
    let http = client();
    let answer = |path: &'static str| {
        let request = get(sluice.http_addr, "a", path);
        let http = http.clone();
        async move {
            let reply = send(&http, request).await.unwrap();
            (reply.status, reply.text())
        }
    };
    for _ in 0..2 {
        assert_eq!(
            answer("/chunked").await,
            (StatusCode::OK, "hello world".into())
        );
    }
    assert_eq!(answer("/interim").await, (StatusCode::OK, "ok".into()));
    let head = Request::head(format!("http://{}/", sluice.http_addr))
        .header("host", "a")
        .body(Full::default())
        .unwrap();
    let reply = send(&http, head).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-length"], "1000");
    assert_eq!(answer("/no-content").await.0, StatusCode::NO_CONTENT);
    // Every answer so far was delimited, so one connection carried them all.
    assert_eq!(pod.connections.load(Ordering::SeqCst), 1);

    assert_eq!(
        answer("/close").await,
        (StatusCode::OK, "until the end".into())
    );
    assert_eq!(answer("/chunked").await.1, "hello world");
    assert_eq!(
        pod.connections.load(Ordering::SeqCst),
        2,
        "a close-delimited answer's connection is not reused"
    );
}

#[tokio::test]
async fn malformed_answers_get_502() {
    let pod = scripted_pod(|_, _, head| {
        if head.starts_with("get /garbage") {
            Script::ReplyAndClose(b"HTTP/1.1 abc\r\n\r\n")
        } else if head.starts_with("get /lengths") {
            Script::ReplyAndClose(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
            )
        } else if head.starts_with("get /chunk-lf") {
            Script::Reply(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
            )
        } else if head.starts_with("get /plus") {
            Script::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok")
        } else {
            Script::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        }
    })
    .await;
    let (_m, sluice) = sluice_for(&pod).await;
    let http = client();
    for (path, why) in [
        ("/garbage", "malformed response head"),
        ("/lengths", "conflicting Content-Length"),
        ("/plus", "invalid Content-Length"),
    ] {
        let reply = send(&http, get(sluice.http_addr, "a", path)).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(
            reply.text(),
            format!("502 Bad Gateway: the upstream sent an invalid response: {why}\n")
        );
    }
    let reply = send(&http, get(sluice.http_addr, "a", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    // A chunk line with a bare LF: the body fails, and that connection is
    // never used again.
    let before = pod.connections.load(Ordering::SeqCst);
    let broken = send(&http, get(sluice.http_addr, "a", "/chunk-lf")).await;
    assert!(broken.is_err(), "the client sees the body fail");
    let reply = send(&http, get(sluice.http_addr, "a", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(pod.connections.load(Ordering::SeqCst), before + 1);
}

/// A pod whose first connection answers once, then closes under the next
/// request: the keep-alive race at its worst moment. Later connections answer
/// "fresh". Returned with sluice in front, after that first answer.
async fn pod_closing_under_the_second_request() -> (Pod, Manifests, Server, HttpClient) {
    let pod = scripted_pod(|conn, n, _| match (conn, n) {
        (0, 0) => Script::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"),
        (0, _) => Script::Drop,
        _ => Script::Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh"),
    })
    .await;
    let (m, sluice) = sluice_for(&pod).await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "a", "/")).await.unwrap();
    assert_eq!(reply.text(), "first");
    (pod, m, sluice, http)
}

#[tokio::test]
async fn a_get_dropped_on_a_reused_connection_goes_again_on_a_new_one() {
    let (pod, _m, sluice, http) = pod_closing_under_the_second_request().await;
    let reply = send(&http, get(sluice.http_addr, "a", "/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "fresh")
    );
    assert_eq!(pod.connections.load(Ordering::SeqCst), 2);
    assert_eq!(pod.requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_post_dropped_on_a_reused_connection_is_not_sent_twice() {
    let (pod, _m, sluice, http) = pod_closing_under_the_second_request().await;
    let post = Request::post(format!("http://{}/", sluice.http_addr))
        .header("host", "a")
        .body(Full::new(Bytes::from_static(b"payment")))
        .unwrap();
    let reply = send(&http, post).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let requests = pod.requests.lock().unwrap();
    assert_eq!(requests.len(), 2, "the POST went out once");
    assert_eq!(requests[1].1, b"payment");
}

/// A chunked upload: buffered (the default), it reaches the pod with its
/// length, as nginx sends it; with `proxy-request-buffering: off` it
/// streams, chunked.
#[tokio::test]
async fn a_chunked_upload_is_buffered_or_streams_chunked() {
    for (buffering, framing) in [
        ("on", "content-length: 11"),
        ("off", "transfer-encoding: chunked"),
    ] {
        let pod = scripted_pod(|_, _, _| {
            Script::Reply(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
        })
        .await;
        let (_m, sluice) =
            sluice_with(&pod, &[("sluice.io/proxy-request-buffering", buffering)]).await;
        let mut client = TcpStream::connect(sluice.http_addr).await.unwrap();
        client
            .write_all(
                b"POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        while find(&answer, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 1024];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "sluice closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 201"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let requests = pod.requests.lock().unwrap();
        let (head, body) = &requests[0];
        assert!(head.contains(framing), "{buffering}: {head}");
        assert_eq!(
            head.matches("content-length").count() + head.matches("transfer-encoding").count(),
            1,
            "{head}"
        );
        assert_eq!(body, b"hello world");
    }
}

/// A pod that reads each request whole, then closes without answering, and
/// an echo pod, behind one round-robin Ingress with `annotations`. PUTs of
/// `body_len` bytes go until the dropping pod has had one; every answer is
/// returned, with what the dropping pod received.
async fn put_past_a_dropping_pod(
    annotations: &[(&str, &str)],
    body_len: usize,
) -> (Vec<Reply>, Vec<(String, Vec<u8>)>, String) {
    let dropping = scripted_pod(|_, _, _| Script::Drop).await;
    let echo = start_upstream("echo").await;
    let m = Manifests::new();
    let mut all = vec![("nginx.ingress.kubernetes.io/load-balance", "round_robin")];
    all.extend_from_slice(annotations);
    m.write(
        "app.yaml",
        &(service_yaml("pods", &[dropping.addr, echo.addr])
            + &ingress_yaml("app", None, &all, &[("/", "Prefix", "pods")])),
    );
    let sluice = start_sluice(m.path(), "proxy-body-size: 2m\n").await;
    let http = client();
    let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
    let mut replies = Vec::new();
    // Round robin: the dropping pod's turn comes within two requests.
    for _ in 0..4 {
        let request = Request::put(format!("http://{}/upload", sluice.http_addr))
            .header("host", "a")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        replies.push(send(&http, request).await.unwrap());
        if !dropping.requests.lock().unwrap().is_empty() {
            break;
        }
    }
    let received = dropping.requests.lock().unwrap().clone();
    let metrics = admin_text(&sluice, "/metrics").await;
    (replies, received, metrics)
}

/// ingress-nginx's default, `proxy-request-buffering: on`: the body is read
/// whole first (past `client-body-buffer-size`, into a file), so when a pod
/// drops the connection after taking it, the same body goes to another pod.
#[tokio::test]
async fn a_buffered_body_goes_again_to_another_pod_after_a_failure() {
    let (replies, dropped, metrics) = put_past_a_dropping_pod(&[], 300_000).await;
    assert_eq!(dropped.len(), 1, "the dropping pod had its turn");
    assert_eq!(dropped[0].1.len(), 300_000, "it got the whole body");
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.upstream(), "echo");
        assert_eq!(reply.json()["body_bytes"], 300_000);
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_request_bodies_buffered_total{outcome=\"file\"}")),
        "{metrics}"
    );
}

/// `proxy-request-buffering: off`: the body streams, so once it went out
/// it cannot go again: the failure is the client's 502.
#[tokio::test]
async fn a_streamed_body_is_not_sent_twice() {
    let off = [("nginx.ingress.kubernetes.io/proxy-request-buffering", "off")];
    let (replies, dropped, _) = put_past_a_dropping_pod(&off, 50_000).await;
    assert_eq!(dropped.len(), 1);
    assert_eq!(replies.last().unwrap().status, StatusCode::BAD_GATEWAY);
}

/// Buffered, a body over `proxy-body-size` is a 413 before any pod sees
/// the request; one that stalls is a 408 after `client-body-timeout`.
#[tokio::test]
async fn a_buffered_body_too_large_or_too_slow_never_reaches_the_pod() {
    let app = one_app(
        "client-body-timeout: 1s\n",
        &[("nginx.ingress.kubernetes.io/proxy-body-size", "1k")],
    )
    .await;
    let request = Request::post(format!("http://{}/", app.sluice.http_addr))
        .header("host", "a")
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let mut stalled = TcpStream::connect(app.sluice.http_addr).await.unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The answer comes once the timeout passes: read until the head is in.
    while find(&answer, b"\r\n\r\n").is_none() {
        let mut chunk = [0u8; 1024];
        let n = stalled.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(app.upstream.requests(), 0, "no pod saw either request");
}

/// With no room left in the spool (`client-body-temp-limit`), a body past
/// memory is not refused: what was read goes first and the rest streams.
#[tokio::test]
async fn a_body_the_spool_cannot_take_streams_whole() {
    let app = one_app("client-body-temp-limit: 0\n", &[]).await;
    let body: Vec<u8> = (0..200_000).map(|i| (i % 7) as u8).collect();
    let request = Request::post(format!("http://{}/", app.sluice.http_addr))
        .header("host", "a")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["body_bytes"], 200_000);
    let metrics = admin_text(&app.sluice, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_request_bodies_buffered_total{outcome=\"streamed\"}")),
        "{metrics}"
    );
}
