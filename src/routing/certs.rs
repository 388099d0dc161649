//! Certificates as the routing table carries them: loaded from `kubernetes.io/tls`
//! Secrets by `translate`, picked per handshake by the TLS listener
//! (`proxy::tls`). A Secret is a tenant's input, so loading is an error, never a
//! panic, whatever its bytes.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::policy::client_cert::dn::{der_element, tbs_fields};

/// A loaded certificate and what operators need to know about it.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// `notAfter`, Unix seconds, when it could be read.
    pub expires: Option<i64>,
    /// `namespace/name` of the Secret.
    pub source: String,
}

/// Values by TLS host: exact names, then `*.foo.com` wildcards, as SNI and
/// `spec.tls` hosts match.
#[derive(Debug, Clone)]
pub struct ByHost<T> {
    exact: HashMap<String, T>,
    /// `*.foo.com` under `foo.com`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for ByHost<T> {
    fn default() -> Self {
        ByHost {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> ByHost<T> {
    /// Adds a value for a host (`foo.com` or `*.foo.com`, lowercased); the
    /// first one set for a host wins.
    pub fn insert(&mut self, host: &str, value: T) -> bool {
        let map = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, host),
        };
        if map.0.contains_key(map.1) {
            return false;
        }
        map.0.insert(map.1.to_owned(), value);
        true
    }

    /// The value for a host by its own entry (exact or wildcard).
    pub fn get(&self, host: &str) -> Option<&T> {
        let host = host.trim_end_matches('.');
        self.exact.get(host).or_else(|| {
            let (first, rest) = host.split_once('.')?;
            (!first.is_empty())
                .then(|| self.wildcard.get(rest))
                .flatten()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Every value with the host it serves.
    pub fn iter(&self) -> impl Iterator<Item = (String, &T)> {
        let exact = self.exact.iter().map(|(h, c)| (h.clone(), c));
        let wildcard = self.wildcard.iter().map(|(h, c)| (format!("*.{h}"), c));
        exact.chain(wildcard)
    }
}

/// The certificates of one routing table, by host.
#[derive(Debug, Default, Clone)]
pub struct TlsCerts {
    by_host: ByHost<Certificate>,
    pub default: Option<Certificate>,
}

impl TlsCerts {
    /// Adds a certificate for a host; the first one set for a host wins.
    pub fn insert(&mut self, host: &str, certificate: Certificate) -> bool {
        self.by_host.insert(host, certificate)
    }

    /// The certificate for a host by its own entry (exact or wildcard).
    pub fn for_host(&self, host: &str) -> Option<&Certificate> {
        self.by_host.get(host)
    }

    pub fn has_host(&self, host: &str) -> bool {
        self.for_host(host).is_some()
    }

    /// Every certificate with the hosts it serves, for metrics and the admin API.
    pub fn all(&self) -> impl Iterator<Item = (String, &Certificate)> {
        self.by_host.iter()
    }
}

/// Parses a PEM chain and key, and checks that they belong together.
pub fn load_certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Certificate, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key is not a PEM private key (PKCS#8, RSA or EC): {e}"))?;
    let provider = aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls.key cannot be used: {e}"))?;
    let expires = not_after(&chain[0]);
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| format!("tls.key does not match the certificate in tls.crt: {e}"))?;
    Ok(Certificate {
        key: Arc::new(certified),
        expires,
        source: String::new(),
    })
}

/// `notAfter` of a certificate, from its DER, as Unix seconds.
///
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
/// issuer, validity SEQUENCE { notBefore, notAfter } ...
fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let fields = tbs_fields(cert.as_ref())?;
    let (_, _not_before, rest) = der_element(fields.get(3)?)?;
    let (tag, not_after, _) = der_element(rest)?;
    parse_time(tag, std::str::from_utf8(not_after).ok()?)
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to Unix seconds.
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let digits = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = digits.get(0..2)?.parse().ok()?;
            (
                if yy < 50 { 2000 + yy } else { 1900 + yy },
                digits.get(2..)?,
            )
        }
        0x18 => (digits.get(0..4)?.parse().ok()?, digits.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_generated_certificates_and_reads_expiry() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let loaded =
            load_certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        // 2031-05-17T00:00:00Z
        assert_eq!(loaded.expires, Some(1_936_742_400));

        let other = rcgen::KeyPair::generate().unwrap();
        let err = load_certified_key(cert.pem().as_bytes(), other.serialize_pem().as_bytes())
            .unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(load_certified_key(b"junk", key.serialize_pem().as_bytes()).is_err());
    }

    #[test]
    fn exact_then_wildcard() {
        let key = rcgen::KeyPair::generate().unwrap();
        let generated = rcgen::CertificateParams::new(vec!["foo.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let loaded =
            load_certified_key(generated.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let cert = |name: &str| Certificate {
            key: loaded.key.clone(),
            expires: None,
            source: name.into(),
        };
        let mut certs = TlsCerts::default();
        assert!(certs.insert("a.foo.com", cert("exact")));
        assert!(certs.insert("*.foo.com", cert("wild")));
        assert!(!certs.insert("*.foo.com", cert("late")));
        let source = |h: &str| certs.for_host(h).map(|c| c.source.clone());
        assert_eq!(source("a.foo.com").as_deref(), Some("exact"));
        assert_eq!(source("b.foo.com").as_deref(), Some("wild"));
        assert_eq!(source("x.b.foo.com"), None);
        assert_eq!(source("foo.com"), None);
    }

    /// Secrets are tenants' input: mutated PEM and DER are errors, never panics.
    #[test]
    fn fuzzed_certificates_never_panic() {
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (pem, key_pem, der) = (cert.pem(), key.serialize_pem(), cert.der().to_vec());
        crate::fuzz::bytes(&[&der], crate::fuzz::iterations(20_000), |raw| {
            let _ = not_after(&CertificateDer::from(raw.to_vec()));
        });
        crate::fuzz::bytes(
            &[pem.as_bytes(), key_pem.as_bytes()],
            crate::fuzz::iterations(2_000),
            |raw| {
                let _ = load_certified_key(raw, key_pem.as_bytes());
                let _ = load_certified_key(pem.as_bytes(), raw);
            },
        );
    }
}
