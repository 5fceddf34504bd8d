//! The Config controller: a ConfigMap with the document and a Secret with the secret values, both
//! owned by the Config, plus a content hash in status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use microplane_crds::{CondType, Config, ConfigStatus, Reason};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::conditions::{self, Cond};
use crate::context::{Context, name_of, namespace_of};
use crate::labels::CONFIG_LABEL;
use crate::{Error, Result};

/// Name of this controller in metrics.
pub(crate) const CONTROLLER: &str = "config";
/// ConfigMap key of the JSON document.
pub(crate) const DOCUMENT_KEY: &str = "config.json";
/// Secret key of the JSON document holding only the secret values, at their paths.
pub(crate) const SECRETS_KEY: &str = "secrets.json";

/// Name of the ConfigMap and Secret delivering a Config.
pub(crate) fn child_name(config: &str) -> String {
    format!("microplane-config-{config}")
}

/// Why a Config cannot be delivered. Messages name Secrets and keys, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A referenced Secret does not exist.
    SecretNotFound(String),
    /// A referenced Secret lacks the key.
    SecretKeyNotFound(String, String),
    /// The value is not UTF-8 text.
    SecretValueNotText(String, String),
    /// Two entries place values at clashing paths (`a` and `a.b`), or a path clashes with `data`.
    PathConflict(String),
}

impl Problem {
    fn reason(&self) -> Reason {
        match self {
            Self::SecretNotFound(_) => Reason::SecretNotFound,
            Self::SecretKeyNotFound(..) => Reason::SecretKeyNotFound,
            Self::SecretValueNotText(..) => Reason::SecretValueNotText,
            Self::PathConflict(_) => Reason::PathConflict,
        }
    }
    fn message(&self) -> String {
        match self {
            Self::SecretNotFound(s) => format!("Secret {s} not found in this namespace"),
            Self::SecretKeyNotFound(s, k) => format!("Secret {s} has no key {k}"),
            Self::SecretValueNotText(s, k) => format!("Secret {s} key {k} is not UTF-8 text"),
            Self::PathConflict(p) => format!("secrets path {p} conflicts with another value"),
        }
    }
}

/// Places `value` at the dot-separated `path` of `doc`, creating objects on the way. Fails when a
/// non-object value is in the way.
pub(crate) fn place(doc: &mut Map<String, Value>, path: &str, value: Value) -> Result<(), Problem> {
    let mut parts = path.split('.').peekable();
    let mut node = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if node.get(part).is_some_and(|v| v.is_object()) {
                return Err(Problem::PathConflict(path.into()));
            }
            node.insert(part.into(), value);
            return Ok(());
        }
        let next = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        node = next.as_object_mut().ok_or_else(|| Problem::PathConflict(path.into()))?;
    }
    Ok(())
}

/// The secrets document: each entry's value at its path. `lookup(secret, key)` reads a value.
pub(crate) fn secrets_document(
    config: &Config,
    lookup: impl Fn(&str, &str) -> Result<Vec<u8>, Problem>,
) -> Result<Map<String, Value>, Problem> {
    let mut doc = Map::new();
    for entry in &config.spec.secrets {
        let bytes = lookup(&entry.secret_key_ref.name, &entry.secret_key_ref.key)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Problem::SecretValueNotText(entry.secret_key_ref.name.clone(), entry.secret_key_ref.key.clone())
        })?;
        place(&mut doc, &entry.path, Value::String(text))?;
    }
    Ok(doc)
}

/// Content hash of a delivery: the document and the identity and version of each secret value's
/// Secret. Secret values are not hashed, so the hash reveals nothing about them (a hash of a short
/// secret could be brute-forced).
pub(crate) fn content_hash(document: &str, secret_versions: &[(String, String, String)]) -> String {
    let mut h = Sha256::new();
    h.update(document.as_bytes());
    for (name, key, version) in secret_versions {
        h.update([0]);
        h.update(name.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        h.update([0]);
        h.update(version.as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The ConfigMap and Secret delivering a Config.
pub(crate) fn children(config: &Config, document: &str, secrets: &Map<String, Value>) -> Result<(ConfigMap, Secret)> {
    let name = name_of(config)?;
    let owner = config
        .controller_owner_ref(&())
        .ok_or(Error::Malformed("Config without a uid"))?;
    let meta = ObjectMeta {
        name: Some(child_name(&name)),
        namespace: config.namespace(),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/managed-by".into(), "microplane-operator".into()),
            (CONFIG_LABEL.into(), name.clone()),
        ])),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let cm = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(DOCUMENT_KEY.into(), document.to_string())])),
        ..ConfigMap::default()
    };
    let secret = Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SECRETS_KEY.into(),
            ByteString(serde_json::to_vec(secrets)?),
        )])),
        ..Secret::default()
    };
    Ok((cm, secret))
}

