//! The validating admission webhook's listener (issue #23):
//! `--validating-webhook ADDR` with `--validating-webhook-certificate` and
//! `--validating-webhook-key`, as ingress-nginx names them. AdmissionReview
//! v1 is answered on every path (ingress-nginx's manifests use
//! `/networking/v1/ingresses`), by `discovery::admission`.
//!
//! The certificate is read again when its files change (cert-manager and
//! one-shot Jobs rotate it in place). Files that are not there yet (a
//! Secret a Job has still to create) are waited for: connections are
//! closed until they are. Until the first table is built, every review is
//! allowed with a warning saying why: a sluice that is not ready must never
//! block a cluster.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::bounded;
use crate::discovery::admission::{respond, Decision, Review};
use crate::discovery::Publisher;
use crate::routing::certs::load_certified_key;

/// The apiserver sends at most this much (its own request limit is 3 MiB).
const MAX_REVIEW: usize = 3 << 20;
/// A handshake or a review that takes longer is dropped.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Reviews judged at once: each translates a snapshot, so whoever can reach
/// the port could otherwise spend every core on it.
const JUDGES: usize = 2;

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The certificate as last read (none yet), and the files' times then.
struct Loaded {
    acceptor: Option<TlsAcceptor>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
}

fn stamps(options: &WebhookOptions) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(&options.certificate), modified(&options.key))
}

/// Reads the certificate and key into a TLS acceptor.
fn load(options: &WebhookOptions) -> Result<TlsAcceptor, String> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let certificate = load_certified_key(&read(&options.certificate)?, &read(&options.key)?)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(certificate.key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The one certificate, whatever the client names.
#[derive(Debug)]
struct One(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for One {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

pub async fn serve(
    listener: TcpListener,
    options: WebhookOptions,
    publisher: Arc<Publisher>,
    stop: CancellationToken,
) {
    let mut loaded = Loaded {
        acceptor: None,
        stamps: (None, None),
    };
    // The admin listener's bounds: a connection limit, and a time limit on
    // each request's head.
    let builder = Arc::new(bounded::builder());
    let slots = bounded::Slots::new();
    let judges = Arc::new(Semaphore::new(JUDGES));
    while let Some((stream, _, slot)) = slots.accept(&listener, &stop, "webhook").await {
        // A rotated certificate is taken at the next connection; a broken
        // one is refused and the last good one kept.
        let now = stamps(&options);
        if now != loaded.stamps {
            loaded.stamps = now;
            match load(&options) {
                Ok(acceptor) => {
                    tracing::info!("webhook certificate loaded");
                    loaded.acceptor = Some(acceptor);
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook certificate not loaded; keeping the last one, if any")
                }
            }
        }
        let Some(acceptor) = loaded.acceptor.clone() else {
            continue; // No certificate yet: the connection is closed.
        };
        let builder = builder.clone();
        let publisher = publisher.clone();
        let judges = judges.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) = tokio::time::timeout(TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let service = service_fn(move |request| {
                let (publisher, judges) = (publisher.clone(), judges.clone());
                async move { Ok::<_, Infallible>(review(request, &publisher, &judges).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn review(
    request: Request<Incoming>,
    publisher: &Publisher,
    judges: &Semaphore,
) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"POST an AdmissionReview\n"),
        );
    }
    let body = Limited::new(request.into_body(), MAX_REVIEW);
    let Ok(Ok(body)) = tokio::time::timeout(TIMEOUT, body.collect()).await else {
        return answer(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"unreadable or too large\n"),
        );
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, Bytes::from_static(b"not JSON\n"));
    };
    let object = match Review::read(&review["request"]) {
        Ok(object) => object,
        Err(untouched) => return answer_review(&review, &untouched),
    };
    let unjudged = |why: &str| Decision {
        allowed: true,
        message: String::new(),
        warnings: vec![format!("{why}; allowed unjudged")],
    };
    // A review that finds every judge busy for long is let through, as
    // the apiserver would on a timeout (`failurePolicy: Ignore`).
    let judge = tokio::time::timeout(TIMEOUT, judges.acquire()).await;
    let decision = match judge {
        // The scope is copied only for a review that has its judge.
        Ok(Ok(_judge)) => match publisher.admission_scope(&object) {
            // Translating runs off the runtime's threads, as every build does.
            Some((snapshot, options)) => {
                let judged = tokio::task::spawn_blocking(move || object.judge(snapshot, &options));
                (judged.await).unwrap_or_else(|_| unjudged("sluice failed to judge this object"))
            }
            None => unjudged("sluice has not read the cluster yet"),
        },
        _ => unjudged("sluice is busy judging other objects"),
    };
    answer_review(&review, &decision)
}

fn answer_review(review: &Value, decision: &Decision) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&respond(review, decision)).unwrap_or_default();
    answer(StatusCode::OK, Bytes::from(body))
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
