//! `/config_dump`: the bootstrap, clusters, listeners, routes, endpoints and secrets as Envoy
//! prints them (`envoy.admin.v3.ConfigDump`), with `?resource=` and `?mask=`. Private keys are
//! shown as `[redacted]`, never as they were received.

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
    let dump = build(handle, query.contains_key("include_eds"));
    let mut value = match xds_client::proto_json::to_value(&dump) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    redact(&mut value, false);
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
            if !configs.iter().any(|c| c.get(resource.as_str()).is_some()) {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("{resource} not found in config dump\n"),
                );
            }
            let items: Vec<Value> = configs
                .iter()
                .filter_map(|c| c.get(resource.as_str()))
                .filter_map(Value::as_array)
                .flatten()
                .map(|item| with_type(item, resource))
                .collect();
            if let Some(paths) = &mask {
                // With ?resource= Envoy checks the mask against the resource's message type.
                if let Some(bad) = items.first().and_then(|item| invalid_path(item, paths)) {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("FieldMask paths: \"{bad}\" could not be successfully used."),
                    );
                }
            }
            items
                .into_iter()
                .map(|item| masked(item, mask.as_deref()))
                .collect()
        }
        None => configs
            .into_iter()
            .map(|c| masked(c, mask.as_deref()))
            .collect(),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({ "configs": Value::Array(out) }),
    )
}