/// Reconciles one Config.
pub(crate) async fn reconcile(config: Arc<Config>, ctx: Arc<Context>) -> Result<Action> {
    ctx.instrumented(CONTROLLER, config.as_ref(), reconcile_inner(&config, &ctx))
        .await
}

async fn reconcile_inner(config: &Config, ctx: &Context) -> Result<Action> {
    let name = name_of(config)?;
    let namespace = namespace_of(config)?;
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);

    // Dereference: read each referenced Secret once.
    let mut fetched: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    for entry in &config.spec.secrets {
        let s = &entry.secret_key_ref.name;
        if !fetched.contains_key(s) {
            fetched.insert(s.clone(), secrets_api.get_opt(s).await?);
        }
    }
    let lookup = |secret: &str, key: &str| -> Result<Vec<u8>, Problem> {
        let s = fetched
            .get(secret)
            .and_then(Option::as_ref)
            .ok_or_else(|| Problem::SecretNotFound(secret.into()))?;
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                s.string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| v.clone().into_bytes())
            })
            .ok_or_else(|| Problem::SecretKeyNotFound(secret.into(), key.into()))
    };

    let document = serde_json::to_string(&config.spec.data)?;
    let outcome = secrets_document(config, lookup).and_then(|secrets| {
        // A secret path must not land on a value of `data`: consumers merge secrets over data.
        let mut merged = config.spec.data.as_object().cloned().unwrap_or_default();
        for entry in &config.spec.secrets {
            place(&mut merged, &entry.path, Value::Null)?;
        }
        Ok(secrets)
    });

    let previous = config.status.as_ref();
    let mut next = ConfigStatus {
        observed_generation: config.meta().generation,
        ..ConfigStatus::default()
    };
    let wanted = match outcome {
        Ok(secrets) => {
            let (cm, secret) = children(config, &document, &secrets)?;
            ctx.apply_read(CONTROLLER, &cm).await?;
            ctx.apply_read(CONTROLLER, &secret).await?;
            let versions: Vec<(String, String, String)> = config
                .spec
                .secrets
                .iter()
                .map(|e| {
                    let v = fetched
                        .get(&e.secret_key_ref.name)
                        .and_then(Option::as_ref)
                        .map(|s| {
                            format!(
                                "{}/{}",
                                s.uid().unwrap_or_default(),
                                s.resource_version().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    (e.secret_key_ref.name.clone(), e.secret_key_ref.key.clone(), v)
                })
                .collect();
            next.hash = Some(content_hash(&document, &versions));
            Cond::ok(
                CondType::Ready,
                Reason::Delivered,
                format!("delivered as ConfigMap and Secret {}", child_name(&name)),
            )
        }
        Err(problem) => {
            // Keep delivering the last good content; report what is wrong.
            next.hash = previous.and_then(|p| p.hash.clone());
            Cond::fail(CondType::Ready, problem.reason(), problem.message())
        }
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    next.conditions = conditions::merge(
        previous.map_or(&[][..], |p| &p.conditions),
        &conditions::kstatus(vec![wanted.clone()]),
        config.meta().generation,
        &now,
    );
    if previous != Some(&next) {
        if !wanted.status {
            ctx.event(config, true, wanted.reason, wanted.message.clone(), "Deliver")
                .await;
        }
        ctx.patch_status(CONTROLLER, config, &next).await?;
    }
    Ok(if wanted.status {
        Action::requeue(ctx.settings.resync)
    } else {
        Action::requeue(Duration::from_secs(60))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_builds_nested_objects_and_refuses_clashes() {
        let mut doc = Map::new();
        place(&mut doc, "db.password", Value::String("x".into())).unwrap();
        place(&mut doc, "db.user", Value::String("u".into())).unwrap();
        assert_eq!(
            Value::Object(doc.clone()),
            serde_json::json!({"db": {"password": "x", "user": "u"}})
        );
        assert_eq!(
            place(&mut doc, "db.password.inner", Value::Null),
            Err(Problem::PathConflict("db.password.inner".into()))
        );
        assert_eq!(
            place(&mut doc, "db", Value::Null),
            Err(Problem::PathConflict("db".into()))
        );
    }

    #[test]
    fn hash_changes_with_document_and_secret_version_but_not_values() {
        let a = content_hash("{}", &[("s".into(), "k".into(), "uid/1".into())]);
        assert_eq!(a, content_hash("{}", &[("s".into(), "k".into(), "uid/1".into())]));
        assert_ne!(a, content_hash("{}", &[("s".into(), "k".into(), "uid/2".into())]));
        assert_ne!(
            a,
            content_hash("{\"a\":1}", &[("s".into(), "k".into(), "uid/1".into())])
        );
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn problems_never_carry_values() {
        let p = Problem::SecretKeyNotFound("db".into(), "password".into());
        assert_eq!(p.message(), "Secret db has no key password");
    }
}
