//! TLS termination. Certificates come from `kubernetes.io/tls` Secrets named by
//! our Ingresses (`spec.tls`) and travel inside the routing table, so rotation is
//! an ordinary table swap: new handshakes see the new certificate at once,
//! established connections keep theirs.
//!
//! SNI picks an exact host, then a wildcard, then the default certificate
//! (`default-ssl-certificate`), then a self-signed one generated at start, as
//! ingress-nginx does. The request is routed by `Host` either way.
//!
//! Provider: aws-lc-rs, rustls' default and the faster of its two providers on
//! x86_64 and aarch64 (handshake signatures and AES-GCM).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::routing::certs::load_certified_key;
use crate::routing::RoutingTable;

/// Cached sessions for resumption (by id; tickets need no server state).
const SESSION_CACHE: usize = 16 * 1024;

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

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, resumption by tickets and by a
/// session cache.
pub fn server_config(table: Arc<ArcSwap<RoutingTable>>) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let resolver = Resolver {
        table,
        fallback: self_signed()?,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_at_start() {
        assert!(self_signed().is_ok());
    }
}
