//! Keys: the algorithms a token may be signed with, public keys read from JWKs, and the platform's
//! own ES256 signing keys.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self as sig, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, ParsedPublicKey, RsaParameters,
    RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::{Claims, KeyError, TokenError};

/// A signature algorithm a token may use. Only asymmetric algorithms exist here: HMAC (`HS*`)
/// and `none` cannot be expressed, so no configuration can allow them.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Micro's algorithm).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256 (the platform's own tokens).
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// Every algorithm, in declaration order.
    pub const ALL: [Alg; 7] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name (`"RS256"`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The algorithm with this exact (case-sensitive, RFC 7515) JOSE name; `None` for `none`, any
    /// `HS*` and anything unknown.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The aws-lc RSA verification parameters (the same jsonwebtoken's aws-lc backend uses).
    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        match self {
            Alg::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
            Alg::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
            Alg::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
            Alg::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
            Alg::ES256 | Alg::ES384 | Alg::EdDSA => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Alg {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::from_name(s).ok_or(KeyError::UnsupportedAlgorithm)
    }
}

/// The public key material, as the JWK carries it (big-endian, no leading zeros for RSA).
#[derive(Clone, PartialEq, Eq)]
enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { x: Vec<u8>, y: Vec<u8> },
    Okp { x: Vec<u8> },
}

/// A public key that verifies tokens: the `kid` tokens name it by, the one algorithm it is used
/// with, and the key itself (validated when built: an RSA modulus of 2048 to 8192 bits, an EC point
/// on its curve, a 32-byte Ed25519 key).
///
/// Built from a JWK ([`from_jwk`](Self::from_jwk), [`parse_jwks`]) or from a [`SigningKey`]. The
/// key is parsed once, when built, into an aws-lc verification key for its algorithm.
#[derive(Clone)]
pub struct PublicKey {
    /// The key id (`kid`); empty when the JWK had none.
    pub kid: String,
    /// The algorithm this key verifies. A token whose header names another `alg` never uses it.
    /// (Changing it after the key is built makes the key unusable: it stays parsed for the
    /// algorithm it was built with.)
    pub alg: Alg,
    material: Material,
    parsed_for: Alg,
    parsed: ParsedPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.material == other.material
    }
}

impl Eq for PublicKey {}

/// Decodes a base64url JWK member (tolerating `=` padding, which some producers add).
fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = match obj.get(name) {
        Some(Value::String(s)) => s.trim_end_matches('='),
        Some(_) => return Err(KeyError::Malformed("a key component is not a string")),
        None => return Err(KeyError::Malformed("a key component is missing")),
    };
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| KeyError::Malformed("a key component is not base64url"))
}

/// An optional string member; present with another type is an error.
fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, KeyError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::Malformed("a JWK member is not a string")),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

impl PublicKey {
    fn new(kid: String, alg: Alg, material: Material) -> Result<Self, KeyError> {
        let parsed = match &material {
            Material::Rsa { n, e } => {
                let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
                if !(2048..=8192).contains(&bits) {
                    return Err(KeyError::Invalid("RSA modulus must have 2048 to 8192 bits"));
                }
                if e.len() > 4 || e.last().is_none_or(|b| b & 1 == 0) || e.as_slice() == [1] {
                    return Err(KeyError::Invalid(
                        "RSA exponent must be odd, at least 3 and at most 32 bits",
                    ));
                }
                let parameters = alg.rsa_parameters().ok_or(KeyError::UnsupportedAlgorithm)?;
                RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(parameters)
                .map_err(|_| KeyError::Invalid("RSA components are not a valid key"))?
            }
            Material::Ec { x, y } => {
                let (verification, len): (&'static sig::EcdsaVerificationAlgorithm, usize) = match alg {
                    Alg::ES256 => (&sig::ECDSA_P256_SHA256_FIXED, 32),
                    Alg::ES384 => (&sig::ECDSA_P384_SHA384_FIXED, 48),
                    _ => return Err(KeyError::UnsupportedAlgorithm),
                };
                if x.len() != len || y.len() != len {
                    return Err(KeyError::Invalid("EC coordinates have the wrong length for the curve"));
                }
                ParsedPublicKey::new(verification, uncompressed_point(x, y))
                    .map_err(|_| KeyError::Invalid("EC point is not on the curve"))?
            }
            Material::Okp { x } => {
                if alg != Alg::EdDSA {
                    return Err(KeyError::UnsupportedAlgorithm);
                }
                if x.len() != 32 {
                    return Err(KeyError::Invalid("an Ed25519 key has 32 bytes"));
                }
                ParsedPublicKey::new(&sig::ED25519, x).map_err(|_| KeyError::Invalid("not an Ed25519 key"))?
            }
        };
        Ok(PublicKey {
            kid,
            alg,
            material,
            parsed_for: alg,
            parsed,
        })
    }

