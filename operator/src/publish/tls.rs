//! TLS of the sync stream. The stream carries every tenant's signing keys and account hashes, so it
//! is never cleartext on the pod network: the operator serves it with a certificate of its own CA,
//! and gateways trust exactly that CA (`--sync-ca-file`), nothing else.
//!
//! The CA and the serving certificate live in one Secret of the operator's namespace
//! (`--sync-tls-secret`, the chart's `microplane-sync-tls`): `ca.crt`, `ca.key`, `tls.crt`,
//! `tls.key`. A replica starting up reuses them while they are whole, name the same DNS names and
//! stay valid for more than [`RENEW_BEFORE_SECS`]; otherwise it issues a new serving certificate,
//! with the same CA while its key is there (gateways keep trusting it), else with a new CA. Gateways
//! mount `ca.crt` alone. Replicas racing on the first start agree through the API server: the
//! loser of the create reads the winner's Secret.
//!
//! Deleting the Secret and restarting the operator replaces the CA; gateways pick up the new
//! `ca.crt` when the kubelet refreshes their volume (docs/operator.md#sync-tls).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Serving certificates are issued again when they have less than this left: 30 days.
pub const RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;
/// How long what is issued stays valid: about 10 years (the CA is only trusted by this cluster's
/// gateways; rotating it means deleting the Secret).
pub const VALID_FOR_YEARS: i32 = 10;

const NOT_AFTER: &str = "microplane.dev/not-after";
const DNS_NAMES: &str = "microplane.dev/dns-names";
const CA_NAME: &str = "microplane sync CA";

/// Why the sync TLS material cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating or signing failed.
    #[error("issuing the sync certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// The API server refused or failed.
    #[error("the sync TLS Secret {name}: {source}")]
    Api {
        /// The Secret.
        name: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// No DNS name to issue for.
    #[error("the sync certificate needs at least one DNS name (--sync-tls-dns-names)")]
    NoNames,
}

/// PEM material of the sync server. `Debug` shows no key.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The CA certificate gateways trust.
    pub ca_cert: String,
    /// The CA key (kept to issue the next serving certificate under the same CA).
    pub ca_key: String,
    /// The serving certificate.
    pub cert: String,
    /// Its key.
    pub key: String,
    /// When the serving certificate expires (Unix seconds).
    pub not_after: i64,
    /// The DNS names it is issued for, comma-separated.
    pub dns_names: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("not_after", &self.not_after)
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

fn ca_params(not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Issues a serving certificate for `dns_names` at `now` (Unix seconds): under `ca` (its PEM
/// certificate and key) when given and usable, else under a new CA.
pub fn issue(ca: Option<(&str, &str)>, dns_names: &[String], now: i64) -> Result<Material, TlsError> {
    if dns_names.is_empty() {
        return Err(TlsError::NoNames);
    }
    let not_before = at(now - 3600);
    let not_after = not_before
        .replace_year(not_before.year() + VALID_FOR_YEARS)
        .unwrap_or(not_before + time::Duration::days(3650));
    // The CA: the one given (same name and key, so what it issued before still chains), or new.
    let existing = ca.and_then(|(cert, key)| KeyPair::from_pem(key).ok().map(|k| (cert.to_owned(), k)));
    let (ca_cert, ca_key) = match existing {
        Some(pair) => pair,
        None => {
            let key = KeyPair::generate()?;
            let cert = ca_params(not_before, not_after).self_signed(&key)?;
            (cert.pem(), key)
        }
    };
    let issuer = Issuer::new(ca_params(not_before, not_after), &ca_key);
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns_names[0].clone());
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Material {
        ca_cert,
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after: not_after.unix_timestamp(),
        dns_names: dns_names.join(","),
    })
}

/// The material a Secret holds, if it is whole.
pub fn read(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.trim().is_empty())
    };
    let annotations = secret.metadata.annotations.as_ref()?;
    Some(Material {
        ca_cert: text("ca.crt")?,
        ca_key: text("ca.key")?,
        cert: text("tls.crt")?,
        key: text("tls.key")?,
        not_after: annotations.get(NOT_AFTER)?.parse().ok()?,
        dns_names: annotations.get(DNS_NAMES)?.clone(),
    })
}

