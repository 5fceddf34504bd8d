//! The hostile corpus and the good paths.

use std::sync::LazyLock;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "acme";

struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    public: PublicKey,
}

struct Keys {
    rsa: TestKey,
    /// The RSA public key as X.509 SubjectPublicKeyInfo DER, what an alg-confusion attacker uses.
    rsa_spki: Vec<u8>,
    ec: TestKey,
    ec_signing: SigningKey,
    ed: TestKey,
}

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let octets = (n & 0x7f) as usize;
            let len = input[2..2 + octets]
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | b as usize);
            (len, 2 + octets)
        }
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (what jsonwebtoken's RSA signer reads).
fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = tlv(pkcs8);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    key.to_vec()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = rsa.as_der().unwrap();
    let public = rsa.public_key();
    let rsa_jwk = json!({
        "kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    });
    let rsa_spki = public.as_der().unwrap().as_ref().to_vec();

    let ec_signing = SigningKey::generate("ec-1").unwrap();

    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let ed_pair = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(ed_pair.public_key().as_ref())});

    Keys {
        rsa: TestKey {
            kid: "rsa-1",
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&pkcs1_from_pkcs8(pkcs8.as_ref())),
            public: PublicKey::from_jwk(&rsa_jwk).unwrap(),
        },
        rsa_spki,
        ec: TestKey {
            kid: "ec-1",
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&ec_signing.pkcs8_der()),
            public: ec_signing.public(),
        },
        ec_signing,
        ed: TestKey {
            kid: "ed-1",
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
            public: PublicKey::from_jwk(&ed_jwk).unwrap(),
        },
    }
});

fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg).unwrap().as_str().unwrap().to_owned()
}

/// A compact JWS over exactly these header and payload texts.
fn sign_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn header_for(key: &TestKey) -> Value {
    json!({"typ": "JWT", "alg": alg_name(key.alg), "kid": key.kid})
}

fn token_with(key: &TestKey, payload: &Value) -> String {
    sign_raw(
        &header_for(key).to_string(),
        &payload.to_string(),
        &key.encoding,
        key.alg,
    )
}

fn claims() -> Value {
    json!({
        "sub": "alice", "iss": ISS, "exp": NOW + 600, "iat": NOW,
        "type": "user", "scopes": ["admin", "ops"], "token_use": "access",
        "name": "Alice", "metadata": {"team": "a"},
    })
}

fn with(mut value: Value, key: &str, v: Value) -> Value {
    value[key] = v;
    value
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

fn acme(keys: &[&TestKey]) -> Issuer {
    Issuer::new(ISS, "acme", keys.iter().map(|k| k.public.clone()).collect())
}

fn verifier(issuers: Vec<Issuer>) -> Verifier {
    Verifier::new(issuers, VerifierSettings::default())
}

fn all_keys() -> Verifier {
    let k = &*KEYS;
    verifier(vec![acme(&[&k.rsa, &k.ec, &k.ed])])
}

/// Refused, with an error that shows nothing of the token.
fn refused(verifier: &Verifier, token: &str) -> TokenError {
    let err = verifier.verify(token, NOW).expect_err("token must be refused");
    for shown in [err.to_string(), format!("{err:?}")] {
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!shown.contains(part), "error shows the token: {shown}");
        }
    }
    err
}

// ---- good tokens ----

#[test]
fn good_rs256_token_verifies() {
    let token = token_with(&KEYS.rsa, &claims());
    let verified = all_keys().verify(&token, NOW).unwrap();
    assert_eq!(
        verified,
        Verified {
            account_id: "alice".into(),
            account_type: "user".into(),
            scopes: vec!["admin".into(), "ops".into()],
            tenant: "acme".into(),
            issuer: ISS.into(),
            expires_at: NOW + 600,
            token_use: "access".into(),
            audiences: vec![],
        }
    );
}

#[test]
fn good_es256_token_from_a_signing_key_verifies() {
    let claims = Claims {
        sub: "svc-1".into(),
        iss: ISS.into(),
        exp: NOW + 60,
        iat: NOW,
        account_type: "service".into(),
        scopes: vec!["service".into()],
        token_use: TokenUse::Access.as_str().into(),
        ..Claims::default()
    };
    let token = KEYS.ec_signing.sign(&claims).unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header, json!({"typ": "JWT", "alg": "ES256", "kid": "ec-1"}));
    let verified = all_keys().verify(&token, NOW).unwrap();
    assert_eq!(verified.account_id, "svc-1");
    assert_eq!(verified.account_type, "service");
    assert_eq!(verified.scopes, ["service"]);
}

#[test]
fn good_eddsa_token_verifies() {
    let token = token_with(&KEYS.ed, &claims());
    assert_eq!(all_keys().verify(&token, NOW).unwrap().account_id, "alice");
}

#[test]
fn ps256_key_verifies_its_tokens() {
    // PS256 with the RSA key material.
    let mut jwk = KEYS.rsa.public.to_jwk();
    jwk["alg"] = "PS256".into();
    jwk["kid"] = "rsa-pss".into();
    let pss = TestKey {
        kid: "rsa-pss",
        alg: Algorithm::PS256,
        encoding: KEYS.rsa.encoding.clone(),
        public: PublicKey::from_jwk(&jwk).unwrap(),
    };
    let token = token_with(&pss, &claims());
    assert!(verifier(vec![acme(&[&pss])]).verify(&token, NOW).is_ok());
}

