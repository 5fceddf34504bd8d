//! The claims the platform signs, the identity a verified token yields, and the strict reading of
//! a token's payload.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// What a token is for: the `token_use` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenUse {
    /// `"access"`: presented to call services.
    Access,
    /// `"refresh"`: only exchanged at the token endpoint for a new access token.
    Refresh,
}

impl TokenUse {
    /// The claim value: `"access"` or `"refresh"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Refresh => "refresh",
        }
    }
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "api"`.
    One(String),
    /// `"aud": ["api", "web"]`.
    Many(Vec<String>),
}

/// The claims of a platform-issued token: Micro's `{type, scopes, metadata, name, sub, iss, exp}`
/// (Micro v3's account claims) plus `iat`, optional `nbf`/`aud`/`jti`, and `token_use`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id.
    pub sub: String,
    /// The issuer; for platform tokens the tenant's issuer string.
    pub iss: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The account type (`user`, `service`, …).
    #[serde(rename = "type")]
    pub account_type: String,
    /// The account's scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `"access"` or `"refresh"` ([`TokenUse::as_str`]).
    pub token_use: String,
    /// The account's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The account's metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// A unique token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// The identity of a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// `sub`.
    pub account_id: String,
    /// `type`; `"user"` when the token has none (external issuers), as Micro's default.
    pub account_type: String,
    /// From the issuer's scopes claim.
    pub scopes: Vec<String>,
    /// The tenant whose issuer verified the token.
    pub tenant: String,
    /// `iss`.
    pub issuer: String,
    /// `exp`.
    pub expires_at: i64,
    /// `token_use`; `"access"` when the token has none (external issuers).
    pub token_use: String,
    /// `aud`, as given (empty without one). A platform refresh token names the account secret it
    /// was issued for here ([`super::REFRESH_AUDIENCE`]).
    pub audiences: Vec<String>,
}

/// The payload fields verification reads, taken strictly: `iss`, `sub` and `exp` required, each
/// recognised claim at most once and of its type.
#[derive(Debug)]
pub(super) struct Payload {
    pub iss: String,
    pub sub: String,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub aud: Option<Vec<String>>,
    pub account_type: Option<String>,
    pub token_use: Option<String>,
    pub scopes: Vec<String>,
}

/// Reads a [`Payload`] whose scopes come from the claim `scopes_claim`. On failure, `problem`
/// holds the reason.
pub(super) struct PayloadSeed<'a> {
    pub scopes_claim: &'a str,
    pub problem: &'a Cell<&'static str>,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Payload;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Payload, D::Error> {
        deserializer.deserialize_map(self)
    }
}

enum Field {
    Iss,
    Sub,
    Exp,
    Nbf,
    Aud,
    Type,
    TokenUse,
    Scopes,
    Other,
}

struct FieldSeed<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldSeed<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
        Ok(match name {
            "iss" => Field::Iss,
            "sub" => Field::Sub,
            "exp" => Field::Exp,
            "nbf" => Field::Nbf,
            "aud" => Field::Aud,
            "type" => Field::Type,
            "token_use" => Field::TokenUse,
            name if name == self.0 => Field::Scopes,
            _ => Field::Other,
        })
    }
}

/// A JSON number as a NumericDate; anything else (a string!) is refused.
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    /// Fractional seconds round towards the stricter side: down for `exp`, up for `nbf`.
    fn seconds(self, round_up: bool) -> i64 {
        match self {
            Number::Int(n) => n,
            // `as` saturates for out-of-range floats.
            Number::Float(f) if round_up => f.ceil() as i64,
            Number::Float(f) => f.floor() as i64,
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                if v.is_finite() {
                    Ok(Number::Float(v))
                } else {
                    Err(E::custom("not a finite number"))
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Scopes as a space-separated string (OAuth `scope`) or an array of strings (`scp`, `scopes`).
struct Scopes(Vec<String>);

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scopes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a space-separated string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scopes, E> {
                Ok(Scopes(v.split_ascii_whitespace().map(str::to_owned).collect()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scopes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(scope) = seq.next_element::<String>()? {
                    out.push(scope);
                }
                Ok(Scopes(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `aud`: one audience as a string, or an array of strings.
struct Audiences(Vec<String>);

impl<'de> Deserialize<'de> for Audiences {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audiences;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audiences, E> {
                Ok(Audiences(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audiences, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(aud) = seq.next_element::<String>()? {
                    out.push(aud);
                }
                Ok(Audiences(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        let problem = self.problem;
        let fail = |why: &'static str| {
            problem.set(why);
            de::Error::custom(why)
        };
        let (mut iss, mut sub, mut exp, mut nbf, mut aud) = (None, None, None, None, None);
        let (mut account_type, mut token_use, mut scopes) = (None, None, None);
        fn once<T, E>(slot: &mut Option<T>, value: Result<T, E>, fail: impl Fn(&'static str) -> E) -> Result<(), E>
        where
            E: de::Error,
        {
            let value = value?;
            if slot.replace(value).is_some() {
                return Err(fail("a claim appears twice"));
            }
            Ok(())
        }
        while let Some(field) = map.next_key_seed(FieldSeed(self.scopes_claim))? {
            match field {
                Field::Iss => once(
                    &mut iss,
                    map.next_value::<String>().map_err(|_| fail("iss must be a string")),
                    fail,
                )?,
                Field::Sub => once(
                    &mut sub,
                    map.next_value::<String>().map_err(|_| fail("sub must be a string")),
                    fail,
                )?,
                Field::Exp => once(
                    &mut exp,
                    map.next_value::<Number>().map_err(|_| fail("exp must be a number")),
                    fail,
                )?,
                Field::Nbf => once(
                    &mut nbf,
                    map.next_value::<Number>().map_err(|_| fail("nbf must be a number")),
                    fail,
                )?,
                Field::Aud => once(
                    &mut aud,
                    map.next_value::<Audiences>()
                        .map_err(|_| fail("aud must be a string or an array of strings")),
                    fail,
                )?,
                Field::Type => once(
                    &mut account_type,
                    map.next_value::<String>().map_err(|_| fail("type must be a string")),
                    fail,
                )?,
                Field::TokenUse => once(
                    &mut token_use,
                    map.next_value::<String>()
                        .map_err(|_| fail("token_use must be a string")),
                    fail,
                )?,
                Field::Scopes => once(
                    &mut scopes,
                    map.next_value::<Scopes>()
                        .map_err(|_| fail("scopes must be a string or an array of strings")),
                    fail,
                )?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Payload {
            iss: iss.ok_or_else(|| fail("iss is required"))?,
            sub: sub.ok_or_else(|| fail("sub is required"))?,
            exp: exp.ok_or_else(|| fail("exp is required"))?.seconds(false),
            nbf: nbf.map(|n: Number| n.seconds(true)),
            aud: aud.map(|a: Audiences| a.0),
            account_type,
            token_use,
            scopes: scopes.map(|s: Scopes| s.0).unwrap_or_default(),
        })
    }
}

/// Just `iss`, read from the still unverified payload to choose the issuer's keys.
#[derive(Deserialize)]
pub(super) struct UnverifiedIssuer {
    pub iss: String,
}
