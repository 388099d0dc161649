use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn intermediate(parent: &Ca, name: &str) -> (Ca, CertificateDer<'static>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &parent.issuer).unwrap();
    let der = cert.der().clone();
    let ca = Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    };
    (ca, der)
}

fn client(issuer: &Ca, cn: &str, serial: u64) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(SerialNumber::from(serial));
    let key = KeyPair::generate().unwrap();
    params
        .signed_by(&key, &issuer.issuer)
        .unwrap()
        .der()
        .clone()
}

fn options(verify: VerifyClient, depth: usize) -> ClientCaOptions {
    ClientCaOptions {
        verify,
        depth,
        match_cn: None,
        error_page: None,
        pass_certificate: false,
    }
}

fn settings(ca: &Ca, crl: Option<&[u8]>, depth: usize) -> Arc<ClientCa> {
    Arc::new(ClientCa::new(ca.pem.as_bytes(), crl, options(VerifyClient::On, depth)).unwrap())
}

#[test]
fn a_client_of_the_ca_succeeds_and_is_named() {
    let root = ca("Test CA");
    let settings = settings(&root, None, 1);
    let leaf = client(&root, "alice", 1);
    let peer = settings.judge(Some(std::slice::from_ref(&leaf)), UnixTime::now());
    assert_eq!(peer.verified, Verified::Success);
    assert_eq!(peer.subject, "CN=alice");
    assert_eq!(peer.issuer, "CN=Test CA");
    assert_eq!(peer.verify_header(), "SUCCESS");
    let escaped = peer.escaped.unwrap();
    let escaped = escaped.to_str().unwrap();
    assert!(
        escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0AMI"),
        "{escaped}"
    );
    assert!(escaped.ends_with("-----END%20CERTIFICATE-----%0A"));
    assert!(!escaped.contains(['+', '/', '=', ' ', '\n']));
}

#[test]
fn no_certificate_or_another_cas_is_not_a_success() {
    let root = ca("Test CA");
    let settings = settings(&root, None, 1);
    let none = settings.judge(None, UnixTime::now());
    assert_eq!(none.verified, Verified::None);
    assert_eq!(none.verify_header(), "NONE");
    assert_eq!(none.subject, "");
    let stranger = client(&ca("Other CA"), "mallory", 2);
    let peer = settings.judge(Some(&[stranger]), UnixTime::now());
    assert!(
        matches!(&peer.verified, Verified::Failed(r) if r.contains("UnknownIssuer")),
        "{:?}",
        peer.verified
    );
    assert!(peer
        .verify_header()
        .to_str()
        .unwrap()
        .starts_with("FAILED:"));
}

#[test]
fn depth_counts_the_certificates_above_the_clients() {
    let root = ca("Root");
    let (middle, middle_der) = intermediate(&root, "Middle");
    let leaf = client(&middle, "bob", 3);
    let chain = [leaf, middle_der];
    let shallow = settings(&root, None, 1).judge(Some(&chain), UnixTime::now());
    assert!(
        matches!(shallow.verified, Verified::Failed(_)),
        "{:?}",
        shallow.verified
    );
    let deep = settings(&root, None, 2).judge(Some(&chain), UnixTime::now());
    assert_eq!(deep.verified, Verified::Success);
    assert_eq!(deep.issuer, "CN=Middle");
}

#[test]
fn a_revoked_certificate_fails() {
    let root = ca("Test CA");
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(7u64),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer)
    .unwrap();
    let crl = crl.pem().unwrap();
    let settings = settings(&root, Some(crl.as_bytes()), 1);
    let revoked = settings.judge(Some(&[client(&root, "eve", 7)]), UnixTime::now());
    assert!(
        matches!(&revoked.verified, Verified::Failed(r) if r.contains("Revoked")),
        "{:?}",
        revoked.verified
    );
    let good = settings.judge(Some(&[client(&root, "alice", 8)]), UnixTime::now());
    assert_eq!(good.verified, Verified::Success);
}

#[test]
fn settings_are_the_same_by_content() {
    let root = ca("Test CA");
    let a = settings(&root, None, 1);
    let b = settings(&root, None, 1);
    assert!(a.same(&b) && b.same(&a));
    assert!(!a.same(&settings(&root, None, 2)));
    assert!(!a.same(&settings(&ca("Test CA"), None, 1)));
    let optional = ClientCa::new(
        root.pem.as_bytes(),
        None,
        options(VerifyClient::Optional, 1),
    );
    assert!(!a.same(&optional.unwrap()));
}

#[test]
fn bad_bundles_are_errors() {
    let opts = || options(VerifyClient::On, 1);
    assert!(ClientCa::new(b"", None, opts())
        .unwrap_err()
        .contains("no certificate"));
    assert!(ClientCa::new(b"junk", None, opts()).is_err());
    let root = ca("Test CA");
    assert!(ClientCa::new(
        root.pem.as_bytes(),
        Some(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
        opts()
    )
    .is_err());
}

/// The bundle is a tenant's input: mutated PEM never panics.
#[test]
fn fuzzed_bundles_never_panic() {
    let root = ca("Test CA");
    crate::fuzz::bytes(
        &[root.pem.as_bytes()],
        crate::fuzz::iterations(3_000),
        |raw| {
            let _ = ClientCa::new(raw, None, options(VerifyClient::On, 1));
        },
    );
}

/// A bundle with more CA names than a certificate request should carry
/// still verifies, and asks without naming them.
#[test]
fn a_huge_bundle_names_no_cas() {
    let cas: Vec<Ca> = (0..600)
        .map(|i| ca(&format!("Tenant CA number {i}")))
        .collect();
    let pem: String = cas.iter().map(|c| c.pem.as_str()).collect();
    let huge = Arc::new(ClientCa::new(pem.as_bytes(), None, options(VerifyClient::On, 1)).unwrap());
    assert!(huge.hints().is_empty());
    let peer = huge.judge(Some(&[client(&cas[599], "alice", 1)]), UnixTime::now());
    assert_eq!(peer.verified, Verified::Success);
    assert_eq!(settings(&cas[0], None, 1).hints().len(), 1);
}
