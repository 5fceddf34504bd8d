//! The committed manifests are what the types generate, and the samples parse as the types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use microplane_crds::{AuthRule, Config, MicroService, Namespace};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_crds_match_the_types() {
    let differing = microplane_crds::generate::sync(repo(), false).unwrap();
    assert!(
        differing.is_empty(),
        "run `make generate` and commit; these differ from the types: {differing:#?}"
    );
}

#[test]
fn crds_carry_names_categories_and_status() {
    for crd in microplane_crds::generate::crds() {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "microplane.dev");
        assert_eq!(
            names.categories.as_deref(),
            Some(&["microplane".to_string()][..]),
            "{}",
            names.kind
        );
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{} has no short name",
            names.kind
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{} has no status subresource",
            names.kind
        );
        let status = serde_json::to_value(&version.schema).unwrap()["openAPIV3Schema"]["properties"]["status"].clone();
        assert_eq!(
            status["properties"]["conditions"]["x-kubernetes-list-type"], "map",
            "{}",
            names.kind
        );
        assert!(
            status["properties"]["observedGeneration"].is_object(),
            "{} lacks observedGeneration",
            names.kind
        );
    }
}

#[test]
fn namespace_is_cluster_scoped_with_tenant_short_names() {
    let crd = microplane_crds::generate::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "Namespace")
        .unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("tenants.microplane.dev"),
        "see docs/api.md: plural namespaces is not addressable"
    );
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.short_names, Some(vec!["mns".into(), "tenant".into()]));
}

/// Every field of every schema has a description (what `kubectl explain` prints).
#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub
                    .get("description")
                    .and_then(|d| d.as_str())
                    .is_none_or(str::is_empty)
                    && name != "apiVersion"
                    && name != "kind"
                    && name != "metadata"
                {
                    missing.push(p.clone());
                }
                walk(&p, sub, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in microplane_crds::generate::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment: {missing:#?}");
}

fn docs(file: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(repo().join("config/samples").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn samples_parse_as_the_types() {
    let tenant: Namespace = serde_yaml::from_value(docs("tenant.yaml").remove(0)).unwrap();
    assert_eq!(tenant.spec.hosts, vec!["api.micro.localhost"]);
    let hw: MicroService = serde_yaml::from_value(docs("helloworld.yaml").remove(0)).unwrap();
    assert_eq!(hw.spec.port, 8080);
    assert!(hw.spec.expose, "expose defaults to true");
    let src: MicroService = serde_yaml::from_value(docs("helloworld-source.yaml").remove(0)).unwrap();
    let git = &src.spec.source.as_ref().unwrap().git;
    assert_eq!(git.reference.as_ref().unwrap().branch.as_deref(), Some("main"));
    assert_eq!(src.spec.replicas, 1, "replicas defaults to 1");
    let cfg: Config = serde_yaml::from_value(docs("config.yaml").remove(0)).unwrap();
    assert_eq!(cfg.spec.data["helloworld"]["greeting"], "Hello");
    for doc in docs("authrule.yaml") {
        let rule: AuthRule = serde_yaml::from_value(doc).unwrap();
        assert_eq!(rule.spec.resource.type_, "service");
    }
}
