//! A tenant's token issuer: its ES256 signing keys, kept in a Secret of the tenant namespace and
//! rotated with an overlap window, and its issuer URL. The gateway signs tokens with the newest key
//! and verifies with every key still in the Secret.

use std::collections::BTreeMap;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::labels::{KEYS_LABEL, TENANT_LABEL};
use crate::{Error, Result};

/// Name of the Secret holding a tenant's signing keys.
pub(crate) const KEYS_SECRET: &str = "microplane-issuer-keys";
/// Its type.
pub(crate) const KEYS_TYPE: &str = "microplane.dev/issuer-keys";
/// The data key of the key list.
pub(crate) const KEYS_FIELD: &str = "keys.json";

/// One signing key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    /// Key id (`kid`): the first 16 hex digits of the SHA-256 of the public key.
    pub(crate) kid: String,
    /// When it was made (Unix seconds).
    pub(crate) created: i64,
    /// PKCS#8 DER of the ECDSA P-256 private key, base64 (standard alphabet).
    pub(crate) pkcs8: String,
}

/// When to rotate and how long an old key keeps verifying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Age at which a new key takes over signing.
    pub every_seconds: i64,
    /// How long a replaced key keeps verifying (longer than any token it signed lives).
    pub overlap_seconds: i64,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            every_seconds: 30 * 24 * 3600,
            overlap_seconds: 2 * 24 * 3600,
        }
    }
}

/// A new key.
pub(crate) fn generate(now: i64) -> Result<StoredKey> {
    use base64::Engine;
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| Error::Keys("generating a signing key failed".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
        .map_err(|_| Error::Keys("reading a generated signing key failed".into()))?;
    let digest = sha2::Sha256::digest(pair.public_key().as_ref());
    let kid: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(StoredKey {
        kid,
        created: now,
        pkcs8: base64::engine::general_purpose::STANDARD.encode(doc.as_ref()),
    })
}

/// Most a key's `created` may lie ahead of the operator's clock.
const CLOCK_SKEW_SECONDS: i64 = 300;

/// A keys Secret as read: the usable keys and why the others are not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Read {
    /// Keys that parse as ECDSA P-256 PKCS#8 and were not made in the future.
    pub(crate) keys: Vec<StoredKey>,
    /// One line per entry (or document) that is not usable. Tenant admins may edit Secrets in
    /// their namespace: what they break is dropped and replaced, never passed on to the gateways.
    pub(crate) rejected: Vec<String>,
}

/// Reads the key list of a Secret at `now` (empty when absent; an unreadable document or key is
/// rejected, and new keys replace it).
pub(crate) fn read(secret: Option<&Secret>, now: i64) -> Read {
    use base64::Engine;
    let Some(bytes) = secret.and_then(|s| s.data.as_ref()).and_then(|d| d.get(KEYS_FIELD)) else {
        return Read::default();
    };
    let stored: Vec<StoredKey> = match serde_json::from_slice(&bytes.0) {
        Ok(k) => k,
        Err(e) => {
            return Read {
                keys: Vec::new(),
                rejected: vec![format!("{KEYS_FIELD} is not a key list: {e}")],
            };
        }
    };
    let mut read = Read::default();
    for k in stored {
        let usable = base64::engine::general_purpose::STANDARD
            .decode(&k.pkcs8)
            .ok()
            .is_some_and(|der| EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok());
        if !usable {
            read.rejected
                .push(format!("key {:?} is not an ECDSA P-256 PKCS#8 key", k.kid));
        } else if k.created > now + CLOCK_SKEW_SECONDS {
            // It would never come due for rotation.
            read.rejected
                .push(format!("key {:?} was made in the future ({})", k.kid, k.created));
        } else {
            read.keys.push(k);
        }
    }
    read
}

/// The keys wanted now, newest first: a new key when there is none or the newest is due for
/// rotation; keys replaced longer than the overlap ago are dropped. `None` when nothing changes.
pub(crate) fn rotate(
    current: &[StoredKey],
    now: i64,
    rotation: Rotation,
    make: impl FnOnce() -> Result<StoredKey>,
) -> Result<Option<Vec<StoredKey>>> {
    let mut keys = current.to_vec();
    keys.sort_by_key(|k| std::cmp::Reverse(k.created));
    let mut changed = keys != current;
    if keys.first().is_none_or(|k| now - k.created >= rotation.every_seconds) {
        keys.insert(0, make()?);
        changed = true;
    }
    // A key stops verifying `overlap` after its successor took over.
    let mut kept = vec![keys[0].clone()];
    for pair in keys.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        if now - newer.created < rotation.overlap_seconds {
            kept.push(older.clone());
        } else {
            changed = true;
            break;
        }
    }
    Ok(changed.then_some(kept))
}