#[test]
fn es384_key_verifies_its_tokens() {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = &pair.public_key().as_ref()[1..];
    let jwk = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": b64(&point[..48]), "y": b64(&point[48..])});
    let key = TestKey {
        kid: "p384",
        alg: Algorithm::ES384,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public: PublicKey::from_jwk(&jwk).unwrap(),
    };
    assert_eq!(key.public.alg, Alg::ES384);
    assert_eq!(key.public.to_jwk()["crv"], "P-384");
    assert!(
        verifier(vec![acme(&[&key])])
            .verify(&token_with(&key, &claims()), NOW)
            .is_ok()
    );
}

#[test]
fn a_token_without_kid_uses_the_only_key_of_its_alg() {
    let k = &*KEYS;
    let token = sign_raw(
        r#"{"alg":"RS256"}"#,
        &claims().to_string(),
        &k.rsa.encoding,
        Algorithm::RS256,
    );
    assert!(all_keys().verify(&token, NOW).is_ok());
}

#[test]
fn a_token_without_kid_is_refused_when_several_keys_fit() {
    let k = &*KEYS;
    let mut second = k.rsa.public.clone();
    second.kid = "rsa-2".into();
    let issuer = Issuer::new(ISS, "acme", vec![k.rsa.public.clone(), second]);
    let token = sign_raw(
        r#"{"alg":"RS256"}"#,
        &claims().to_string(),
        &k.rsa.encoding,
        Algorithm::RS256,
    );
    assert_eq!(refused(&verifier(vec![issuer]), &token).category(), "key");
}

#[test]
fn skew_tolerates_a_just_expired_token() {
    let token = token_with(&KEYS.rsa, &with(claims(), "exp", json!(NOW - 30)));
    assert!(all_keys().verify(&token, NOW).is_ok());
}

#[test]
fn fractional_numeric_dates_are_numbers() {
    let token = token_with(&KEYS.rsa, &with(claims(), "exp", json!((NOW + 10) as f64 + 0.5)));
    assert_eq!(all_keys().verify(&token, NOW).unwrap().expires_at, NOW + 10);
}

// ---- the hostile corpus ----

#[test]
fn alg_none_is_refused() {
    let v = all_keys();
    let payload = b64(claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "kid": "rsa-1"}).to_string());
        // With the empty signature `none` uses, and with junk in case a parser skips empty parts.
        assert_eq!(
            refused(&v, &format!("{header}.{payload}.")),
            TokenError::Malformed("a token part is empty"),
            "{alg}"
        );
        let err = refused(&v, &format!("{header}.{payload}.{}", b64("junk-signature")));
        assert_eq!(err.category(), "algorithm", "{alg}");
        assert_eq!(err, TokenError::Algorithm("alg none is never accepted"));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let k = &*KEYS;
    let v = all_keys();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&k.rsa_spki)
    );
    let n = URL_SAFE_NO_PAD
        .decode(k.rsa.public.to_jwk()["n"].as_str().unwrap())
        .unwrap();
    for secret in [k.rsa_spki.clone(), pem.into_bytes(), n] {
        for (alg, name) in [
            (Algorithm::HS256, "HS256"),
            (Algorithm::HS384, "HS384"),
            (Algorithm::HS512, "HS512"),
        ] {
            let header = json!({"alg": name, "kid": "rsa-1", "typ": "JWT"}).to_string();
            let token = sign_raw(&header, &claims().to_string(), &EncodingKey::from_secret(&secret), alg);
            assert_eq!(
                refused(&v, &token),
                TokenError::Algorithm("HMAC algorithms are never accepted")
            );
        }
    }
}

#[test]
fn expired_token_is_refused() {
    let token = token_with(&KEYS.rsa, &with(claims(), "exp", json!(NOW - 61)));
    assert_eq!(refused(&all_keys(), &token), TokenError::Expired);
}

#[test]
fn not_yet_valid_token_is_refused() {
    let v = all_keys();
    let token = token_with(&KEYS.rsa, &with(claims(), "nbf", json!(NOW + 120)));
    assert_eq!(refused(&v, &token), TokenError::NotYetValid);
    let within_skew = token_with(&KEYS.rsa, &with(claims(), "nbf", json!(NOW + 30)));
    assert!(v.verify(&within_skew, NOW).is_ok());
}

#[test]
fn nbf_as_a_string_is_refused() {
    let token = token_with(&KEYS.rsa, &with(claims(), "nbf", json!("0")));
    assert_eq!(refused(&all_keys(), &token).category(), "claims");
}

#[test]
fn wrong_issuer_is_refused() {
    let token = token_with(&KEYS.rsa, &with(claims(), "iss", json!("evil")));
    assert_eq!(refused(&all_keys(), &token), TokenError::UnknownIssuer);
    // An issuer that differs only in case or by a trailing slash is another issuer.
    for iss in ["ACME", "acme/", " acme"] {
        let token = token_with(&KEYS.rsa, &with(claims(), "iss", json!(iss)));
        assert_eq!(refused(&all_keys(), &token), TokenError::UnknownIssuer, "{iss}");
    }
}

#[test]
fn issuer_as_an_array_is_refused() {
    let token = token_with(&KEYS.rsa, &with(claims(), "iss", json!([ISS, "evil"])));
    assert_eq!(refused(&all_keys(), &token).category(), "claims");
}

#[test]
fn a_key_of_one_issuer_does_not_vouch_for_another() {
    let k = &*KEYS;
    // "other" trusts only the EC key; a token claiming iss "other" signed with acme's RSA key fails.
    let other = Issuer::new("other", "other", vec![k.ec.public.clone()]);
    let v = verifier(vec![acme(&[&k.rsa]), other]);
    let token = token_with(&k.rsa, &with(claims(), "iss", json!("other")));
    assert_eq!(refused(&v, &token).category(), "algorithm");
    let mut other_rsa = Issuer::new("other", "other", vec![k.ec.public.clone()]);
    other_rsa.algorithms = vec![Alg::RS256, Alg::ES256];
    let v = verifier(vec![acme(&[&k.rsa]), other_rsa]);
    assert_eq!(refused(&v, &token).category(), "key");
}

