//! The token verifier and extractor on arbitrary input. The first byte picks what the rest is:
//!
//! 0. a token (UTF-8): verification never panics, and nothing but the one validly signed token
//!    verifies;
//! 1. edits to a validly signed token (`index lo, index hi, byte` triples): any change refuses it;
//! 2. `Authorization` / `Cookie` header values (split on `\n`) for `extract`;
//! 3. a JWK Set, and a single JWK whose `to_jwk` must read back to an equal key.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use microplane_gateway::auth::token::{
    Claims, Issuer, PublicKey, SigningKey, Verifier, VerifierSettings, extract, parse_jwks,
};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://fuzz.example";

struct Fixture {
    verifier: Verifier,
    valid: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SigningKey::generate("fuzz-1").expect("a P-256 key");
    let claims = Claims {
        sub: "fuzzer".into(),
        iss: ISS.into(),
        exp: NOW + 3600,
        iat: NOW,
        account_type: "user".into(),
        scopes: vec!["admin".into()],
        token_use: "access".into(),
        ..Claims::default()
    };
    let valid = key.sign(&claims).expect("signing works");
    let verifier = Verifier::new(
        vec![Issuer::new(ISS, "fuzz", vec![key.public()])],
        VerifierSettings::default(),
    );
    assert!(verifier.verify(&valid, NOW).is_ok());
    Fixture { verifier, valid }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let access = fixture.verifier.verify(text, NOW);
            let _ = fixture.verifier.verify_refresh(text, NOW);
            if text != fixture.valid {
                assert!(access.is_err(), "an input that is not the signed token verified");
            }
        }
        1 => {
            let mut bytes = fixture.valid.clone().into_bytes();
            for edit in rest.chunks_exact(3) {
                let index = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
                match bytes.get_mut(index) {
                    Some(b) => *b = edit[2],
                    None => bytes.push(edit[2]),
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                let result = fixture.verifier.verify(&text, NOW);
                if text != fixture.valid {
                    assert!(result.is_err(), "a modified token verified");
                }
            }
        }
        2 => {
            let mut headers = http::HeaderMap::new();
            for (i, chunk) in rest.split(|&b| b == b'\n').take(8).enumerate() {
                if let Ok(value) = http::HeaderValue::from_bytes(chunk) {
                    let name = if i % 2 == 0 {
                        http::header::AUTHORIZATION
                    } else {
                        http::header::COOKIE
                    };
                    headers.append(name, value);
                }
            }
            if let Ok(Some(token)) = extract(&headers) {
                assert!(!token.is_empty(), "extract returned an empty token");
                let _ = fixture.verifier.verify(&token, NOW);
            }
        }
        _ => {
            let _ = parse_jwks(rest);
            if let Ok(jwk) = serde_json::from_slice::<serde_json::Value>(rest)
                && let Ok(key) = PublicKey::from_jwk(&jwk)
            {
                let again = PublicKey::from_jwk(&key.to_jwk()).expect("to_jwk reads back");
                assert_eq!(again, key, "to_jwk round-trips");
            }
        }
    }
});