/// Whether `m` can serve `dns_names` at `now` without being issued again.
pub fn current(m: &Material, dns_names: &[String], now: i64) -> bool {
    m.dns_names == dns_names.join(",") && m.not_after - now > RENEW_BEFORE_SECS
}

fn secret(name: &str, namespace: &str, m: &Material) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", &m.ca_cert),
        ("ca.key", &m.ca_key),
        ("tls.crt", &m.cert),
        ("tls.key", &m.key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "microplane-operator".to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (NOT_AFTER.to_owned(), m.not_after.to_string()),
                (DNS_NAMES.to_owned(), m.dns_names.clone()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The sync server's material from Secret `name` in `namespace`, issued (and written back) when
/// it is missing, partial, for other names or close to expiry.
pub async fn ensure(
    client: kube::Client,
    namespace: &str,
    name: &str,
    dns_names: &[String],
    now: i64,
) -> Result<Material, TlsError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error = |source| TlsError::Api {
        name: format!("{namespace}/{name}"),
        source,
    };
    let found = api.get_opt(name).await.map_err(api_error)?;
    let held = found.as_ref().and_then(read);
    if let Some(m) = &held
        && current(m, dns_names, now)
    {
        return Ok(m.clone());
    }
    let issued = issue(
        held.as_ref().map(|m| (m.ca_cert.as_str(), m.ca_key.as_str())),
        dns_names,
        now,
    )?;
    let object = secret(name, namespace, &issued);
    match found {
        None => match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(secret = %name, names = %issued.dns_names, "sync TLS: issued a new CA and serving certificate");
                Ok(issued)
            }
            // Another replica created it first: use what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let theirs = api.get(name).await.map_err(api_error)?;
                read(&theirs).ok_or_else(|| TlsError::Api {
                    name: format!("{namespace}/{name}"),
                    source: kube::Error::Api(e),
                })
            }
            Err(e) => Err(api_error(e)),
        },
        Some(_) => {
            api.patch(
                name,
                &PatchParams::apply("microplane-operator").force(),
                &Patch::Apply(&object),
            )
            .await
            .map_err(api_error)?;
            tracing::info!(secret = %name, names = %issued.dns_names, "sync TLS: issued a new serving certificate");
            Ok(issued)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        vec![
            "microplane-operator.microplane-system.svc".into(),
            "microplane-operator".into(),
        ]
    }

    #[test]
    fn issued_material_round_trips_through_the_secret() {
        let m = issue(None, &names(), NOW).unwrap();
        assert!(m.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.key.contains("PRIVATE KEY"));
        assert!(!format!("{m:?}").contains("PRIVATE"), "Debug shows no key");
        let s = secret("sync-tls", "ns", &m);
        assert_eq!(read(&s), Some(m.clone()));
        assert!(current(&m, &names(), NOW));
        assert!(m.not_after > NOW + 9 * 365 * 24 * 3600);
    }

    #[test]
    fn renewal_keeps_the_ca_and_follows_names_and_expiry() {
        let m = issue(None, &names(), NOW).unwrap();
        assert!(
            !current(&m, &["other.svc".to_string()], NOW),
            "other names: issue again"
        );
        assert!(
            !current(&m, &names(), m.not_after - RENEW_BEFORE_SECS + 1),
            "close to expiry"
        );
        let again = issue(Some((&m.ca_cert, &m.ca_key)), &["other.svc".to_string()], NOW).unwrap();
        assert_eq!(again.ca_cert, m.ca_cert, "the same CA: gateways keep trusting it");
        assert_ne!(again.cert, m.cert);
        // A CA key that does not parse is replaced with a new CA, never an error.
        let fresh = issue(Some((&m.ca_cert, "garbage")), &names(), NOW).unwrap();
        assert_ne!(fresh.ca_cert, m.ca_cert);
        assert!(matches!(issue(None, &[], NOW), Err(TlsError::NoNames)));
    }

    #[test]
    fn a_partial_secret_is_not_material() {
        let m = issue(None, &names(), NOW).unwrap();
        let mut s = secret("sync-tls", "ns", &m);
        s.data.as_mut().unwrap().remove("tls.key");
        assert_eq!(read(&s), None);
        let mut s = secret("sync-tls", "ns", &m);
        s.metadata.annotations = None;
        assert_eq!(read(&s), None);
    }
}