#[test]
fn wrong_audience_is_refused() {
    let k = &*KEYS;
    let mut issuer = acme(&[&k.rsa]);
    issuer.audiences = vec!["api".into()];
    let v = verifier(vec![issuer]);
    let wrong = token_with(&k.rsa, &with(claims(), "aud", json!("web")));
    assert_eq!(refused(&v, &wrong), TokenError::Audience);
    let wrong_list = token_with(&k.rsa, &with(claims(), "aud", json!(["web", "cli"])));
    assert_eq!(refused(&v, &wrong_list), TokenError::Audience);
    let missing = token_with(&k.rsa, &claims());
    assert_eq!(refused(&v, &missing), TokenError::Audience);
    let good = token_with(&k.rsa, &with(claims(), "aud", json!(["web", "api"])));
    assert!(v.verify(&good, NOW).is_ok());
    let good_one = token_with(&k.rsa, &with(claims(), "aud", json!("api")));
    assert!(v.verify(&good_one, NOW).is_ok());
}

#[test]
fn audience_is_ignored_when_not_configured() {
    let token = token_with(&KEYS.rsa, &with(claims(), "aud", json!("anything")));
    assert!(all_keys().verify(&token, NOW).is_ok());
    // But it must still be a string or an array of strings.
    let token = token_with(&KEYS.rsa, &with(claims(), "aud", json!(5)));
    assert_eq!(refused(&all_keys(), &token).category(), "claims");
}

#[test]
fn unknown_kid_is_refused() {
    let mut header = header_for(&KEYS.rsa);
    header["kid"] = "rsa-404".into();
    let token = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        &KEYS.rsa.encoding,
        Algorithm::RS256,
    );
    assert_eq!(refused(&all_keys(), &token), TokenError::UnknownKid);
}

#[test]
fn a_kid_used_with_another_alg_is_refused() {
    // The EC key's kid on an RS256 token signed by the RSA key.
    let mut header = header_for(&KEYS.rsa);
    header["kid"] = "ec-1".into();
    let token = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        &KEYS.rsa.encoding,
        Algorithm::RS256,
    );
    assert_eq!(refused(&all_keys(), &token).category(), "key");
}

#[test]
fn tampered_payload_is_refused() {
    let token = token_with(&KEYS.rsa, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(with(claims(), "scopes", json!(["root"])).to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(refused(&all_keys(), &tampered), TokenError::Signature);
}

#[test]
fn tampered_signature_is_refused() {
    for key in [&KEYS.rsa, &KEYS.ec, &KEYS.ed] {
        let token = token_with(key, &claims());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[10] ^= 0x01;
        let tampered = format!("{message}.{}", b64(&sig));
        assert_eq!(refused(&all_keys(), &tampered), TokenError::Signature, "{:?}", key.alg);
    }
}

#[test]
fn an_asn1_ecdsa_signature_is_refused() {
    // JWS ECDSA signatures are the fixed r || s; a DER-encoded one does not verify.
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let k = &*KEYS;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &k.ec_signing.pkcs8_der()).unwrap();
    let message = format!("{}.{}", b64(header_for(&k.ec).to_string()), b64(claims().to_string()));
    let der = pair.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
    let token = format!("{message}.{}", b64(der.as_ref()));
    assert_eq!(refused(&all_keys(), &token), TokenError::Signature);
}

#[test]
fn signature_from_another_token_is_refused() {
    let a = token_with(&KEYS.rsa, &claims());
    let b = token_with(&KEYS.rsa, &with(claims(), "sub", json!("bob")));
    let spliced = format!("{}.{}", b.rsplit_once('.').unwrap().0, a.rsplit_once('.').unwrap().1);
    assert_eq!(refused(&all_keys(), &spliced), TokenError::Signature);
}

#[test]
fn exp_as_a_string_is_refused() {
    let token = token_with(&KEYS.rsa, &with(claims(), "exp", json!((NOW + 600).to_string())));
    assert_eq!(refused(&all_keys(), &token).category(), "claims");
}

#[test]
fn missing_exp_is_refused() {
    let token = token_with(&KEYS.rsa, &without(claims(), "exp"));
    assert_eq!(refused(&all_keys(), &token).category(), "claims");
}

#[test]
fn missing_sub_is_refused() {
    let v = all_keys();
    assert_eq!(
        refused(&v, &token_with(&KEYS.rsa, &without(claims(), "sub"))).category(),
        "claims"
    );
    assert_eq!(
        refused(&v, &token_with(&KEYS.rsa, &with(claims(), "sub", json!("")))),
        TokenError::Claims("sub is empty")
    );
}

#[test]
fn duplicate_claims_are_refused() {
    let payload = format!(
        r#"{{"sub":"alice","iss":"{ISS}","exp":{},"exp":{},"token_use":"access"}}"#,
        NOW - 1000,
        NOW + 600
    );
    let token = sign_raw(
        &header_for(&KEYS.rsa).to_string(),
        &payload,
        &KEYS.rsa.encoding,
        Algorithm::RS256,
    );
    assert_eq!(
        refused(&all_keys(), &token),
        TokenError::Claims("a claim appears twice")
    );
    let payload = format!(r#"{{"sub":"alice","iss":"{ISS}","iss":"evil","exp":{}}}"#, NOW + 600);
    let token = sign_raw(
        &header_for(&KEYS.rsa).to_string(),
        &payload,
        &KEYS.rsa.encoding,
        Algorithm::RS256,
    );
    // Refused by the unverified read that chooses the issuer (a duplicate `iss` is a malformed
    // `iss`), before any key is chosen: neither of the two can pick the keys.
    assert_eq!(
        refused(&all_keys(), &token),
        TokenError::Claims("iss is required and must be a string")
    );
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let v = all_keys();
    // Not even a JWT: the size limit answers first.
    let junk = "x".repeat(8 * 1024 + 1);
    assert_eq!(v.verify(&junk, NOW), Err(TokenError::TooLarge { limit: 8192 }));
    // A validly signed token that is too large.
    let big = token_with(&KEYS.rsa, &with(claims(), "pad", json!("p".repeat(9000))));
    assert_eq!(refused(&v, &big), TokenError::TooLarge { limit: 8192 });
}

#[test]
fn malformed_shapes_are_refused() {
    let v = all_keys();
    let token = token_with(&KEYS.rsa, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        String::new(),
        "a".into(),
        "a.b".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}.extra"),
        format!("{}..{}", parts[0], parts[2]),
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}={}", parts[0], &token[parts[0].len()..]),
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        format!("{} .{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", b64("[\"RS256\"]x"), parts[1], parts[2]),
        format!("{}.{}.{}", b64("{\"alg\":7}"), parts[1], parts[2]),
    ] {
        assert_eq!(refused(&v, &bad).category(), "malformed", "{bad}");
    }
}

