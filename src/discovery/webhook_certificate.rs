//! `sluice webhook-certificate` (issue #23): the admission webhook's
//! certificate without cert-manager, as ingress-nginx's
//! `kube-webhook-certgen` makes it. A one-shot Job runs it
//! (deploy/admission-webhook):
//!
//! 1. The Secret (`kubernetes.io/tls` with `ca.crt`, `tls.crt` and
//!    `tls.key`, as cert-manager writes it, so the DaemonSet mounts either)
//!    is kept while its certificate is signed by its CA, names the Service,
//!    matches its key and stays valid for `RENEW_BEFORE` more. Otherwise a
//!    new CA and certificate replace it.
//! 2. Every webhook of the ValidatingWebhookConfiguration gets that CA as
//!    its `caBundle`: read, changed and written back with its
//!    resourceVersion, and again on a conflict.
//!
//! Whatever is still good is left as it is, so the Job can run on every
//! deploy. A ValidatingWebhookConfiguration that does not exist yet (applied
//! after the Job started) is an error: the Job runs again, and the Secret it
//! made is kept then.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::routing::certs::load_certified_key;

/// How long a new CA and certificate are valid (as `kube-webhook-certgen`'s
/// are, for years: nothing renews them but this command).
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A certificate expiring sooner is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Writes of the ValidatingWebhookConfiguration retried on a conflict.
const ATTEMPTS: usize = 5;

/// Where the certificate goes and whom it names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The namespace of the Secret and the Service.
    pub namespace: String,
    pub secret: String,
    pub service: String,
    pub webhook_configuration: String,
}

impl Target {
    /// The names the certificate carries; the apiserver calls the first.
    pub fn names(&self) -> Vec<String> {
        let (service, namespace) = (&self.service, &self.namespace);
        vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
            format!("{service}.{namespace}"),
            service.clone(),
        ]
    }
}

/// A CA, and a certificate it signed with its key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub ca: String,
    pub certificate: String,
    pub key: String,
}

/// What `provision` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    Kept,
    Created,
    /// Replaced, and why the old one was not good.
    Replaced(String),
}

/// A new CA and a server certificate for `names`, valid from an hour before
/// `now` (clocks differ) for `VALIDITY`.
pub fn issue(names: &[String], now: SystemTime) -> Result<Issued, rcgen::Error> {
    let from = now - Duration::from_secs(3600);
    let until = now + VALIDITY;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "sluice admission webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = from.into();
    ca.not_after = until.into();
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        leaf.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = from.into();
    leaf.not_after = until.into();
    let key = KeyPair::generate()?;
    let certificate = leaf.signed_by(&key, &ca)?;
    Ok(Issued {
        ca: ca.pem(),
        certificate: certificate.pem(),
        key: key.serialize_pem(),
    })
}

/// Whether a Secret's certificate can stay: signed by its CA for server
/// use, naming `name`, matching its key, and valid both `now` and
/// `RENEW_BEFORE` later; else why not.
pub fn still_good(
    ca: &[u8],
    certificate: &[u8],
    key: &[u8],
    name: &str,
    now: SystemTime,
) -> Result<(), String> {
    let loaded = load_certified_key(certificate, key)?;
    let leaf = &loaded.key.cert[0];
    let ca = CertificateDer::from_pem_slice(ca)
        .map_err(|e| format!("ca.crt is not a PEM certificate: {e}"))?;
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| format!("ca.crt: {e}"))?;
    let leaf = EndEntityCert::try_from(leaf).map_err(|e| format!("tls.crt: {e}"))?;
    for at in [now, now + RENEW_BEFORE] {
        let since_epoch = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970".to_owned())?;
        leaf.verify_for_usage(
            aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .all,
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::since_unix_epoch(since_epoch),
            KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            format!("tls.crt is not valid now or within 30 days, or not signed by ca.crt: {e}")
        })?;
    }
    let server = ServerName::try_from(name).map_err(|e| format!("{name}: {e}"))?;
    leaf.verify_is_valid_for_subject_name(&server)
        .map_err(|e| format!("tls.crt does not name {name}: {e}"))
}

