//! Standard `metav1.Condition` lists, as a list-map keyed by `type`, and the closed sets of their
//! types ([`CondType`]), statuses ([`ConditionStatus`]) and reasons ([`Reason`]) Microplane sets.
//! Each spells itself on the wire exactly as its variant is named.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{Schema, SchemaGenerator, json_schema};

/// Schema of a `conditions` field: `metav1.Condition` items, a list-map keyed by `type`, so server-side
/// apply merges conditions by type and kstatus-aware tools (Argo CD, Flux) can read them.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "description": "Standard conditions of the object, keyed by type. `Ready` summarises the others.",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// Status of a condition, as `metav1.ConditionStatus` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not (yet) known.
    Unknown,
}

impl ConditionStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<ConditionStatus> for String {
    fn eq(&self, other: &ConditionStatus) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ConditionStatus> for &str {
    fn eq(&self, other: &ConditionStatus) -> bool {
        *self == other.as_str()
    }
}

/// A condition type or reason Microplane does not set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

/// Declares a closed set of CamelCase names: the enum, `as_str`, `ALL`, and comparisons with text.
macro_rules! names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The wire spelling (the variant's name).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }

            /// The value spelled `s`.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| UnknownName(s.to_string()))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(UnknownName(s.into_owned())))
            }
        }
    };
}

names! {
    /// Condition types Microplane sets.
    CondType {
        /// kstatus summary: the object is done and healthy for its current generation.
        Ready,
        /// kstatus: work is in progress (abnormal-true).
        Reconciling,
        /// kstatus: failed, no progress without a change (abnormal-true).
        Stalled,
        /// MicroService: the Deployment's pods are available.
        Available,
        /// MicroService (source mode): the git source resolved to a commit.
        SourceReady,
        /// MicroService (source mode): the commit's image was built.
        BuildSucceeded,
        /// MicroService: the gateway routes it.
        Routed,
        /// AuthRule: the rule is valid.
        Accepted,
    }
}

names! {
    /// Every condition reason Microplane sets. docs/troubleshooting.md has an entry for each (a
    /// test says so).
    Reason {
        // --- MicroService: done
        /// Rolled out and available.
        Running,
        /// Rolled out to zero replicas.
        ScaledToZero,
        // --- MicroService: in progress
        /// No Deployment observed yet.
        Pending,
        /// The Deployment is rolling out.
        Deploying,
        /// The git source is being resolved.
        Resolving,
        /// The commit's image is being built.
        Building,
        /// A listed Config is not delivered yet.
        ConfigNotReady,
        // --- MicroService: stalled
        /// The namespace has no tenant.
        TenantNotFound,
        /// A listed Config does not exist.
        ConfigNotFound,
        /// The Deployment exceeded its progress deadline.
        ProgressDeadlineExceeded,
        /// Container waiting reason: the image cannot be pulled (backing off).
        ImagePullBackOff,
        /// Container waiting reason: the image pull failed.
        ErrImagePull,
        /// Container waiting reason: the image reference is invalid.
        InvalidImageName,
        /// Container waiting reason: the container keeps crashing.
        CrashLoopBackOff,
        /// Container waiting reason: the container's configuration is wrong.
        CreateContainerConfigError,
        /// Container waiting reason: the container cannot be created.
        CreateContainerError,
        /// The build Job failed.
        BuildFailed,
        // --- MicroService source step (SourceReady / BuildSucceeded, and Ready when they fail)
        /// The source resolved to a commit.
        Resolved,
        /// The image of the commit exists.
        Built,
        /// The build waits for a source that did not resolve.
        SourceNotReady,
        /// The source spec cannot be used.
        InvalidSource,
        /// `http://`/`file://` without the operator's allow flag.
        InsecureSourceRefused,
        /// The git server refused the credentials.
        AuthenticationFailed,
        /// The ssh host key does not match `known_hosts`.
        HostKeyMismatch,
        /// ssh without pinned host keys.
        HostKeyNotPinned,
        /// The branch, tag or commit does not exist.
        RevisionNotFound,
        /// `source.git.path` does not exist at the commit.
        PathNotFound,
        /// `source.git.path` leaves the repository.
        PathEscapesRepository,
        /// No Dockerfile and no language the Auto strategy knows.
        NothingToBuild,
        /// The repository is larger than the operator allows.
        RepositoryTooLarge,
        /// The credentials Secret is missing keys or malformed.
        SecretInvalid,
        /// A referenced Secret does not exist (source credentials, Config secrets).
        SecretNotFound,
        /// Transient: the git server cannot be reached.
        SourceUnreachable,
        /// Transient: resolving took longer than the operator's timeout.
        SourceTimeout,
        /// Transient: the operator's git cache failed.
        SourceCacheError,
        // --- MicroService routing
        /// The gateway routes it.
        Routed,
        /// `spec.expose` is false.
        NotExposed,
        /// Waiting for a ready pod to answer gRPC reflection.
        DiscoveryPending,
        /// gRPC reflection failed.
        ReflectionFailed,
        // --- Namespace (tenant)
        /// Namespace and children exist.
        Provisioned,
        /// A core Namespace of that name exists and is not the tenant's.
        NamespaceConflict,
        /// The name belongs to the cluster or to Microplane (`kube-system`, the operator's own
        /// namespace, the build namespace, …): never a tenant, even with `adopt`.
        NamespaceReserved,
        /// The core Namespace is being deleted.
        NamespaceTerminating,
        /// The quota controller has not counted the namespace yet.
        QuotaPending,
        /// (Event) Unusable entries of the tenant's signing-keys Secret were dropped and the Secret
        /// written again.
        SigningKeysReplaced,
        /// Another tenant, created earlier, claims one of `spec.hosts`: the gateway routes that host
        /// to the other tenant.
        HostConflict,
        // --- Config
        /// Delivered as ConfigMap and Secret.
        Delivered,
        /// A referenced Secret lacks the key.
        SecretKeyNotFound,
        /// A secret value is not UTF-8.
        SecretValueNotText,
        /// Two values claim clashing paths.
        PathConflict,
        // --- AuthRule
        /// The rule is valid (`Accepted`).
        Valid,
        /// The rule is accepted (`Ready`).
        Accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason as R;

    #[test]
    fn names_round_trip() {
        for &r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        for &t in CondType::ALL {
            assert_eq!(CondType::parse(t.as_str()), Some(t));
        }
        assert_eq!(R::ImagePullBackOff, "ImagePullBackOff");
    }

    /// docs/troubleshooting.md explains every reason: a `### \`Reason\`` heading each.
    #[test]
    fn every_reason_is_documented() {
        let doc = include_str!("../../docs/troubleshooting.md");
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|r| !doc.contains(&format!("### `{r}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "reasons without an entry in docs/troubleshooting.md: {missing:?}"
        );
    }

    #[test]
    fn names_serialize_as_they_are_spelled() {
        assert_eq!(
            serde_json::to_string(&CondType::SourceReady).unwrap(),
            "\"SourceReady\""
        );
        assert_eq!(
            serde_json::from_str::<Reason>("\"BuildFailed\"").unwrap(),
            R::BuildFailed
        );
        assert!(serde_json::from_str::<Reason>("\"Nope\"").is_err());
        assert_eq!("Routed".parse::<CondType>(), Ok(CondType::Routed));
        assert_eq!(CondType::Ready.to_string(), "Ready");
        let status: String = serde_json::from_str("\"True\"").unwrap();
        assert!(status == ConditionStatus::True);
        assert_eq!(ConditionStatus::from(false).as_str(), "False");
    }
}