#[test]
fn critical_header_extensions_are_refused() {
    let mut header = header_for(&KEYS.rsa);
    header["crit"] = json!(["b64"]);
    header["b64"] = json!(false);
    let token = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        &KEYS.rsa.encoding,
        Algorithm::RS256,
    );
    assert_eq!(refused(&all_keys(), &token).category(), "malformed");
}

#[test]
fn an_embedded_jwk_is_never_trusted() {
    // The attacker signs with their own key and puts its public half in the header.
    let attacker = SigningKey::generate("ec-1").unwrap();
    let mut header = json!({"alg": "ES256", "kid": "ec-1"});
    header["jwk"] = attacker.public().to_jwk();
    let token = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        &EncodingKey::from_ec_der(&attacker.pkcs8_der()),
        Algorithm::ES256,
    );
    assert_eq!(refused(&all_keys(), &token), TokenError::Signature);
}

#[test]
fn es256_token_is_refused_when_the_issuer_allows_only_rs256() {
    let k = &*KEYS;
    let mut issuer = acme(&[&k.rsa, &k.ec]);
    issuer.algorithms = vec![Alg::RS256];
    let v = verifier(vec![issuer]);
    let token = token_with(&k.ec, &claims());
    assert_eq!(
        refused(&v, &token),
        TokenError::Algorithm("alg is not allowed for this issuer")
    );
    assert!(v.verify(&token_with(&k.rsa, &claims()), NOW).is_ok());
}

#[test]
fn an_unknown_or_miscased_alg_is_refused() {
    let k = &*KEYS;
    for alg in ["rs256", "RS1", "PS512", "ES512", "Ed25519", ""] {
        let header = json!({"alg": alg, "kid": "rsa-1"}).to_string();
        let token = sign_raw(&header, &claims().to_string(), &k.rsa.encoding, Algorithm::RS256);
        assert_eq!(refused(&all_keys(), &token).category(), "algorithm", "{alg}");
    }
}

#[test]
fn refresh_token_is_not_an_access_token() {
    let v = all_keys();
    let refresh = token_with(&KEYS.rsa, &with(claims(), "token_use", json!("refresh")));
    assert_eq!(refused(&v, &refresh), TokenError::WrongUse("an access"));
    assert_eq!(v.verify_refresh(&refresh, NOW).unwrap().token_use, "refresh");
    let access = token_with(&KEYS.rsa, &claims());
    assert_eq!(v.verify_refresh(&access, NOW), Err(TokenError::WrongUse("a refresh")));
    // A cached access token is not a refresh token either.
    assert!(v.verify(&access, NOW).is_ok());
    assert_eq!(v.verify_refresh(&access, NOW), Err(TokenError::WrongUse("a refresh")));
}

#[test]
fn a_token_without_token_use_or_type_is_an_external_access_token() {
    let token = token_with(&KEYS.rsa, &without(without(claims(), "token_use"), "type"));
    let verified = all_keys().verify(&token, NOW).unwrap();
    assert_eq!(verified.token_use, "access");
    assert_eq!(verified.account_type, "user");
}