/// Makes sure the Secret holds a good certificate, and the webhooks trust its
/// CA. `now` is the time certificates are judged and issued at.
pub async fn provision(
    client: Client,
    target: &Target,
    now: SystemTime,
) -> anyhow::Result<(SecretOutcome, usize)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let names = target.names();
    let existing = secrets.get_opt(&target.secret).await?;
    let good = existing.as_ref().map(|secret| {
        let field = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
                .unwrap_or_default()
        };
        still_good(
            field("ca.crt"),
            field("tls.crt"),
            field("tls.key"),
            &names[0],
            now,
        )
        .map(|()| String::from_utf8_lossy(field("ca.crt")).into_owned())
    });
    let (outcome, ca) = match good {
        Some(Ok(ca)) => (SecretOutcome::Kept, ca),
        other => {
            let issued = issue(&names, now)?;
            let mut secret = tls_secret(target, &issued);
            let outcome = match (other, existing) {
                (Some(Err(why)), Some(old)) => {
                    secret.metadata.resource_version = old.metadata.resource_version;
                    secrets
                        .replace(&target.secret, &PostParams::default(), &secret)
                        .await?;
                    SecretOutcome::Replaced(why)
                }
                _ => {
                    secrets.create(&PostParams::default(), &secret).await?;
                    SecretOutcome::Created
                }
            };
            (outcome, issued.ca)
        }
    };
    let patched = trust(client, &target.webhook_configuration, ca.as_bytes()).await?;
    Ok((outcome, patched))
}

fn tls_secret(target: &Target, issued: &Issued) -> Secret {
    let data = [
        ("ca.crt", &issued.ca),
        ("tls.crt", &issued.certificate),
        ("tls.key", &issued.key),
    ]
    .into_iter()
    .map(|(key, pem)| (key.to_owned(), ByteString(pem.as_bytes().to_vec())))
    .collect::<BTreeMap<_, _>>();
    Secret {
        metadata: ObjectMeta {
            name: Some(target.secret.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "sluice-webhook-certificate".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Sets `ca` as every webhook's `caBundle`; how many changed.
async fn trust(client: Client, name: &str, ca: &[u8]) -> anyhow::Result<usize> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut configuration = api.get(name).await.map_err(|e| {
            anyhow::anyhow!(
                "ValidatingWebhookConfiguration {name}: {e} (once it exists, run again)"
            )
        })?;
        let mut changed = 0;
        for webhook in configuration.webhooks.iter_mut().flatten() {
            let bundle = &mut webhook.client_config.ca_bundle;
            if bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca) {
                *bundle = Some(ByteString(ca.to_vec()));
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(0);
        }
        match api
            .replace(name, &PostParams::default(), &configuration)
            .await
        {
            Ok(_) => return Ok(changed),
            // Someone wrote it in between: read it again.
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "sluice".into(),
            secret: "sluice-webhook-cert".into(),
            service: "sluice-webhook".into(),
            webhook_configuration: "sluice".into(),
        }
    }

    #[test]
    fn an_issued_certificate_is_good_until_it_nears_its_end() {
        let now = SystemTime::now();
        let names = target().names();
        let issued = issue(&names, now).unwrap();
        let check = |name: &str, at| {
            still_good(
                issued.ca.as_bytes(),
                issued.certificate.as_bytes(),
                issued.key.as_bytes(),
                name,
                at,
            )
        };
        assert_eq!(names[0], "sluice-webhook.sluice.svc");
        for name in &names {
            assert_eq!(check(name, now), Ok(()), "{name}");
        }
        // Within 30 days of its end, for another Service, or not begun yet:
        // not good.
        let day = Duration::from_secs(86_400);
        assert_eq!(
            check(&names[0], now + VALIDITY - RENEW_BEFORE - day),
            Ok(())
        );
        assert!(check(&names[0], now + VALIDITY - RENEW_BEFORE + day).is_err());
        assert!(check("other.sluice.svc", now)
            .unwrap_err()
            .contains("does not name"));
        assert!(check(&names[0], now - 2 * Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn a_certificate_of_another_ca_or_key_is_not_good() {
        let now = SystemTime::now();
        let names = target().names();
        let one = issue(&names, now).unwrap();
        let two = issue(&names, now).unwrap();
        let other_ca = still_good(
            two.ca.as_bytes(),
            one.certificate.as_bytes(),
            one.key.as_bytes(),
            &names[0],
            now,
        );
        assert!(other_ca.unwrap_err().contains("not signed by ca.crt"));
        let other_key = still_good(
            one.ca.as_bytes(),
            one.certificate.as_bytes(),
            two.key.as_bytes(),
            &names[0],
            now,
        );
        assert!(other_key.unwrap_err().contains("does not match"));
        // A CA that is the certificate itself (no CA): not good.
        let self_ca = still_good(
            one.certificate.as_bytes(),
            one.certificate.as_bytes(),
            one.key.as_bytes(),
            &names[0],
            now,
        );
        assert!(self_ca.is_err());
        for garbage in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let broken = still_good(
                garbage.as_bytes(),
                one.certificate.as_bytes(),
                one.key.as_bytes(),
                &names[0],
                now,
            );
            assert!(broken.is_err(), "{garbage:?}");
            let broken = still_good(
                one.ca.as_bytes(),
                garbage.as_bytes(),
                one.key.as_bytes(),
                &names[0],
                now,
            );
            assert!(broken.is_err(), "{garbage:?}");
        }
    }
}
