//! The headers (and gRPC metadata keys, the same lower-case names) carrying the caller the gateway
//! verified to backends (docs/auth.md). The gateway removes the identity headers a client sent and
//! sets them itself; a service reads them (the SDK's `identity` module).

/// The account id.
pub const ACCOUNT_ID: &str = "micro-account-id";
/// The account type (`user`, `service`, …).
pub const ACCOUNT_TYPE: &str = "micro-account-type";
/// The account's scopes, space-separated.
pub const ACCOUNT_SCOPES: &str = "micro-account-scopes";
/// The tenant that issued the account: the called tenant for its own and its external issuers'
/// accounts, another tenant for a foreign account (docs/auth.md, "Foreign accounts"). Absent for an
/// external issuer's account that the called tenant does not trust itself.
pub const ACCOUNT_NAMESPACE: &str = "micro-account-namespace";
/// The tenant the request was resolved to. A client may send it to name the tenant; the gateway sets
/// it on every backend request.
pub const NAMESPACE: &str = "micro-namespace";

/// The headers only the gateway may set: any a client sent are removed ([`NAMESPACE`] is not one:
/// clients may name their tenant).
pub const IDENTITY_HEADERS: [&str; 4] = [ACCOUNT_ID, ACCOUNT_TYPE, ACCOUNT_SCOPES, ACCOUNT_NAMESPACE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_header_names() {
        for name in IDENTITY_HEADERS.iter().chain([&NAMESPACE]) {
            assert!(http::HeaderName::from_static(name).as_str() == *name, "{name}");
            assert!(tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_static(name).as_str() == *name);
        }
        assert_eq!(
            IDENTITY_HEADERS,
            [
                "micro-account-id",
                "micro-account-type",
                "micro-account-scopes",
                "micro-account-namespace"
            ]
        );
        assert_eq!(NAMESPACE, "micro-namespace");
    }
}