#[test]
fn skew_is_bounded() {
    let k = &*KEYS;
    let v = Verifier::new(
        vec![acme(&[&k.rsa])],
        VerifierSettings {
            clock_skew_secs: 86_400,
            ..VerifierSettings::default()
        },
    );
    let token = token_with(&k.rsa, &with(claims(), "exp", json!(NOW - 301)));
    assert_eq!(refused(&v, &token), TokenError::Expired);
    let token = token_with(&k.rsa, &with(claims(), "exp", json!(NOW - 299)));
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn extreme_numeric_dates_do_not_overflow() {
    let v = all_keys();
    assert!(
        v.verify(&token_with(&KEYS.rsa, &with(claims(), "exp", json!(i64::MAX))), NOW)
            .is_ok()
    );
    assert!(
        v.verify(&token_with(&KEYS.rsa, &with(claims(), "exp", json!(u64::MAX))), NOW)
            .is_ok()
    );
    for exp in [json!(i64::MIN), json!(-1), json!(-1e300), json!(0)] {
        assert_eq!(
            refused(&v, &token_with(&KEYS.rsa, &with(claims(), "exp", exp))),
            TokenError::Expired
        );
    }
    assert!(
        v.verify(&token_with(&KEYS.rsa, &with(claims(), "nbf", json!(i64::MIN))), NOW)
            .is_ok()
    );
    assert_eq!(
        refused(&v, &token_with(&KEYS.rsa, &with(claims(), "nbf", json!(i64::MAX)))),
        TokenError::NotYetValid
    );
}

// ---- the cache ----

#[test]
fn the_cache_honours_expiry() {
    let k = &*KEYS;
    let v = all_keys();
    let exp = NOW + 100;
    let token = token_with(&k.rsa, &with(claims(), "exp", json!(exp)));
    assert!(v.verify(&token, NOW).is_ok());
    assert_eq!(v.cached_len(), 1);
    assert!(v.verify(&token, NOW + 1).is_ok(), "a cache hit");
    // Past exp and the skew: refused, cached or not.
    assert_eq!(v.verify(&token, exp + 60), Err(TokenError::Expired));
    assert_eq!(v.verify(&token, exp + 1000), Err(TokenError::Expired));

    // Without skew the first second past exp is refused.
    let strict = Verifier::new(
        vec![acme(&[&k.rsa])],
        VerifierSettings {
            clock_skew_secs: 0,
            ..VerifierSettings::default()
        },
    );
    assert!(strict.verify(&token, exp - 1).is_ok());
    assert_eq!(strict.cached_len(), 1);
    assert_eq!(strict.verify(&token, exp), Err(TokenError::Expired));
}

#[test]
fn a_refused_token_is_never_cached() {
    let k = &*KEYS;
    let v = all_keys();
    let good = token_with(&k.rsa, &claims());
    let (message, signature) = good.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 0x80;
    let bad = format!("{message}.{}", b64(&sig));
    for _ in 0..3 {
        assert_eq!(v.verify(&bad, NOW), Err(TokenError::Signature));
    }
    let expired = token_with(&k.rsa, &with(claims(), "exp", json!(NOW - 1000)));
    assert_eq!(v.verify(&expired, NOW), Err(TokenError::Expired));
    // Within the skew but past exp: accepted, but not cached (a hit needs now < exp).
    let in_skew = token_with(&k.rsa, &with(claims(), "exp", json!(NOW - 1)));
    assert!(v.verify(&in_skew, NOW).is_ok());
    assert_eq!(v.cached_len(), 0);
    assert!(v.verify(&good, NOW).is_ok());
    assert_eq!(v.cached_len(), 1);
}

#[test]
fn a_cache_hit_does_not_serve_a_token_before_its_nbf() {
    let k = &*KEYS;
    let v = all_keys();
    let token = token_with(&k.rsa, &with(claims(), "nbf", json!(NOW)));
    assert!(v.verify(&token, NOW).is_ok());
    assert_eq!(v.verify(&token, NOW - 61), Err(TokenError::NotYetValid));
}

#[test]
fn the_cache_can_be_turned_off() {
    let k = &*KEYS;
    let v = Verifier::new(
        vec![acme(&[&k.rsa])],
        VerifierSettings {
            cache_capacity: 0,
            ..VerifierSettings::default()
        },
    );
    let token = token_with(&k.rsa, &claims());
    assert!(v.verify(&token, NOW).is_ok());
    assert!(v.verify(&token, NOW).is_ok());
    assert_eq!(v.cached_len(), 0);
}

#[test]
fn a_shared_cache_keeps_serving_while_the_key_is_trusted() {
    let k = &*KEYS;
    let first = verifier(vec![acme(&[&k.rsa, &k.ec])]);
    let token = token_with(&k.rsa, &claims());
    assert!(first.verify(&token, NOW).is_ok());
    assert_eq!(first.cached_len(), 1);
    // A rebuild with the same issuers (a rule or route change) shares the cache.
    let same = Verifier::with_cache(
        vec![acme(&[&k.rsa, &k.ec])],
        VerifierSettings::default(),
        first.cache().clone(),
    );
    assert_eq!(same.cached_len(), 1);
    assert_eq!(same.verify(&token, NOW).unwrap().account_id, "alice");
}

#[test]
fn a_cached_token_stops_verifying_with_its_key() {
    let k = &*KEYS;
    let before = verifier(vec![acme(&[&k.rsa, &k.ec])]);
    let token = token_with(&k.rsa, &claims());
    assert!(before.verify(&token, NOW).is_ok());
    assert_eq!(before.cached_len(), 1);
    // The key set loses the RSA key: the cached verification does not count.
    let mut ec_only = acme(&[&k.ec]);
    ec_only.algorithms = vec![Alg::RS256, Alg::ES256];
    let after = Verifier::with_cache(vec![ec_only], VerifierSettings::default(), before.cache().clone());
    assert_eq!(after.verify(&token, NOW), Err(TokenError::UnknownKid));
    // The key comes back: verified again.
    let back = Verifier::with_cache(
        vec![acme(&[&k.rsa, &k.ec])],
        VerifierSettings::default(),
        before.cache().clone(),
    );
    assert!(back.verify(&token, NOW).is_ok());
}

#[test]
fn a_cached_token_stops_verifying_when_its_kid_names_another_key() {
    let k = &*KEYS;
    let before = verifier(vec![acme(&[&k.ec])]);
    let token = token_with(&k.ec, &claims());
    assert!(before.verify(&token, NOW).is_ok());
    // The issuer reuses the kid for new material.
    let other = SigningKey::generate(k.ec.kid).unwrap();
    let after = Verifier::with_cache(
        vec![Issuer::new(ISS, "acme", vec![other.public()])],
        VerifierSettings::default(),
        before.cache().clone(),
    );
    assert_eq!(after.verify(&token, NOW), Err(TokenError::Signature));
}

#[test]
fn a_cached_token_is_checked_again_when_its_issuer_changes() {
    let k = &*KEYS;
    let before = verifier(vec![acme(&[&k.rsa])]);
    let token = token_with(&k.rsa, &claims());
    assert_eq!(before.verify(&token, NOW).unwrap().tenant, "acme");
    let cache = before.cache().clone();
    // An audience is now required (the token has none).
    let mut strict = acme(&[&k.rsa]);
    strict.audiences = vec!["api".into()];
    let v = Verifier::with_cache(vec![strict], VerifierSettings::default(), cache.clone());
    assert_eq!(v.verify(&token, NOW), Err(TokenError::Audience));
    // Another tenant vouches for the issuer now.
    let v = Verifier::with_cache(
        vec![Issuer::new(ISS, "other", vec![k.rsa.public.clone()])],
        VerifierSettings::default(),
        cache.clone(),
    );
    assert_eq!(v.verify(&token, NOW).unwrap().tenant, "other");
    // Another scopes claim.
    let mut scp = acme(&[&k.rsa]);
    scp.scopes_claim = Some("scp".into());
    let v = Verifier::with_cache(vec![scp], VerifierSettings::default(), cache);
    assert!(v.verify(&token, NOW).unwrap().scopes.is_empty());
}

#[test]
fn a_token_without_kid_and_no_key_for_its_alg_is_an_unknown_kid() {
    let k = &*KEYS;
    let mut header = header_for(&k.rsa);
    header.as_object_mut().unwrap().remove("kid");
    let token = sign_raw(&header.to_string(), &claims().to_string(), &k.rsa.encoding, k.rsa.alg);
    let mut ec_only = acme(&[&k.ec]);
    ec_only.algorithms = vec![Alg::RS256, Alg::ES256];
    assert_eq!(refused(&verifier(vec![ec_only]), &token), TokenError::UnknownKid);
}

#[test]
fn the_unverified_issuer_of_a_token() {
    let token = token_with(&KEYS.rsa, &claims());
    assert_eq!(unverified_issuer(&token).as_deref(), Some(ISS));
    assert_eq!(unverified_issuer("a.b.c"), None);
    assert_eq!(unverified_issuer(""), None);
    let no_iss = token_with(&KEYS.rsa, &without(claims(), "iss"));
    assert_eq!(unverified_issuer(&no_iss), None);
}

// ---- issuers ----

#[test]
fn scopes_from_a_scope_string() {
    let k = &*KEYS;
    let mut issuer = acme(&[&k.rsa]);
    issuer.scopes_claim = Some("scope".into());
    let token = token_with(&k.rsa, &with(claims(), "scope", json!("read  write\tadmin")));
    let verified = verifier(vec![issuer]).verify(&token, NOW).unwrap();
    assert_eq!(verified.scopes, ["read", "write", "admin"]);
}

#[test]
fn scopes_from_an_scp_array() {
    let k = &*KEYS;
    let mut issuer = acme(&[&k.rsa]);
    issuer.scopes_claim = Some("scp".into());
    let token = token_with(&k.rsa, &with(claims(), "scp", json!(["read", "write"])));
    let verified = verifier(vec![issuer]).verify(&token, NOW).unwrap();
    assert_eq!(verified.scopes, ["read", "write"]);
}

#[test]
fn scopes_from_a_scopes_array_by_default() {
    let verified = all_keys().verify(&token_with(&KEYS.rsa, &claims()), NOW).unwrap();
    assert_eq!(verified.scopes, ["admin", "ops"]);
    // A space-separated `scopes` string works too; a missing claim means no scopes.
    let token = token_with(&KEYS.rsa, &with(claims(), "scopes", json!("a b")));
    assert_eq!(all_keys().verify(&token, NOW).unwrap().scopes, ["a", "b"]);
    let token = token_with(&KEYS.rsa, &without(claims(), "scopes"));
    assert!(all_keys().verify(&token, NOW).unwrap().scopes.is_empty());
}

#[test]
fn scopes_of_the_wrong_type_are_refused() {
    for scopes in [json!(7), json!([1, 2]), json!({"a": 1}), json!(["ok", null])] {
        let token = token_with(&KEYS.rsa, &with(claims(), "scopes", scopes.clone()));
        assert_eq!(refused(&all_keys(), &token).category(), "claims", "{scopes}");
    }
}

#[test]
fn two_tenants_trusting_one_iss_get_their_own_tokens() {
    let k = &*KEYS;
    let a = Issuer::new("https://idp.example", "tenant-a", vec![k.rsa.public.clone()]);
    let b = Issuer::new("https://idp.example", "tenant-b", vec![k.ec.public.clone()]);
    let v = verifier(vec![a, b]);
    let payload = with(claims(), "iss", json!("https://idp.example"));
    assert_eq!(v.verify(&token_with(&k.rsa, &payload), NOW).unwrap().tenant, "tenant-a");
    assert_eq!(v.verify(&token_with(&k.ec, &payload), NOW).unwrap().tenant, "tenant-b");
}

#[test]
fn a_key_whose_alg_was_changed_is_not_used() {
    let k = &*KEYS;
    let mut key = k.ec.public.clone();
    key.alg = Alg::RS256;
    let token = token_with(&k.ec, &claims());
    // The issuer's algorithms are those of its keys: ES256 is not one of them any more.
    let v = verifier(vec![Issuer::new(ISS, "acme", vec![key.clone()])]);
    assert_eq!(
        refused(&v, &token),
        TokenError::Algorithm("alg is not allowed for this issuer")
    );
    // Even where the issuer allows ES256: EC material marked RS256 is inconsistent, so the
    // verifier drops the key when it is built, and the token's kid names no key at all.
    let mut issuer = Issuer::new(ISS, "acme", vec![key]);
    issuer.algorithms = vec![Alg::RS256, Alg::ES256];
    assert_eq!(refused(&verifier(vec![issuer]), &token), TokenError::UnknownKid);
}

// ---- keys ----

#[test]
fn jwks_with_rsa_ec_and_okp_keys_skips_oct() {
    let k = &*KEYS;
    let mut set = vec![
        k.rsa.public.to_jwk(),
        json!({"kty": "oct", "kid": "hmac", "k": b64("secret"), "alg": "HS256"}),
        k.ec.public.to_jwk(),
        without(k.ed.public.to_jwk(), "alg"),
        json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64([9u8; 32])}),
        with(k.rsa.public.to_jwk(), "use", json!("enc")),
        json!("not an object"),
    ];
    set.push(with(k.ec.public.to_jwk(), "d", json!(b64([1u8; 32]))));
    let json = serde_json::to_vec(&json!({"keys": set})).unwrap();
    let keys = parse_jwks(&json).unwrap();
    let found: Vec<(&str, Alg)> = keys.iter().map(|k| (k.kid.as_str(), k.alg)).collect();
    assert_eq!(
        found,
        [("rsa-1", Alg::RS256), ("ec-1", Alg::ES256), ("ed-1", Alg::EdDSA)]
    );
}

