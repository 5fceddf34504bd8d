//! Pod volumes on the host: `emptyDir` as a directory, `configMap`/`secret`/`projected` as files
//! written atomically and re-synced while the pod runs (so `Live` Config changes reach the process,
//! as the kubelet does with its symlink swap).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::Client;
use kube::api::Api;

/// One file a volume should contain: relative path → bytes.
type Files = BTreeMap<PathBuf, Vec<u8>>;

fn pick(data: BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>) -> Files {
    match items {
        Some(items) => items
            .iter()
            .filter_map(|i| data.get(&i.key).map(|v| (PathBuf::from(&i.path), v.clone())))
            .collect(),
        None => data.into_iter().map(|(k, v)| (PathBuf::from(k), v)).collect(),
    }
}

async fn configmap(client: &Client, ns: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("ConfigMap {name}: {e}"))?;
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    Ok(out)
}

async fn secret(client: &Client, ns: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("Secret {name}: {e}"))?;
    Ok(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// The files of a volume (empty for `emptyDir`).
pub async fn files(client: &Client, ns: &str, v: &Volume) -> Result<Files, String> {
    let mut out = Files::new();
    if let Some(c) = &v.config_map {
        out.extend(pick(configmap(client, ns, &c.name).await?, c.items.as_ref()));
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        out.extend(pick(secret(client, ns, &name).await?, s.items.as_ref()));
    }
    if let Some(p) = &v.projected {
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                out.extend(pick(configmap(client, ns, &c.name).await?, c.items.as_ref()));
            }
            if let Some(s) = &src.secret {
                out.extend(pick(secret(client, ns, &s.name).await?, s.items.as_ref()));
            }
        }
    }
    Ok(out)
}

/// Writes the files of every volume under `root/<volume>`, only where content changed (write to a
/// temporary file, then rename, so a reader never sees half a file). Files get group `gid` so a
/// non-root process can read them. Returns how many files changed.
pub async fn sync(client: &Client, pod: &Pod, root: &Path, gid: Option<u32>) -> Result<usize, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut changed = 0;
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = root.join(&v.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if v.empty_dir.is_some() {
            let _ = std::os::unix::fs::chown(&dir, None, gid);
            set_mode(&dir, 0o1777);
            continue;
        }
        for (rel, bytes) in files(client, &ns, &v).await? {
            // Item paths come from the pod spec: stay inside the volume.
            if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!("volume {}: path {} escapes the volume", v.name, rel.display()));
            }
            let path = dir.join(&rel);
            if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                let _ = std::os::unix::fs::chown(parent, None, gid);
                set_mode(parent, 0o750);
            }
            let tmp = path.with_extension("microplane-tmp");
            std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let _ = std::os::unix::fs::chown(&tmp, None, gid);
            set_mode(&tmp, 0o440);
            std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
            changed += 1;
        }
        let _ = std::os::unix::fs::chown(&dir, None, gid);
        set_mode(&dir, 0o750);
    }
    Ok(changed)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}