    /// Reads a public key from a JWK (RFC 7517).
    ///
    /// - `kty` `RSA` (`n`, `e`), `EC` (`crv` `P-256`/`P-384`, `x`, `y`) or `OKP` (`crv` `Ed25519`, `x`);
    ///   `oct` is refused ([`KeyError::Symmetric`]), and so is any JWK with private material (`d`).
    /// - `alg`, when present, must be one of [`Alg`] and fit the key (ES256 only on P-256, …); when
    ///   absent it is RS256 for RSA, ES256/ES384 by curve, EdDSA for Ed25519.
    /// - `use`, when present, must be `sig`; `key_ops`, when present, must contain `verify`.
    /// - `kid` is optional (empty when absent).
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let obj = jwk.as_object().ok_or(KeyError::Malformed("a JWK is a JSON object"))?;
        let kty = str_field(obj, "kty")?.ok_or(KeyError::Malformed("a JWK needs kty"))?;
        if kty == "oct" {
            return Err(KeyError::Symmetric);
        }
        if str_field(obj, "use")?.is_some_and(|u| u != "sig") {
            return Err(KeyError::NotForSignatures);
        }
        if let Some(ops) = obj.get("key_ops") {
            let ops = ops.as_array().ok_or(KeyError::Malformed("key_ops is not an array"))?;
            if !ops.iter().any(|op| op == "verify") {
                return Err(KeyError::NotForSignatures);
            }
        }
        if obj.contains_key("d") {
            return Err(KeyError::PrivateKey);
        }
        let kid = str_field(obj, "kid")?.unwrap_or_default().to_owned();
        let named = match str_field(obj, "alg")? {
            Some(name) => Some(Alg::from_name(name).ok_or(KeyError::UnsupportedAlgorithm)?),
            None => None,
        };
        let (alg, material) = match kty {
            "RSA" => {
                let n = strip_leading_zeros(&b64_field(obj, "n")?);
                let e = strip_leading_zeros(&b64_field(obj, "e")?);
                (named.unwrap_or(Alg::RS256), Material::Rsa { n, e })
            }
            "EC" => {
                let by_curve = match str_field(obj, "crv")? {
                    Some("P-256") => Alg::ES256,
                    Some("P-384") => Alg::ES384,
                    _ => return Err(KeyError::UnsupportedCurve),
                };
                if named.is_some_and(|alg| alg != by_curve) {
                    return Err(KeyError::UnsupportedAlgorithm);
                }
                let x = b64_field(obj, "x")?;
                let y = b64_field(obj, "y")?;
                (by_curve, Material::Ec { x, y })
            }
            "OKP" => {
                if str_field(obj, "crv")? != Some("Ed25519") {
                    return Err(KeyError::UnsupportedCurve);
                }
                (
                    named.unwrap_or(Alg::EdDSA),
                    Material::Okp {
                        x: b64_field(obj, "x")?,
                    },
                )
            }
            _ => return Err(KeyError::UnsupportedKeyType),
        };
        // `new` refuses an `alg` that does not fit the key type.
        PublicKey::new(kid, alg, material)
    }

    /// The key as a public JWK with `kty`, `kid`, `alg`, `use: "sig"` and its components; what a
    /// JWKS endpoint publishes. [`from_jwk`](Self::from_jwk) reads it back to an equal key.
    pub fn to_jwk(&self) -> Value {
        let mut jwk = Map::new();
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        match &self.material {
            Material::Rsa { n, e } => {
                jwk.insert("kty".into(), "RSA".into());
                jwk.insert("n".into(), b64(n));
                jwk.insert("e".into(), b64(e));
            }
            Material::Ec { x, y } => {
                jwk.insert("kty".into(), "EC".into());
                let crv = if self.alg == Alg::ES384 { "P-384" } else { "P-256" };
                jwk.insert("crv".into(), crv.into());
                jwk.insert("x".into(), b64(x));
                jwk.insert("y".into(), b64(y));
            }
            Material::Okp { x } => {
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "Ed25519".into());
                jwk.insert("x".into(), b64(x));
            }
        }
        jwk.insert("kid".into(), self.kid.clone().into());
        jwk.insert("alg".into(), self.alg.name().into());
        jwk.insert("use".into(), "sig".into());
        Value::Object(jwk)
    }

    /// A SHA-256 over the `kid`, the `alg` and the key material: equal for equal keys, different
    /// for any other key. What a cached verification remembers of the key that made it.
    pub(super) fn fingerprint(&self) -> [u8; 32] {
        let mut h = Fingerprint::new();
        h.field(self.kid.as_bytes());
        h.field(self.alg.name().as_bytes());
        match &self.material {
            Material::Rsa { n, e } => {
                h.field(b"RSA");
                h.field(n);
                h.field(e);
            }
            Material::Ec { x, y } => {
                h.field(b"EC");
                h.field(x);
                h.field(y);
            }
            Material::Okp { x } => {
                h.field(b"OKP");
                h.field(x);
            }
        }
        h.finish()
    }

    /// Whether [`alg`](Self::alg) (a public field) is still the algorithm the key was parsed for;
    /// a key whose `alg` was changed is never used.
    pub(super) fn consistent(&self) -> bool {
        self.alg == self.parsed_for
    }

    /// Checks a JWS signature (already base64url-decoded) over `message` (`header.payload`). ECDSA
    /// signatures are the fixed-size `r || s` of RFC 7518 §3.4.
    pub(super) fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        self.consistent() && self.parsed.verify_sig(message, signature).is_ok()
    }
}