/// The Secret holding `keys` in the tenant namespace `ns`.
pub(crate) fn secret(
    ns: &str,
    keys: &[StoredKey],
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<Secret> {
    let json = serde_json::to_vec(keys).map_err(|e| Error::Keys(format!("encoding keys: {e}")))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(KEYS_SECRET.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([
                (KEYS_LABEL.to_string(), "true".to_string()),
                (TENANT_LABEL.to_string(), ns.to_string()),
                ("app.kubernetes.io/managed-by".to_string(), "microplane".to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(KEYS_TYPE.into()),
        data: Some(BTreeMap::from([(KEYS_FIELD.to_string(), ByteString(json))])),
        ..Default::default()
    })
}

/// The tenant's issuer: `<base>/<tenant>`, where its OpenID discovery document and JWKS are served
/// (`<issuer>/.well-known/openid-configuration`).
pub(crate) fn issuer_url(base: Option<&str>, tenant: &str) -> String {
    let base = base.unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    format!("{base}/{tenant}")
}

/// Issuer base when the operator is not told the gateway's URL.
pub(crate) const DEFAULT_BASE: &str = "http://microplane-gateway.microplane-system";

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    fn key(kid: &str, created: i64) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            created,
            pkcs8: String::new(),
        }
    }

    #[test]
    fn generated_keys_are_distinct_and_parse() {
        use base64::Engine;
        let a = generate(1).unwrap();
        let b = generate(1).unwrap();
        assert_ne!(a.kid, b.kid);
        assert_eq!(a.kid.len(), 16);
        let der = base64::engine::general_purpose::STANDARD.decode(&a.pkcs8).unwrap();
        assert!(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok());
    }

    #[test]
    fn first_key_then_nothing_until_rotation() {
        let r = Rotation::default();
        let first = rotate(&[], 0, r, || Ok(key("a", 0))).unwrap().unwrap();
        assert_eq!(first, vec![key("a", 0)]);
        assert_eq!(rotate(&first, 10 * DAY, r, || Ok(key("x", 0))).unwrap(), None);
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_overlap() {
        let r = Rotation::default();
        let now = 30 * DAY;
        let rotated = rotate(&[key("a", 0)], now, r, || Ok(key("b", now))).unwrap().unwrap();
        assert_eq!(rotated, vec![key("b", now), key("a", 0)]);
        // Still inside the overlap: unchanged.
        assert_eq!(rotate(&rotated, now + DAY, r, || Ok(key("x", 0))).unwrap(), None);
        // After it: the old key goes.
        let pruned = rotate(&rotated, now + 2 * DAY, r, || Ok(key("x", 0))).unwrap().unwrap();
        assert_eq!(pruned, vec![key("b", now)]);
    }

    #[test]
    fn secrets_round_trip_and_issuers_are_urls() {
        let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference::default();
        let k = generate(1).unwrap();
        let s = secret("acme", std::slice::from_ref(&k), owner).unwrap();
        assert_eq!(read(Some(&s), 10).keys, vec![k]);
        assert_eq!(read(None, 10), Read::default());
        assert_eq!(
            issuer_url(Some("http://localhost:8080/"), "acme"),
            "http://localhost:8080/acme"
        );
        assert_eq!(
            issuer_url(None, "acme"),
            "http://microplane-gateway.microplane-system/acme"
        );
    }

    /// Issue 20, item 1: what a tenant admin writes into the keys Secret never reaches the gateways
    /// unchecked, and a key from the future is replaced instead of signing forever.
    #[test]
    fn broken_and_future_keys_are_rejected_and_replaced() {
        let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference::default();
        let now = 100 * DAY;
        let good = generate(now - DAY).unwrap();
        let future = generate(now + 365 * DAY).unwrap();
        let garbage = StoredKey {
            kid: "garbage".into(),
            created: now - DAY,
            pkcs8: "bm90IGEga2V5".into(),
        };
        let s = secret("acme", &[good.clone(), future, garbage], owner.clone()).unwrap();
        let r = read(Some(&s), now);
        assert_eq!(r.keys, vec![good]);
        assert_eq!(r.rejected.len(), 2, "{:?}", r.rejected);
        assert!(r.rejected[0].contains("future"), "{:?}", r.rejected);
        assert!(r.rejected[1].contains("not an ECDSA P-256"), "{:?}", r.rejected);

        let mut unreadable = secret("acme", &[], owner).unwrap();
        unreadable
            .data
            .as_mut()
            .unwrap()
            .insert(KEYS_FIELD.into(), ByteString(b"{not json".to_vec()));
        let r = read(Some(&unreadable), now);
        assert!(r.keys.is_empty());
        assert!(r.rejected[0].contains("not a key list"), "{:?}", r.rejected);
        // Nothing usable: a new key takes over at once.
        let fresh = rotate(&r.keys, now, Rotation::default(), || generate(now))
            .unwrap()
            .unwrap();
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].created, now);
    }
}
