//! Token verification: uncached RS256 (target ≤ 30 µs), ES256 and EdDSA, and a cache hit (target
//! ≤ 2 µs).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use microplane_gateway::auth::token::{Claims, Issuer, PublicKey, SigningKey, Verifier, VerifierSettings, extract};
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims() -> serde_json::Value {
    json!({
        "sub": "alice", "iss": "acme", "exp": NOW + 3600, "iat": NOW,
        "type": "user", "scopes": ["admin", "ops"], "token_use": "access",
        "name": "Alice", "metadata": {"team": "a"},
    })
}

fn message(alg: &str, kid: &str) -> String {
    let header = json!({"typ": "JWT", "alg": alg, "kid": kid});
    format!("{}.{}", b64(header.to_string()), b64(claims().to_string()))
}

struct Setup {
    keys: Vec<PublicKey>,
    rs256: String,
    es256: String,
    eddsa: String,
}

fn setup() -> Setup {
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_public = PublicKey::from_jwk(&json!({
        "kty": "RSA", "kid": "rsa-1", "alg": "RS256",
        "n": b64(rsa.public_key().modulus().big_endian_without_leading_zero()),
        "e": b64(rsa.public_key().exponent().big_endian_without_leading_zero()),
    }))
    .unwrap();
    let msg = message("RS256", "rsa-1");
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        msg.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let rs256 = format!("{msg}.{}", b64(&sig));

    let ec = SigningKey::generate("ec-1").unwrap();
    let mut ec_claims: Claims = serde_json::from_value(claims()).unwrap();
    ec_claims.iss = "acme".into();
    let es256 = ec.sign(&ec_claims).unwrap();

    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let ed_public = PublicKey::from_jwk(&json!({
        "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(ed.public_key().as_ref()),
    }))
    .unwrap();
    let msg = message("EdDSA", "ed-1");
    let eddsa = format!("{msg}.{}", b64(ed.sign(msg.as_bytes())));

    Setup {
        keys: vec![rsa_public, ec.public(), ed_public],
        rs256,
        es256,
        eddsa,
    }
}

fn verifier(keys: &[PublicKey], cache_capacity: usize) -> Verifier {
    Verifier::new(
        vec![Issuer::new("acme", "acme", keys.to_vec())],
        VerifierSettings {
            cache_capacity,
            ..VerifierSettings::default()
        },
    )
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let uncached = verifier(&s.keys, 0);
    for (name, token) in [("RS256", &s.rs256), ("ES256", &s.es256), ("EdDSA", &s.eddsa)] {
        uncached.verify(token, NOW).unwrap();
        c.bench_function(&format!("verify/uncached/{name}"), |b| {
            b.iter(|| uncached.verify(black_box(token), NOW).unwrap())
        });
    }

    let cached = verifier(&s.keys, 10_000);
    cached.verify(&s.rs256, NOW).unwrap();
    c.bench_function("verify/cached/RS256", |b| {
        b.iter(|| cached.verify(black_box(&s.rs256), NOW).unwrap())
    });

    // Baselines: the RSA signature check alone, with a key parsed once (aws-lc `ParsedPublicKey`)
    // and with the key rebuilt from (n, e) on every call (what jsonwebtoken does).
    let (message, sig) = s.rs256.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let jwk = s.keys[0].to_jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let components = signature::RsaPublicKeyComponents { n: &n, e: &e };
    let parsed = components
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .unwrap();
    c.bench_function("baseline/aws-lc-parsed/RS256", |b| {
        b.iter(|| parsed.verify_sig(black_box(message.as_bytes()), &sig).unwrap())
    });
    c.bench_function("baseline/aws-lc-components/RS256", |b| {
        b.iter(|| {
            components
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    black_box(message.as_bytes()),
                    &sig,
                )
                .unwrap()
        })
    });

    // jsonwebtoken's own decode (key rebuilt per call, header and claims parsed twice).
    let decoding = jsonwebtoken::DecodingKey::from_rsa_raw_components(&n, &e);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["acme"]);
    validation.validate_exp = false;
    c.bench_function("baseline/jsonwebtoken-decode/RS256", |b| {
        b.iter(|| jsonwebtoken::decode::<serde_json::Value>(black_box(&s.rs256), &decoding, &validation).unwrap())
    });

    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", s.rs256).parse().unwrap(),
    );
    c.bench_function("extract/bearer", |b| b.iter(|| extract(black_box(&headers)).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