fn build(handle: &ServerHandle, include_eds: bool) -> admin::ConfigDump {
    let snapshot = handle.snapshot();
    let info = &handle.info;
    let xds = info.xds.load_full();
    let bootstrap = admin::BootstrapConfigDump {
        bootstrap: Some(info.bootstrap.clone()),
        last_updated: Some(timestamp(info.started_wall)),
    };
    // Envoy reports an xDS version only once dynamic resources exist; a static config has none.
    let dynamic = snapshot.clusters.values().any(|c| c.added_via_api)
        || snapshot.listeners.len() > statics_count(info);
    let version = if dynamic {
        snapshot.version.to_string()
    } else {
        String::new()
    };
    let mut clusters = admin::ClustersConfigDump {
        version_info: xds
            .as_ref()
            .map_or_else(|| version.clone(), |x| x.cds_version.clone()),
        ..Default::default()
    };
    for (name, entry) in snapshot.clusters.iter() {
        if entry.added_via_api {
            let active = xds
                .as_ref()
                .and_then(|x| x.clusters.get(name))
                .and_then(|s| s.active.as_ref());
            clusters
                .dynamic_active_clusters
                .push(admin::clusters_config_dump::DynamicCluster {
                    version_info: active.map_or_else(|| version.clone(), |a| a.version.clone()),
                    cluster: Some(pack(&entry.source)),
                    last_updated: Some(timestamp(
                        active.map_or(entry.last_updated, |a| a.last_updated),
                    )),
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
    if let Some(xds) = &xds {
        for slot in xds.clusters.values() {
            if let Some((warming, _)) = &slot.warming {
                clusters.dynamic_warming_clusters.push(
                    admin::clusters_config_dump::DynamicCluster {
                        version_info: warming.version.clone(),
                        cluster: Some(pack(&*warming.source)),
                        last_updated: Some(timestamp(warming.last_updated)),
                        ..Default::default()
                    },
                );
            }
        }
    }
    let mut listeners = admin::ListenersConfigDump {
        version_info: xds
            .as_ref()
            .map_or_else(|| version.clone(), |x| x.lds_version.clone()),
        ..Default::default()
    };
    for (name, entry) in snapshot.listeners.iter() {
        if statics.contains(&name.as_str()) {
            listeners
                .static_listeners
                .push(admin::listeners_config_dump::StaticListener {
                    listener: Some(pack(&entry.source)),
                    last_updated: Some(timestamp(entry.last_updated)),
                });
        } else {
            let slot = xds.as_ref().and_then(|x| x.listeners.get(name));
            let active = slot.and_then(|s| s.active.as_ref());
            listeners
                .dynamic_listeners
                .push(admin::listeners_config_dump::DynamicListener {
                    name: name.clone(),
                    active_state: Some(admin::listeners_config_dump::DynamicListenerState {
                        version_info: active.map_or_else(|| version.clone(), |a| a.version.clone()),
                        listener: Some(pack(&entry.source)),
                        last_updated: Some(timestamp(
                            active.map_or(entry.last_updated, |a| a.last_updated),
                        )),
                    }),
                    warming_state: slot
                        .and_then(|s| s.warming.as_ref())
                        .map(|(w, _)| listener_state(&w.source, &w.version, w.last_updated)),
                    ..Default::default()
                });
        }
    }
    let mut configs = vec![pack(&bootstrap), pack(&clusters), pack(&listeners)];
    if let Some(xds) = &xds {
        // Listeners that only warm (no active version yet) are listed with their warming state.
        for (name, slot) in xds.listeners.iter() {
            if let (None, Some((w, _))) = (&slot.active, &slot.warming) {
                listeners
                    .dynamic_listeners
                    .push(admin::listeners_config_dump::DynamicListener {
                        name: name.clone(),
                        warming_state: Some(listener_state(&w.source, &w.version, w.last_updated)),
                        ..Default::default()
                    });
            }
        }
        configs[2] = pack(&listeners);
    }
    let routes = admin::RoutesConfigDump {
        static_route_configs: inline_route_configs(&snapshot),
        dynamic_route_configs: xds
            .iter()
            .flat_map(|x| x.routes.values())
            .map(|r| admin::routes_config_dump::DynamicRouteConfig {
                version_info: r.version.clone(),
                route_config: Some(pack(&*r.source)),
                last_updated: Some(timestamp(r.last_updated)),
                ..Default::default()
            })
            .collect(),
    };
    configs.push(pack(&routes));
    if include_eds && let Some(xds) = &xds {
        let endpoints = admin::EndpointsConfigDump {
            dynamic_endpoint_configs: xds
                .endpoints
                .values()
                .map(|e| admin::endpoints_config_dump::DynamicEndpointConfig {
                    version_info: e.version.clone(),
                    endpoint_config: Some(pack(&*e.source)),
                    last_updated: Some(timestamp(e.last_updated)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        configs.push(pack(&endpoints));
    }
    configs.push(pack(&secrets(info, xds.as_deref())));
    admin::ConfigDump { configs }
}

/// Envoy lists every inline `route_config` of an HTTP connection manager, in any listener, as a
/// static route config: once per filter chain that carries one (Istio's `virtualInbound` repeats
/// `inbound|<port>||` for its plaintext and mTLS chains).
fn inline_route_configs(
    snapshot: &crate::snapshot::Snapshot,
) -> Vec<admin::routes_config_dump::StaticRouteConfig> {
    use xds_client::pb::envoy::config::listener::v3::filter::ConfigType;
    use xds_client::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    let mut out = Vec::new();
    for entry in snapshot.listeners.values() {
        let listener = &entry.source;
        let chains = listener
            .filter_chains
            .iter()
            .chain(&listener.default_filter_chain);
        for filter in chains.flat_map(|chain| &chain.filters) {
            let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
                continue;
            };
            let Ok(hcm) = xds_client::any::unpack::<HttpConnectionManager>(any) else {
                continue;
            };
            if let Some(RouteSpecifier::RouteConfig(routes)) = hcm.route_specifier {
                out.push(admin::routes_config_dump::StaticRouteConfig {
                    route_config: Some(pack(&routes)),
                    last_updated: Some(timestamp(entry.last_updated)),
                });
            }
        }
    }
    out
}

/// Envoy's `SecretsConfigDump`: static secrets, received ones, and awaited ones (version
/// `uninitialized`, only their name), all with private keys redacted.
fn secrets(
    info: &crate::server::ServerInfo,
    xds: Option<&crate::xds::XdsDump>,
) -> admin::SecretsConfigDump {
    use admin::secrets_config_dump::{DynamicSecret, StaticSecret};
    use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    let static_secrets = info
        .bootstrap
        .static_resources
        .iter()
        .flat_map(|s| &s.secrets)
        .map(|s| StaticSecret {
            name: s.name.clone(),
            secret: Some(pack(&crate::config::secret::redacted(s))),
            ..Default::default()
        })
        .collect();
    let Some(xds) = xds else {
        return admin::SecretsConfigDump {
            static_secrets,
            ..Default::default()
        };
    };
    admin::SecretsConfigDump {
        static_secrets,
        dynamic_active_secrets: xds
            .secrets
            .iter()
            .map(|(key, r)| DynamicSecret {
                name: key.name.clone(),
                version_info: r.version.clone(),
                last_updated: Some(timestamp(r.last_updated)),
                secret: Some(pack(&*r.source)),
                ..Default::default()
            })
            .collect(),
        dynamic_warming_secrets: xds
            .wanted_secrets
            .iter()
            .filter(|(key, _)| !xds.secrets.contains_key(*key))
            .map(|(key, since)| DynamicSecret {
                name: key.name.clone(),
                version_info: "uninitialized".into(),
                last_updated: Some(timestamp(*since)),
                secret: Some(pack(&Secret {
                    name: key.name.clone(),
                    r#type: None,
                })),
                ..Default::default()
            })
            .collect(),
    }
}

/// Blanks key material wherever the dump holds it, as Envoy's `MessageUtil::redact` does for
/// fields marked sensitive: a TLS certificate's `private_key`, `password` and `pkcs12` (in
/// secrets, and in inline `tls_certificates` of transport sockets in the bootstrap, listeners and
/// clusters), session ticket keys and generic secrets. Each data source keeps its kind: strings
/// and file names become `[redacted]`, bytes the bytes of `[redacted]`.
fn redact(value: &mut Value, sensitive: bool) {
    match value {
        Value::Object(fields) if sensitive && is_data_source(fields) => {
            for (kind, v) in fields.iter_mut() {
                *v = match kind.as_str() {
                    "inline_bytes" => Value::String(REDACTED_BYTES.into()),
                    "inline_string" | "filename" | "environment_variable" => {
                        Value::String(crate::config::secret::REDACTED.into())
                    }
                    _ => continue,
                };
            }
        }
        Value::Object(fields) => {
            let certificate = |key: &str| key == "tls_certificate" || key == "tls_certificates";
            for (key, child) in fields.iter_mut() {
                if certificate(key) {
                    for cert in certificates(child) {
                        for field in ["private_key", "password", "pkcs12"] {
                            if let Some(source) = cert.get_mut(field) {
                                redact(source, true);
                            }
                        }
                    }
                }
                let secret_field = matches!(key.as_str(), "session_ticket_keys" | "generic_secret");
                redact(child, sensitive || secret_field);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, sensitive)),
        _ => {}
    }
}

/// `[redacted]` as proto3 JSON shows bytes.
const REDACTED_BYTES: &str = "W3JlZGFjdGVkXQ==";

/// The TLS certificate objects of a `tls_certificate` value or a `tls_certificates` list.
fn certificates(value: &mut Value) -> Vec<&mut serde_json::Map<String, Value>> {
    match value {
        Value::Object(o) => vec![o],
        Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    }
}

fn is_data_source(fields: &serde_json::Map<String, Value>) -> bool {
    fields.keys().any(|k| {
        matches!(
            k.as_str(),
            "inline_bytes" | "inline_string" | "filename" | "environment_variable"
        )
    })
}

fn listener_state(
    source: &xds_client::pb::envoy::config::listener::v3::Listener,
    version: &str,
    last_updated: SystemTime,
) -> admin::listeners_config_dump::DynamicListenerState {
    admin::listeners_config_dump::DynamicListenerState {
        version_info: version.to_string(),
        listener: Some(pack(source)),
        last_updated: Some(timestamp(last_updated)),
    }
}

fn statics_count(info: &crate::server::ServerInfo) -> usize {
    info.bootstrap
        .static_resources
        .as_ref()
        .map_or(0, |s| s.listeners.len())
}

/// A resource listed alone carries its own `@type`, as Envoy prints it.
fn with_type(item: &Value, resource: &str) -> Value {
    let type_name = match resource {
        "static_clusters" => admin::clusters_config_dump::StaticCluster::full_name(),
        "dynamic_active_clusters" | "dynamic_warming_clusters" => {
            admin::clusters_config_dump::DynamicCluster::full_name()
        }
        "static_listeners" => admin::listeners_config_dump::StaticListener::full_name(),
        "static_route_configs" => admin::routes_config_dump::StaticRouteConfig::full_name(),
        "dynamic_route_configs" => admin::routes_config_dump::DynamicRouteConfig::full_name(),
        "dynamic_endpoint_configs" => {
            admin::endpoints_config_dump::DynamicEndpointConfig::full_name()
        }
        "dynamic_listeners" => admin::listeners_config_dump::DynamicListener::full_name(),
        "static_secrets" => admin::secrets_config_dump::StaticSecret::full_name(),
        "dynamic_active_secrets" | "dynamic_warming_secrets" => {
            admin::secrets_config_dump::DynamicSecret::full_name()
        }
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

/// Applies a FieldMask as Envoy's `TrimMessage` does: only the named (possibly nested) fields
/// remain, with the `@type` of every message on the way kept so it still reads as an Any.
fn masked(value: Value, mask: Option<&[&str]>) -> Value {
    let Some(paths) = mask else { return value };
    let split: Vec<Vec<&str>> = paths.iter().map(|p| p.split('.').collect()).collect();
    trim(&value, &split.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

fn trim(value: &Value, paths: &[&[&str]]) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|item| trim(item, paths)).collect()),
        Value::Object(fields) => {
            let mut out = serde_json::Map::new();
            if let Some(t) = fields.get("@type") {
                out.insert("@type".into(), t.clone());
            }
            for (key, child) in fields {
                let deeper: Vec<&[&str]> = paths
                    .iter()
                    .filter(|p| p.first() == Some(&key.as_str()))
                    .map(|p| &p[1..])
                    .collect();
                if deeper.is_empty() {
                    continue;
                }
                let kept = if deeper.iter().any(|rest| rest.is_empty()) {
                    child.clone()
                } else {
                    trim(child, &deeper)
                };
                out.insert(key.clone(), kept);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The first mask path whose first field does not exist in the item's message type.
fn invalid_path<'a>(item: &Value, paths: &[&'a str]) -> Option<&'a str> {
    let type_url = item.get("@type")?.as_str()?;
    let message =
        xds_client::proto_json::pool().get_message_by_name(type_url.rsplit('/').next()?)?;
    paths.iter().copied().find(|path| {
        let first = path.split('.').next().unwrap_or_default();
        message.get_field_by_name(first).is_none()
    })
}

fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_material_is_redacted_wherever_it_is() {
        let mut dump = json!({"configs": [
            {"bootstrap": {"static_resources": {"secrets": [
                {"name": "s", "tls_certificate": {
                    "certificate_chain": {"inline_string": "chain"},
                    "private_key": {"inline_bytes": "a2V5"},
                    "password": {"environment_variable": "PASS"}}},
                {"name": "t", "session_ticket_keys": {"keys": [{"filename": "/keys/1"}]}},
                {"name": "g", "generic_secret": {"secret": {"inline_string": "token"}}}
            ]}}},
            {"dynamic_listeners": [{"active_state": {"listener": {"filter_chains": [{
                "transport_socket": {"typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {"tls_certificates": [{
                        "certificate_chain": {"filename": "/c.pem"},
                        "private_key": {"filename": "/k.pem"}}]}}}}]}}}]}
        ]});
        redact(&mut dump, false);
        let secrets = &dump["configs"][0]["bootstrap"]["static_resources"]["secrets"];
        assert_eq!(
            secrets[0]["tls_certificate"],
            json!({
                "certificate_chain": {"inline_string": "chain"},
                "private_key": {"inline_bytes": REDACTED_BYTES},
                "password": {"environment_variable": "[redacted]"}})
        );
        assert_eq!(
            secrets[1]["session_ticket_keys"]["keys"][0]["filename"],
            "[redacted]"
        );
        assert_eq!(
            secrets[2]["generic_secret"]["secret"]["inline_string"],
            "[redacted]"
        );
        let tls = &dump["configs"][1]["dynamic_listeners"][0]["active_state"]["listener"]["filter_chains"]
            [0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0];
        assert_eq!(tls["certificate_chain"]["filename"], "/c.pem");
        assert_eq!(tls["private_key"]["filename"], "[redacted]");
    }
}