#[test]
fn jwks_without_usable_keys_is_an_error() {
    let only_oct = json!({"keys": [{"kty": "oct", "k": b64("secret")}]}).to_string();
    assert_eq!(parse_jwks(only_oct.as_bytes()), Err(KeyError::NoUsableKeys));
    assert_eq!(parse_jwks(br#"{"keys": []}"#), Err(KeyError::NoUsableKeys));
    assert!(matches!(parse_jwks(b"{}"), Err(KeyError::Malformed(_))));
    assert!(matches!(parse_jwks(b"not json"), Err(KeyError::Malformed(_))));
}

#[test]
fn to_jwk_round_trips() {
    let k = &*KEYS;
    for key in [&k.rsa.public, &k.ec.public, &k.ed.public] {
        let jwk = key.to_jwk();
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert_eq!(jwk["alg"], key.alg.name());
        assert!(jwk.get("d").is_none());
        assert_eq!(&PublicKey::from_jwk(&jwk).unwrap(), key);
    }
    assert_eq!(k.ec.public.to_jwk()["crv"], "P-256");
    assert_eq!(k.ed.public.to_jwk()["crv"], "Ed25519");
}

#[test]
fn from_jwk_refuses_bad_keys() {
    let k = &*KEYS;
    let rsa = k.rsa.public.to_jwk();
    let ec = k.ec.public.to_jwk();
    let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
    let cases: Vec<(Value, KeyError)> = vec![
        (json!({"kty": "oct", "k": "c2VjcmV0"}), KeyError::Symmetric),
        (with(rsa.clone(), "alg", json!("HS256")), KeyError::UnsupportedAlgorithm),
        (with(rsa.clone(), "alg", json!("none")), KeyError::UnsupportedAlgorithm),
        (with(rsa.clone(), "alg", json!("ES256")), KeyError::UnsupportedAlgorithm),
        (with(ec.clone(), "alg", json!("ES384")), KeyError::UnsupportedAlgorithm),
        (with(ec.clone(), "crv", json!("secp256k1")), KeyError::UnsupportedCurve),
        (with(rsa.clone(), "d", json!("AQAB")), KeyError::PrivateKey),
        (
            with(rsa.clone(), "key_ops", json!(["sign"])),
            KeyError::NotForSignatures,
        ),
        (
            with(rsa.clone(), "n", json!(b64(&n[..128]))),
            KeyError::Invalid("RSA modulus must have 2048 to 8192 bits"),
        ),
        (json!({"kty": "DSA"}), KeyError::UnsupportedKeyType),
    ];
    for (jwk, want) in cases {
        assert_eq!(PublicKey::from_jwk(&jwk), Err(want), "{jwk}");
    }
    // A point not on the curve.
    let off_curve = with(ec.clone(), "y", json!(b64([7u8; 32])));
    assert!(matches!(PublicKey::from_jwk(&off_curve), Err(KeyError::Invalid(_))));
    assert!(matches!(
        PublicKey::from_jwk(&with(rsa.clone(), "e", json!(b64([2u8])))),
        Err(KeyError::Invalid(_))
    ));
    assert!(matches!(
        PublicKey::from_jwk(&with(rsa, "n", json!("!!"))),
        Err(KeyError::Malformed(_))
    ));
    // `key_ops` with `verify` is fine.
    assert!(PublicKey::from_jwk(&with(ec, "key_ops", json!(["verify"]))).is_ok());
}

#[test]
fn signing_keys_round_trip_through_pkcs8() {
    let key = &KEYS.ec_signing;
    let again = SigningKey::from_pkcs8_der("ec-1", &key.pkcs8_der()).unwrap();
    assert_eq!(again.public(), key.public());
    assert_eq!(
        SigningKey::from_pkcs8_der("", &key.pkcs8_der()).err(),
        Some(KeyError::Invalid("a signing key needs a kid"))
    );
    assert_eq!(
        SigningKey::from_pkcs8_der("x", b"not a key").err(),
        Some(KeyError::Invalid("not a PKCS#8 P-256 private key"))
    );
    let debug = format!("{key:?}");
    assert!(debug.contains("ec-1") && !debug.contains(&b64(key.pkcs8_der())));
}

#[test]
fn alg_names() {
    for alg in Alg::ALL {
        assert_eq!(Alg::from_name(alg.name()), Some(alg));
        assert_eq!(alg.name().parse::<Alg>(), Ok(alg));
    }
    for name in ["none", "HS256", "HS384", "HS512", "rs256", "PS384"] {
        assert_eq!(Alg::from_name(name), None);
    }
}

// ---- extraction ----

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[test]
fn extract_bearer_and_cookie() {
    assert_eq!(extract(&headers(&[])), Ok(None));
    assert_eq!(
        extract(&headers(&[("authorization", "Bearer abc.def.ghi")])),
        Ok(Some("abc.def.ghi".into()))
    );
    assert_eq!(
        extract(&headers(&[("authorization", "bearer  abc ")])),
        Ok(Some("abc".into()))
    );
    assert_eq!(
        extract(&headers(&[("cookie", "a=1; micro-token=tok; b=2")])),
        Ok(Some("tok".into()))
    );
    assert_eq!(
        extract(&headers(&[("cookie", "micro-token=\"tok\"")])),
        Ok(Some("tok".into()))
    );
    // HTTP/2 may split cookies over several headers; the same value twice is fine.
    assert_eq!(
        extract(&headers(&[
            ("cookie", "a=1"),
            ("cookie", "micro-token=tok"),
            ("cookie", "micro-token=tok")
        ])),
        Ok(Some("tok".into()))
    );
    // An empty cookie is how clients clear it: no token.
    assert_eq!(extract(&headers(&[("cookie", "micro-token=")])), Ok(None));
    // Other cookies whose name merely contains micro-token do not count.
    assert_eq!(extract(&headers(&[("cookie", "xmicro-token=tok")])), Ok(None));
}

#[test]
fn duplicate_authorization_headers_are_refused() {
    let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]);
    assert_eq!(extract(&h).unwrap_err().category(), "credentials");
}

