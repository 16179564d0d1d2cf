//! `/config_dump`: the bootstrap, clusters and listeners as Envoy prints them
//! (`envoy.admin.v3.ConfigDump`), with `?resource=` and `?mask=`.

use super::{Body, Query, json, text};
use crate::server::ServerHandle;
use http::{Response, StatusCode};
use prost::Name;
use serde_json::Value;
use std::time::SystemTime;
use xds_client::any::pack;
use xds_client::pb::envoy::admin::v3 as admin;
use xds_client::pb::google::protobuf::Timestamp;

pub fn config_dump(handle: &ServerHandle, query: &Query) -> Response<Body> {
    let dump = build(handle);
    let value = match xds_client::proto_json::to_value(&dump) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let mask: Option<Vec<&str>> = query
        .get("mask")
        .map(|m| m.split(',').filter(|p| !p.is_empty()).collect());
    let configs = value
        .get("configs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let out = match query.get("resource").filter(|r| !r.is_empty()) {
        Some(resource) => {
            let items = configs
                .iter()
                .filter_map(|c| c.get(resource.as_str()))
                .filter_map(Value::as_array)
                .flatten()
                .map(|item| with_type(item, resource))
                .map(|item| apply_mask(item, mask.as_deref()))
                .collect::<Vec<_>>();
            if items.is_empty() && !configs.iter().any(|c| c.get(resource.as_str()).is_some()) {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("{resource} not found in config dump\n"),
                );
            }
            Value::Array(items)
        }
        None => Value::Array(
            configs
                .into_iter()
                .map(|c| apply_mask(c, mask.as_deref()))
                .collect(),
        ),
    };
    json(StatusCode::OK, &serde_json::json!({ "configs": out }))
}

fn build(handle: &ServerHandle) -> admin::ConfigDump {
    let snapshot = handle.snapshot();
    let info = &handle.info;
    let bootstrap = admin::BootstrapConfigDump {
        bootstrap: Some(info.bootstrap.clone()),
        last_updated: Some(timestamp(info.started_wall)),
    };
    let version = snapshot.version.to_string();
    let mut clusters = admin::ClustersConfigDump {
        version_info: version.clone(),
        ..Default::default()
    };
    for entry in snapshot.clusters.values() {
        if entry.added_via_api {
            clusters
                .dynamic_active_clusters
                .push(admin::clusters_config_dump::DynamicCluster {
                    version_info: version.clone(),
                    cluster: Some(pack(&entry.source)),
                    last_updated: Some(timestamp(entry.last_updated)),
                    ..Default::default()
                });
        } else {
            clusters
                .static_clusters
                .push(admin::clusters_config_dump::StaticCluster {
                    cluster: Some(pack(&entry.source)),
                    last_updated: Some(timestamp(entry.last_updated)),
                });
        }
    }
    let statics: Vec<&str> = info
        .bootstrap
        .static_resources
        .as_ref()
        .map(|s| s.listeners.iter().map(|l| l.name.as_str()).collect())
        .unwrap_or_default();
    let mut listeners = admin::ListenersConfigDump {
        version_info: version.clone(),
        ..Default::default()
    };
    for (name, entry) in &snapshot.listeners {
        if statics.contains(&name.as_str()) {
            listeners
                .static_listeners
                .push(admin::listeners_config_dump::StaticListener {
                    listener: Some(pack(&entry.source)),
                    last_updated: Some(timestamp(entry.last_updated)),
                });
        } else {
            listeners
                .dynamic_listeners
                .push(admin::listeners_config_dump::DynamicListener {
                    name: name.clone(),
                    active_state: Some(admin::listeners_config_dump::DynamicListenerState {
                        version_info: version.clone(),
                        listener: Some(pack(&entry.source)),
                        last_updated: Some(timestamp(entry.last_updated)),
                    }),
                    ..Default::default()
                });
        }
    }
    admin::ConfigDump {
        configs: vec![pack(&bootstrap), pack(&clusters), pack(&listeners)],
    }
}

/// A resource listed alone carries its own `@type`, as Envoy prints it.
fn with_type(item: &Value, resource: &str) -> Value {
    let type_name = match resource {
        "static_clusters" => admin::clusters_config_dump::StaticCluster::full_name(),
        "dynamic_active_clusters" | "dynamic_warming_clusters" => {
            admin::clusters_config_dump::DynamicCluster::full_name()
        }
        "static_listeners" => admin::listeners_config_dump::StaticListener::full_name(),
        "dynamic_listeners" => admin::listeners_config_dump::DynamicListener::full_name(),
        _ => return item.clone(),
    };
    let mut out = serde_json::Map::new();
    out.insert(
        "@type".into(),
        Value::String(format!("type.googleapis.com/{type_name}")),
    );
    if let Value::Object(fields) = item {
        out.extend(fields.clone());
    }
    Value::Object(out)
}

/// Keeps only the masked top-level fields (and `@type`), as Envoy's FieldMask handling does.
fn apply_mask(value: Value, mask: Option<&[&str]>) -> Value {
    let (Some(mask), Value::Object(fields)) = (mask, &value) else {
        return value;
    };
    let kept = fields
        .iter()
        .filter(|(k, _)| {
            k.as_str() == "@type" || mask.iter().any(|m| m.split('.').next() == Some(k.as_str()))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept)
}

fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}
