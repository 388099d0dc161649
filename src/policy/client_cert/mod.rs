//! Client certificates at the edge (`auth-tls-*`), as ingress-nginx's
//! `ssl_verify_client`: a host's CA bundle (`ca.crt`, and `ca.crl`), how a
//! client's certificate is judged against it, and what the pods are told.
//!
//! As nginx, the handshake never fails for want of a good certificate: the
//! certificate is asked for, its key proven by the handshake, and its chain
//! judged here once the handshake is done. The request then gets nginx's
//! answers (400 without a required certificate or with a bad one), and the
//! pods get the verdict in `ssl-client-verify`.
//!
//! The chain is the client's input: it is verified by webpki against this
//! bundle only, and its names are read by a bounded parser (`dn`).

pub mod dn;

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use http::HeaderValue;
use regex::Regex;
use rustls::crypto::aws_lc_rs;
use rustls::DistinguishedName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use webpki::{CertRevocationList, EndEntityCert, KeyUsage, RevocationOptionsBuilder};

use crate::compat::nginx::escape_uri_component;

/// Most bytes of CA names sent in a certificate request.
const MAX_HINTS_BYTES: usize = 16 << 10;

/// `auth-tls-verify-client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// A valid certificate is required (400 otherwise).
    On,
    /// None is needed; one that is sent must be valid.
    Optional,
    /// Any or none; the pods are told the verdict.
    OptionalNoCa,
    /// None is asked for.
    Off,
}

impl VerifyClient {
    pub fn parse(value: &str) -> Option<VerifyClient> {
        Some(match value {
            "on" => VerifyClient::On,
            "optional" => VerifyClient::Optional,
            "optional_no_ca" => VerifyClient::OptionalNoCa,
            "off" => VerifyClient::Off,
            _ => return None,
        })
    }
}

/// What a host asks of its clients' certificates. Built once per table from
/// the host's Secret; compared by content (`same`), since a connection's
/// handshake may have been judged by an older table's.
#[derive(Debug)]
pub struct ClientCa {
    pub verify: VerifyClient,
    /// `auth-tls-verify-depth`: certificates above the client's, the trusted
    /// CA included (nginx's `ssl_verify_depth`).
    depth: usize,
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    /// The CA names sent in the handshake's certificate request.
    hints: Vec<DistinguishedName>,
    /// What the settings are made of, for `same`; `fingerprint` hashes it
    /// with a key of this process (nobody can aim at a collision).
    content: Vec<u8>,
    pub fingerprint: u64,
    /// `auth-tls-match-cn`, matched against the subject in RFC 2253 form.
    pub match_cn: Option<Regex>,
    /// `auth-tls-error-page`: where a refused client is sent (302).
    pub error_page: Option<HeaderValue>,
    /// `auth-tls-pass-certificate-to-upstream`.
    pub pass_certificate: bool,
}

/// What a host's annotations ask, beside its bundle.
#[derive(Debug, Clone)]
pub struct ClientCaOptions {
    pub verify: VerifyClient,
    pub depth: usize,
    pub match_cn: Option<Regex>,
    pub error_page: Option<HeaderValue>,
    pub pass_certificate: bool,
}