#[test]
fn header_and_cookie_disagreeing_are_refused() {
    let h = headers(&[
        ("authorization", "Bearer secret-one"),
        ("cookie", "micro-token=secret-two"),
    ]);
    let err = extract(&h).unwrap_err();
    assert_eq!(err.category(), "credentials");
    assert!(!err.to_string().contains("secret"));
    let same = headers(&[("authorization", "Bearer same"), ("cookie", "micro-token=same")]);
    assert_eq!(extract(&same), Ok(Some("same".into())));
}

#[test]
fn two_different_token_cookies_are_refused() {
    let h = headers(&[("cookie", "micro-token=a; micro-token=b")]);
    assert_eq!(extract(&h).unwrap_err().category(), "credentials");
}

#[test]
fn bearer_with_empty_token_is_refused() {
    for value in ["Bearer", "Bearer ", "Bearer    ", "bearer\t"] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(
            extract(&h),
            Err(TokenError::Credentials("the bearer token is empty")),
            "{value:?}"
        );
    }
}

#[test]
fn non_bearer_scheme_is_refused() {
    for value in [
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Token abc",
        "Bearerabc",
        "abc.def.ghi",
        "Digest x=y",
    ] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(
            extract(&h),
            Err(TokenError::Credentials("the Authorization scheme is not Bearer")),
            "{value}"
        );
    }
    let h = headers(&[("authorization", "Bearer a b")]);
    assert_eq!(extract(&h).unwrap_err().category(), "credentials");
}

