//! TLS from sluice to pods (`backend-protocol: HTTPS` / `GRPCS`), with
//! ingress-nginx's `proxy-ssl-*` meaning: no verification by default, or
//! verification against a CA; no SNI by default; an optional client
//! certificate.
//!
//! One `UpstreamTls` per TLS identity. Its identity (what the pod is told
//! and trusted for: name, SNI, verification, CA, client certificate, ALPN)
//! keys the pools, so a changed Secret makes new pools for new connections
//! while pooled ones finish their requests. Each `ClientConfig` keeps
//! rustls's session cache, so connections to a pod resume their sessions.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What a backend's TLS asks for, as the annotations say it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSpec {
    /// `proxy-ssl-verify: on`: the pod's certificate must chain to `ca`.
    pub verify: bool,
    /// PEM: the CA to verify against (`ca.crt` of `proxy-ssl-secret`).
    pub ca: Option<Vec<u8>>,
    /// PEM: a client certificate and its key (`tls.crt`, `tls.key`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// The name verified (`proxy-ssl-name`, else the Service's DNS name).
    pub name: String,
    /// `proxy-ssl-server-name: on`: send `name` as SNI.
    pub sni: bool,
    /// `GRPCS`: HTTP/2 only; else HTTP/2 or HTTP/1.1, by ALPN.
    pub h2: bool,
    /// `proxy-ssl-protocols`: TLS 1.2 and 1.3 may be turned off (both on by
    /// default, as ingress-nginx); older versions rustls does not speak.
    pub no_tls12: bool,
    pub no_tls13: bool,
}

/// A backend's client TLS, made once per identity.
pub struct UpstreamTls {
    pub spec: TlsSpec,
    /// The spec's hash, computed once: pools are looked up by it for every
    /// endpoint of every rebuild, and a spec holds whole PEM files.
    identity: u64,
    pub config: Arc<ClientConfig>,
    /// The same, offering HTTP/1.1 only: for upgrades (WebSockets), which
    /// HTTP/2 cannot carry, as nginx speaks to pods.
    pub config_h1: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("name", &self.spec.name)
            .field("verify", &self.spec.verify)
            .field("sni", &self.spec.sni)
            .field("h2", &self.spec.h2)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity && self.spec == other.spec
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity.hash(state);
    }
}

impl UpstreamTls {
    pub fn new(spec: TlsSpec) -> Result<UpstreamTls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut versions = Vec::new();
        if !spec.no_tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if !spec.no_tls12 {
            versions.push(&rustls::version::TLS12);
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?;
        let builder = if spec.verify {
            let mut roots = RootCertStore::empty();
            let Some(ca) = &spec.ca else {
                return Err("proxy-ssl-verify is on but proxy-ssl-secret holds no ca.crt".into());
            };
            for cert in pem_certificates(ca)? {
                roots.add(cert).map_err(|e| format!("ca.crt: {e}"))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        let mut config = match &spec.client {
            Some((cert, key)) => {
                let chain = pem_certificates(cert)?;
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = spec.sni;
        // `GRPCS`: HTTP/2 only. `HTTPS`: HTTP/2 or HTTP/1.1, as the pod chooses.
        config.alpn_protocols = if spec.h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let mut config_h1 = config.clone();
        config_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(spec.name.clone())
            .map_err(|_| format!("{:?} is not a server name", spec.name))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        spec.hash(&mut hasher);
        Ok(UpstreamTls {
            identity: hasher.finish(),
            spec,
            config: Arc::new(config),
            config_h1: Arc::new(config_h1),
            server_name,
        })
    }
}

/// Every certificate in a PEM text; at least one.
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(certs)
}

/// `proxy-ssl-verify: off`, ingress-nginx's default: any certificate is
/// accepted, but the handshake's signatures are still checked, so the
/// session is with whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