/// SHA-256 over length-prefixed fields, so that no two different field lists hash alike.
pub(super) struct Fingerprint(aws_lc_rs::digest::Context);

impl Fingerprint {
    pub(super) fn new() -> Self {
        Self(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }

    pub(super) fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    pub(super) fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

fn uncompressed_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
}

/// Reads a JWK Set (`{"keys": [...]}`, RFC 7517 §5).
///
/// Keys the gateway cannot use (an unsupported `kty`, `alg` or curve, a symmetric `oct` key, a key
/// not for signatures, one with private material, invalid material) are skipped, so that one odd
/// key does not take down an issuer; a later key with the same `kid` and `alg` as an earlier one is
/// skipped too. A set that is not JSON, has no `keys` array, or leaves no usable key is an error.
pub fn parse_jwks(json: &[u8]) -> Result<Vec<PublicKey>, KeyError> {
    let set: Value = serde_json::from_slice(json).map_err(|_| KeyError::Malformed("a key set is JSON"))?;
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(KeyError::Malformed("a key set has a keys array"))?;
    let mut out: Vec<PublicKey> = Vec::with_capacity(keys.len());
    for jwk in keys {
        match PublicKey::from_jwk(jwk) {
            Ok(key) if out.iter().any(|k| k.kid == key.kid && k.alg == key.alg) => {
                tracing::debug!(kid = %key.kid, "JWKS: duplicate kid skipped");
            }
            Ok(key) => out.push(key),
            Err(err) => {
                let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or_default();
                tracing::debug!(kid = %kid.escape_debug(), %err, "JWKS: key skipped");
            }
        }
    }
    if out.is_empty() {
        return Err(KeyError::NoUsableKeys);
    }
    Ok(out)
}

/// One of the platform's own signing keys: ECDSA P-256 (ES256), stored as PKCS#8 DER in a Secret.
///
/// Neither `Debug` nor any error shows the private key.
pub struct SigningKey {
    /// The key id written into every token's header and into the published JWK.
    pub kid: String,
    encoding: EncodingKey,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &Alg::ES256)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random P-256 key.
    pub fn generate(kid: impl Into<String>) -> Result<Self, KeyError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(kid, pkcs8.as_ref())
    }

    /// The key from its PKCS#8 DER form (as [`pkcs8_der`](Self::pkcs8_der) wrote it). The `kid`
    /// must not be empty.
    pub fn from_pkcs8_der(kid: impl Into<String>, der: &[u8]) -> Result<Self, KeyError> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(KeyError::Invalid("a signing key needs a kid"));
        }
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| KeyError::Invalid("not a PKCS#8 P-256 private key"))?;
        let point = pair.public_key().as_ref();
        let (x, y) = match point {
            [0x04, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => return Err(KeyError::Invalid("unexpected P-256 public key encoding")),
        };
        let public = PublicKey::new(
            kid.clone(),
            Alg::ES256,
            Material::Ec {
                x: x.to_vec(),
                y: y.to_vec(),
            },
        )?;
        Ok(SigningKey {
            kid,
            encoding: EncodingKey::from_ec_der(der),
            public,
        })
    }

    /// The private key as PKCS#8 DER, for storage in a Kubernetes Secret. This is secret material.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.encoding.as_bytes().to_vec()
    }

    /// The public half, to publish in the tenant's JWKS and to verify with.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// Signs `claims` as a compact JWS with header `{"typ":"JWT","alg":"ES256","kid":…}`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| TokenError::Signing)
    }
}