#[test]
fn categories_are_bounded() {
    let known = [
        "too_large",
        "malformed",
        "algorithm",
        "issuer",
        "key",
        "signature",
        "expired",
        "not_yet_valid",
        "audience",
        "claims",
        "token_use",
        "credentials",
        "signing",
    ];
    let errors = [
        TokenError::TooLarge { limit: 1 },
        TokenError::Malformed(""),
        TokenError::Algorithm(""),
        TokenError::UnknownIssuer,
        TokenError::UnknownKey(""),
        TokenError::UnknownKid,
        TokenError::Signature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::IssuerMismatch,
        TokenError::Audience,
        TokenError::Claims(""),
        TokenError::WrongUse(""),
        TokenError::Credentials(""),
        TokenError::Signing,
    ];
    for err in errors {
        assert!(known.contains(&err.category()), "{err:?}");
    }
}

/// Tenants sharing an issuer: each its own candidate. The called tenant's policy decides first and
/// the cache remembers which tenant was preferred, so one token can be acme's own account and
/// beta's foreign one without either answer leaking into the other.
#[test]
fn a_shared_issuer_is_decided_by_the_called_tenants_policy_first() {
    let k = &*KEYS;
    let policy = |tenant: &str, audience: &str| {
        let mut i = Issuer::new(ISS, tenant, vec![k.rsa.public.clone()]);
        i.audiences = vec![audience.into()];
        i
    };
    let v = verifier(vec![
        policy("acme", "shared-app"),
        policy("beta", "shared-app"),
        policy("gamma", "gamma-app"),
    ]);
    let both = token_with(&k.rsa, &with(claims(), "aud", json!("shared-app")));
    for _ in 0..2 {
        // The second round is answered from the cache.
        for (called, owner) in [
            (Some("beta"), "beta"),
            (Some("acme"), "acme"),
            (None, "acme"),
            (Some("gamma"), "acme"),
        ] {
            let got = v.verify_for(&both, NOW, TokenUse::Access, called).unwrap();
            assert_eq!(got.tenant, owner, "called {called:?}");
        }
    }
    // Gamma's audience: gamma's own account wherever it is presented.
    let gammas = token_with(&k.rsa, &with(claims(), "aud", json!("gamma-app")));
    assert_eq!(
        v.verify_for(&gammas, NOW, TokenUse::Access, Some("acme"))
            .unwrap()
            .tenant,
        "gamma"
    );
    // No policy accepts it: the called tenant's refusal is the answer.
    let nobodys = token_with(&k.rsa, &with(claims(), "aud", json!("other")));
    assert_eq!(
        v.verify_for(&nobodys, NOW, TokenUse::Access, Some("beta")).unwrap_err(),
        TokenError::Audience
    );
}