impl ClientCa {
    /// From the Secret's `ca.crt` (PEM, one or more CAs) and `ca.crl`.
    pub fn new(
        ca_pem: &[u8],
        crl_pem: Option<&[u8]>,
        options: ClientCaOptions,
    ) -> Result<ClientCa, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca.crt is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err("ca.crt holds no certificate".into());
        }
        let mut anchors = Vec::with_capacity(certs.len());
        for (i, cert) in certs.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| format!("ca.crt certificate {}: {e}", i + 1))?;
            anchors.push(anchor.to_owned());
        }
        let mut crls = Vec::new();
        if let Some(pem) = crl_pem {
            for der in CertificateRevocationListDer::pem_slice_iter(pem) {
                let der = der.map_err(|e| format!("ca.crl is not PEM: {e}"))?;
                let crl = webpki::OwnedCertRevocationList::from_der(der.as_ref())
                    .map_err(|e| format!("ca.crl: {e}"))?;
                crls.push(CertRevocationList::from(crl));
            }
        }
        let mut hints: Vec<DistinguishedName> = anchors
            .iter()
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        // The names go in every certificate request, which a TLS record
        // bounds: a bundle with too many names asks without naming any.
        if hints.iter().map(|h| h.as_ref().len() + 2).sum::<usize>() > MAX_HINTS_BYTES {
            hints.clear();
        }
        let mut content = Vec::with_capacity(ca_pem.len() + 16);
        content.extend_from_slice(ca_pem);
        content.push(0);
        content.extend_from_slice(crl_pem.unwrap_or_default());
        content.extend_from_slice(format!("\0{:?}\0{}", options.verify, options.depth).as_bytes());
        let mut hasher = process_hasher().build_hasher();
        hasher.write(&content);
        Ok(ClientCa {
            verify: options.verify,
            depth: options.depth.max(1),
            anchors,
            crls,
            hints,
            fingerprint: hasher.finish(),
            content,
            match_cn: options.match_cn,
            error_page: options.error_page,
            pass_certificate: options.pass_certificate,
        })
    }

    /// Whether a handshake judged by `other` was judged as this host asks.
    pub fn same(&self, other: &ClientCa) -> bool {
        std::ptr::eq(self, other)
            || (self.fingerprint == other.fingerprint && self.content == other.content)
    }

    pub fn hints(&self) -> &[DistinguishedName] {
        &self.hints
    }

    /// Judges the chain a client sent (leaf first), as the connection's.
    pub fn judge(
        self: &Arc<Self>,
        chain: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> PeerCertificate {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return PeerCertificate::none(self.clone());
        };
        let verified = match self.verify_chain(leaf, intermediates, now) {
            Ok(()) => Verified::Success,
            Err(reason) => Verified::Failed(reason),
        };
        let (subject, issuer) = dn::subject_and_issuer(leaf.as_ref()).unwrap_or_default();
        PeerCertificate::new(self.clone(), verified, subject, issuer, escaped_pem(leaf))
    }

    fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let cert = EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crls).ok().map(|b| b.build());
        let depth = self.depth;
        let within_depth = |path: &webpki::VerifiedPath<'_>| {
            // nginx's depth counts the certificates above the client's,
            // the trusted CA included.
            if path.intermediate_certificates().count() < depth {
                Ok(())
            } else {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
        };
        cert.verify_for_usage(
            aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .all,
            &self.anchors,
            intermediates,
            now,
            KeyUsage::client_auth(),
            revocation,
            Some(&within_depth),
        )
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
    }
}

/// Keys for `ClientCa::fingerprint`, drawn once per process.
fn process_hasher() -> &'static std::collections::hash_map::RandomState {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// nginx's `$ssl_client_verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    None,
    Success,
    Failed(String),
}

/// A connection's client certificate, judged once after its handshake.
#[derive(Debug)]
pub struct PeerCertificate {
    /// The settings that judged it (the host the client named in SNI).
    pub ca: Arc<ClientCa>,
    pub verified: Verified,
    /// RFC 2253, empty without a certificate.
    pub subject: String,
    pub issuer: String,
    /// The client's certificate as PEM, URL-escaped (`$ssl_client_escaped_cert`).
    pub escaped: Option<HeaderValue>,
    /// The header values the pods get, made once for the connection's
    /// requests: `ssl-client-verify`, and the names (none when empty, as
    /// nginx's `proxy_set_header` with an empty value).
    verify: HeaderValue,
    pub subject_header: Option<HeaderValue>,
    pub issuer_header: Option<HeaderValue>,
}

impl PeerCertificate {
    fn new(
        ca: Arc<ClientCa>,
        verified: Verified,
        subject: String,
        issuer: String,
        escaped: Option<HeaderValue>,
    ) -> PeerCertificate {
        let verify = match &verified {
            Verified::None => HeaderValue::from_static("NONE"),
            Verified::Success => HeaderValue::from_static("SUCCESS"),
            Verified::Failed(reason) => HeaderValue::try_from(format!("FAILED:{reason}"))
                .unwrap_or(HeaderValue::from_static("FAILED")),
        };
        let header = |name: &str| {
            HeaderValue::try_from(name)
                .ok()
                .filter(|value| !value.is_empty())
        };
        PeerCertificate {
            subject_header: header(&subject),
            issuer_header: header(&issuer),
            ca,
            verified,
            subject,
            issuer,
            escaped,
            verify,
        }
    }

    fn none(ca: Arc<ClientCa>) -> PeerCertificate {
        PeerCertificate::new(ca, Verified::None, String::new(), String::new(), None)
    }

    /// `ssl-client-verify`'s value.
    pub fn verify_header(&self) -> &HeaderValue {
        &self.verify
    }
}

/// PEM of one certificate, escaped as nginx's `$ssl_client_escaped_cert`.
fn escaped_pem(cert: &CertificateDer<'_>) -> Option<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    HeaderValue::try_from(escape_uri_component(&pem)).ok()
}

#[cfg(test)]
mod tests;
