//! The caller the gateway verified (docs/auth.md).
//!
//! The gateway verifies the caller's token, removes any of these keys a client sent, and sets them
//! itself on the gRPC request. They are trustworthy only on traffic that came through the gateway:
//! a tenant's NetworkPolicy admits the gateway and the tenant's own pods, so a service that must not
//! trust its neighbours checks tokens itself.

use tonic::Request;
use tonic::metadata::MetadataMap;

/// Metadata key of the account id.
pub use microplane_wire::headers::ACCOUNT_ID;
/// Metadata key of the tenant that issued the account.
pub use microplane_wire::headers::ACCOUNT_NAMESPACE;
/// Metadata key of the account's scopes, space-separated.
pub use microplane_wire::headers::ACCOUNT_SCOPES;
/// Metadata key of the account type (`user`, `service`, …).
pub use microplane_wire::headers::ACCOUNT_TYPE;
/// Metadata key of the tenant the request was resolved to.
pub use microplane_wire::headers::NAMESPACE;

/// A verified caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The account id (`micro-account-id`).
    pub id: String,
    /// The account type (`micro-account-type`), when sent.
    pub type_: Option<String>,
    /// The account's scopes (`micro-account-scopes`, space-separated); empty when none.
    pub scopes: Vec<String>,
    /// The tenant the request was resolved to (`micro-namespace`), when sent.
    pub namespace: Option<String>,
    /// The tenant that issued the account (`micro-account-namespace`), when known. It differs from
    /// [`Identity::namespace`] for a foreign account, which only public and `+` rules admit.
    pub account_namespace: Option<String>,
}

impl Identity {
    /// The caller of `request`, or `None` for an anonymous call (no account id).
    pub fn from_request<T>(request: &Request<T>) -> Option<Self> {
        Self::from_metadata(request.metadata())
    }

    /// The caller described by `metadata`, or `None` when it carries no account id. Values that are
    /// not visible ASCII count as absent.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<Self> {
        let id = text(metadata, ACCOUNT_ID)?;
        Some(Self {
            id,
            type_: text(metadata, ACCOUNT_TYPE),
            scopes: text(metadata, ACCOUNT_SCOPES)
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            namespace: text(metadata, NAMESPACE),
            account_namespace: text(metadata, ACCOUNT_NAMESPACE),
        })
    }

    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the account belongs to another tenant than the one called.
    pub fn is_foreign(&self) -> bool {
        self.account_namespace != self.namespace
    }
}

/// The tenant `request` was resolved to, also for anonymous calls.
pub fn namespace<T>(request: &Request<T>) -> Option<String> {
    text(request.metadata(), NAMESPACE)
}

fn text(metadata: &MetadataMap, key: &str) -> Option<String> {
    let value = metadata.get(key)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use tonic::metadata::MetadataValue;

    use super::*;

    fn request(pairs: &[(&'static str, &str)]) -> Request<()> {
        let mut request = Request::new(());
        for (key, value) in pairs {
            request.metadata_mut().insert(*key, value.parse().unwrap());
        }
        request
    }

    #[test]
    fn reads_the_forwarded_account() {
        let req = request(&[
            (ACCOUNT_ID, "alice"),
            (ACCOUNT_TYPE, "user"),
            (ACCOUNT_SCOPES, " admin  billing "),
            (NAMESPACE, "acme"),
            (ACCOUNT_NAMESPACE, "acme"),
        ]);
        let identity = Identity::from_request(&req).unwrap();
        assert_eq!(
            identity,
            Identity {
                id: "alice".into(),
                type_: Some("user".into()),
                scopes: vec!["admin".into(), "billing".into()],
                namespace: Some("acme".into()),
                account_namespace: Some("acme".into()),
            }
        );
        assert!(!identity.is_foreign());
        assert!(identity.has_scope("admin"));
        assert!(!identity.has_scope("adm"));
        assert_eq!(namespace(&req).as_deref(), Some("acme"));
    }

    #[test]
    fn a_foreign_account_names_its_own_tenant() {
        let req = request(&[(ACCOUNT_ID, "bob"), (NAMESPACE, "acme"), (ACCOUNT_NAMESPACE, "beta")]);
        let identity = Identity::from_request(&req).unwrap();
        assert_eq!(identity.account_namespace.as_deref(), Some("beta"));
        assert!(identity.is_foreign());
    }

    #[test]
    fn anonymous_without_an_account_id() {
        let req = request(&[(NAMESPACE, "acme"), (ACCOUNT_SCOPES, "admin")]);
        assert_eq!(Identity::from_request(&req), None);
        assert_eq!(namespace(&req).as_deref(), Some("acme"));
        assert_eq!(Identity::from_request(&request(&[(ACCOUNT_ID, "  ")])), None);
        assert_eq!(namespace(&Request::new(())), None);
    }

    #[test]
    fn optional_parts_may_be_missing() {
        let identity = Identity::from_request(&request(&[(ACCOUNT_ID, "svc-1")])).unwrap();
        assert_eq!(identity.type_, None);
        assert!(identity.scopes.is_empty());
        assert_eq!(identity.namespace, None);
    }

    #[test]
    fn non_text_values_count_as_absent() {
        let mut req = request(&[(ACCOUNT_ID, "bob")]);
        let opaque = MetadataValue::try_from(&b"\xffscope"[..]).unwrap();
        req.metadata_mut().insert(ACCOUNT_SCOPES, opaque);
        let identity = Identity::from_request(&req).unwrap();
        assert!(identity.scopes.is_empty());
    }
}
