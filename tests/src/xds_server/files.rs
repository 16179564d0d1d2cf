//! Snapshots from a directory of resource files, for the `xds-server` binary.
//!
//! Each `*.json`, `*.yaml` or `*.yml` file is Envoy proto3 JSON/YAML of either one resource with
//! its `"@type"`, or a `DiscoveryResponse`-shaped `{resources: [...]}` (Envoy's own file-based
//! xDS format). A resource is named by the name it carries (`cluster_name` for endpoints).

use super::Snapshot;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use xds_client::pb::envoy::service::discovery::v3::DiscoveryResponse;
use xds_client::pb::google::protobuf::Any;
use xds_client::proto_json::{self, ReadOptions};
use xds_client::resource::ResourceType;

/// The resource files of `dir`, sorted by name.
fn resource_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// What changes when any resource file is added, removed or rewritten.
pub fn fingerprint(dir: &Path) -> anyhow::Result<Vec<(PathBuf, SystemTime, u64)>> {
    resource_files(dir)?
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path)?;
            Ok((path, meta.modified()?, meta.len()))
        })
        .collect()
}

/// Reads every resource file in `dir` into one snapshot; any bad file fails the whole load.
pub fn load_dir(dir: &Path) -> anyhow::Result<Snapshot> {
    let mut snapshot = Snapshot::new();
    for path in resource_files(dir)? {
        let hint = path.to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {hint}"))?;
        let value = proto_json::parse_text(&text, &hint).with_context(|| hint.clone())?;
        let resources: Vec<Any> = if value.get("resources").is_some() {
            proto_json::from_value::<DiscoveryResponse>(value, ReadOptions::default())
                .with_context(|| hint.clone())?
                .resources
        } else {
            vec![
                proto_json::from_value::<Any>(value, ReadOptions::default())
                    .with_context(|| hint.clone())?,
            ]
        };
        for body in resources {
            let Some(ty) = ResourceType::from_type_url(&body.type_url) else {
                bail!("{hint}: resource type {} is not served", body.type_url);
            };
            let name = ty
                .decode_name(&body.value)
                .with_context(|| format!("{hint}: decoding {ty}"))?;
            if name.is_empty() {
                bail!("{hint}: a {ty} without a name");
            }
            snapshot.insert(name, body);
        }
    }
    Ok(snapshot)
}
