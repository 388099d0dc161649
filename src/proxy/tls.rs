//! TLS termination. Certificates come from `kubernetes.io/tls` Secrets named by
//! our Ingresses (`spec.tls`) and travel inside the routing table, so rotation is
//! an ordinary table swap: new handshakes see the new certificate at once,
//! established connections keep theirs.
//!
//! SNI picks an exact host, then a wildcard, then the default certificate
//! (`default-ssl-certificate`), then a self-signed one generated at start, as
//! ingress-nginx does. The request is routed by `Host` either way.
//!
//! Client certificates (`auth-tls-*`) are a host's, so the TLS configuration
//! is chosen per SNI: only while some host asks for them is the ClientHello
//! read first (`LazyConfigAcceptor`); a host that asks gets a configuration
//! that requests a certificate (`ClientCertRequest`), and the chain is judged
//! once the handshake is done (`policy::client_cert`). Other hosts, and every
//! handshake while no host asks, take the one plain configuration.
//!
//! Provider: aws-lc-rs, rustls' default and the faster of its two providers on
//! x86_64 and aarch64 (handshake signatures and AES-GCM).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{aws_lc_rs, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use crate::policy::client_cert::{ClientCa, PeerCertificate, Verified};
use crate::routing::certs::load_certified_key;
use crate::routing::RoutingTable;
use crate::telemetry;

/// Cached sessions for resumption (by id; tickets need no server state).
const SESSION_CACHE: usize = 16 * 1024;

/// Configurations kept for hosts with client certificates, by settings.
/// Past this (a tenant churning CA bundles), the cache starts over.
const CLIENT_AUTH_CONFIGS: usize = 1024;

/// Makes aws-lc-rs the process's rustls provider. Two providers are linked (the
/// Kubernetes client brings ring), and rustls refuses to guess between them.
pub fn install_provider() {
    // Err only when one is installed already, which is what we want.
    let _ = aws_lc_rs::default_provider().install_default();
}

/// A certificate for handshakes nothing else covers, made at start.
pub fn self_signed() -> Result<Arc<CertifiedKey>, String> {
    let generated = rcgen::generate_simple_self_signed(vec!["sluice.invalid".to_owned()])
        .map_err(|e| format!("generating the self-signed certificate: {e}"))?;
    let cert = generated.cert.pem();
    let key = generated.signing_key.serialize_pem();
    load_certified_key(cert.as_bytes(), key.as_bytes()).map(|c| c.key)
}

/// Picks the certificate for each handshake from the current table.
#[derive(Debug)]
pub struct Resolver {
    table: Arc<ArcSwap<RoutingTable>>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let certs = &table.tls;
        let by_name = hello
            .server_name()
            .map(str::to_ascii_lowercase)
            .and_then(|sni| certs.for_host(&sni).map(|c| c.key.clone()));
        Some(
            by_name
                .or_else(|| certs.default.as_ref().map(|c| c.key.clone()))
                .unwrap_or_else(|| self.fallback.clone()),
        )
    }
}

/// The TLS listener's handshakes: the plain configuration, and one per
/// client-certificate settings.
pub struct Acceptor {
    plain: Arc<ServerConfig>,
    table: Arc<ArcSwap<RoutingTable>>,
    resolver: Arc<Resolver>,
    /// By `ClientCa::fingerprint`: the same configuration, and so the same
    /// session tickets, across table swaps while the settings do not change.
    with_client_auth: Mutex<HashMap<u64, ClientAuthConfig>>,
}

/// A configuration that asks for certificates, and the settings it is for.
type ClientAuthConfig = (Arc<ClientCa>, Arc<ServerConfig>);

/// How a handshake ended.
pub enum Handshake {
    Done(Box<TlsStream<TcpStream>>, Option<Box<PeerCertificate>>),
    Failed(std::io::Error),
    TimedOut,
}

impl Acceptor {
    pub fn new(table: Arc<ArcSwap<RoutingTable>>) -> Result<Acceptor, String> {
        let resolver = Arc::new(Resolver {
            table: table.clone(),
            fallback: self_signed()?,
        });
        let plain = server_config(resolver.clone(), None)?;
        Ok(Acceptor {
            plain,
            table,
            resolver,
            with_client_auth: Mutex::new(HashMap::new()),
        })
    }

    /// The handshake, within `timeout`, and the client's certificate judged
    /// when the host the client named asks for one.
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> Handshake {
        let asked = !self.table.load().client_cas.is_empty();
        let handshake = async {
            if !asked {
                let stream = TlsAcceptor::from(self.plain.clone()).accept(stream).await?;
                return Ok((stream, None));
            }
            let start =
                LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
            let ca = start.client_hello().server_name().and_then(|sni| {
                let table = self.table.load();
                table.client_cas.get(&sni.to_ascii_lowercase()).cloned()
            });
            let config = match &ca {
                Some(ca) => self.config_for(ca),
                None => self.plain.clone(),
            };
            let stream = start.into_stream(config).await?;
            Ok::<_, std::io::Error>((stream, ca))
        };
        match tokio::time::timeout(timeout, handshake).await {
            Err(_) => Handshake::TimedOut,
            Ok(Err(error)) => Handshake::Failed(error),
            Ok(Ok((stream, ca))) => {
                let peer = ca.map(|ca| {
                    let chain = stream.get_ref().1.peer_certificates();
                    let peer = ca.judge(chain, UnixTime::now());
                    let result = match peer.verified {
                        Verified::None => "none",
                        Verified::Success => "success",
                        Verified::Failed(_) => "failed",
                    };
                    metrics::counter!(telemetry::TLS_CLIENT_CERTIFICATES, "result" => result)
                        .increment(1);
                    Box::new(peer)
                });
                Handshake::Done(Box::new(stream), peer)
            }
        }
    }

    /// The configuration that asks for certificates under these settings.
    fn config_for(&self, ca: &Arc<ClientCa>) -> Arc<ServerConfig> {
        let mut cache = self
            .with_client_auth
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((kept, config)) = cache.get(&ca.fingerprint) {
            if kept.same(ca) {
                return config.clone();
            }
        }
        let verifier = Arc::new(ClientCertRequest {
            hints: ca.hints().to_vec(),
            algorithms: aws_lc_rs::default_provider().signature_verification_algorithms,
        });
        let Ok(config) = server_config(self.resolver.clone(), Some(verifier)) else {
            // Made once already at start with the same provider; cannot fail.
            return self.plain.clone();
        };
        if cache.len() >= CLIENT_AUTH_CONFIGS {
            cache.clear();
        }
        cache.insert(ca.fingerprint, (ca.clone(), config.clone()));
        config
    }
}

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, resumption by tickets and by a
/// session cache; with `client_auth`, a certificate is asked for. Each
/// configuration has its own tickets and cache, so a session made without a
/// certificate never resumes where one is asked for.
fn server_config(
    resolver: Arc<Resolver>,
    client_auth: Option<Arc<ClientCertRequest>>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// Asks for a client certificate naming the host's CAs, and checks that the
/// client holds its key (the handshake's signature); the chain itself is
/// judged after the handshake, so that a missing or bad certificate is an
/// HTTP answer (nginx's 400), not a failed handshake.
#[derive(Debug)]
struct ClientCertRequest {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientCertRequest {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_at_start() {
        assert!(self_signed().is_ok());
    }
}
