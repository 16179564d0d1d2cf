//! `/config_dump`: the bootstrap, clusters, listeners, routes, endpoints and secrets as Envoy
//! prints them (`envoy.admin.v3.ConfigDump`), with Envoy 1.40's query parameters: `resource`
//! (one repeated field, its items listed alone), `mask` (a FieldMask, see [`mask`]),
//! `name_regex` (resources by name) and `include_eds`. Errors have Envoy's statuses and texts.
//! Private keys are shown as `[redacted]`, never as they were received.

mod endpoints;
mod mask;

pub(super) use endpoints::source_assignment;

use super::{Body, Query, proto_json, text};
use crate::server::ServerHandle;
use http::{Response, StatusCode};
use mask::FieldMask;
use serde_json::Value;
use std::time::SystemTime;
use xds_client::any::pack;
use xds_client::pb::envoy::admin::v3 as admin;
use xds_client::pb::google::protobuf::Timestamp;

pub fn config_dump(handle: &ServerHandle, query: &Query) -> Response<Body> {
    // Envoy treats an empty `resource=` or `mask=` as absent.
    let resource = query.get("resource").filter(|r| !r.is_empty());
    let mask = query
        .get("mask")
        .filter(|m| !m.is_empty())
        .map(|m| FieldMask::parse(m));
    let names = match Names::from_query(query) {
        Ok(names) => names,
        Err(error) => return text(StatusCode::BAD_REQUEST, error),
    };
    let dump = build(handle, query.contains_key("include_eds"), &names);
    let mut value = match xds_client::proto_json::to_value(&dump) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    redact(&mut value, false);
    super::whole_numbers_as_integers(&mut value);
    let configs = match value.get_mut("configs").map(Value::take) {
        Some(Value::Array(configs)) => configs,
        _ => Vec::new(),
    };
    let out = match resource {
        Some(resource) => match resource_items(configs, resource, mask.as_ref()) {
            Ok(items) => items,
            Err((status, error)) => return text(status, error),
        },
        None => match &mask {
            Some(mask) => {
                // A config the mask does not fit is left out; none fitting is an error.
                let kept: Vec<Value> = configs
                    .iter()
                    .filter(|c| message_of(c).is_some_and(|m| mask.fits(&m)))
                    .map(|c| mask.trim(c))
                    .collect();
                if kept.is_empty() {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "FieldMask {} could not be successfully applied to any configs.",
                            mask.text
                        ),
                    );
                }
                kept
            }
            None => configs,
        },
    };
    proto_json(
        StatusCode::OK,
        &serde_json::json!({ "configs": Value::Array(out) }),
        "envoy.admin.v3.ConfigDump",
    )
}

/// `?resource=`: the items of the first config whose type has a field of that name, each
/// carrying its own `@type`; a field that is not a list is a 400, no such field a 404.
fn resource_items(
    configs: Vec<Value>,
    resource: &str,
    mask: Option<&FieldMask>,
) -> Result<Vec<Value>, (StatusCode, String)> {
    for config in configs {
        let Some(message) = message_of(&config) else {
            continue;
        };
        let Some(field) = message.get_field_by_name(resource) else {
            continue;
        };
        let item_type = match field.kind() {
            prost_reflect::Kind::Message(m) if field.is_list() => m,
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{resource} is not a repeated field. Use ?mask={resource} to get only this field"
                    ),
                ));
            }
        };
        let items = match config.get(resource) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let mut typed = serde_json::Map::new();
            typed.insert(
                "@type".into(),
                Value::String(format!("type.googleapis.com/{}", item_type.full_name())),
            );
            if let Value::Object(fields) = item {
                typed.extend(fields);
            }
            let typed = Value::Object(typed);
            out.push(match mask {
                Some(mask) if !mask.fits_item(&item_type, &typed) => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        format!(
                            "FieldMask {} could not be successfully used.",
                            mask.debug_string()
                        ),
                    ));
                }
                Some(mask) => mask.trim(&typed),
                None => typed,
            });
        }
        return Ok(out);
    }
    Err((
        StatusCode::NOT_FOUND,
        format!("{resource} not found in config dump"),
    ))
}

/// The descriptor of a config's `@type`.
fn message_of(config: &Value) -> Option<prost_reflect::MessageDescriptor> {
    let type_url = config.get("@type")?.as_str()?;
    xds_client::proto_json::pool().get_message_by_name(type_url.rsplit('/').next()?)
}

/// `?name_regex=`: which resources (clusters, listeners, route configs, endpoints, secrets, by
/// name) are listed. RE2 in Envoy, matched against the whole name.
pub(crate) struct Names(Option<regex::Regex>);

impl Names {
    fn from_query(query: &Query) -> Result<Names, String> {
        let Some(pattern) = query.get("name_regex").filter(|r| !r.is_empty()) else {
            return Ok(Names(None));
        };
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(|re| Names(Some(re)))
            .map_err(|e| {
                // The crate's message ends with the reason on a line `error: <reason>`.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or(text.as_str())
                    .to_string();
                format!("INVALID_ARGUMENT: Error while parsing name_regex from {pattern}: {reason}")
            })
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|re| re.is_match(name))
    }
}

/// The dump Envoy prints, its configs in Envoy's order (bootstrap, clusters, endpoints with
/// `include_eds`, listeners, scoped routes, routes, secrets), resources filtered by `names`.
fn build(handle: &ServerHandle, include_eds: bool, names: &Names) -> admin::ConfigDump {
    let snapshot = handle.snapshot();
    let info = &handle.info;
    let xds = info.xds.load_full();
    let mut bootstrap = info.bootstrap.clone();
    bootstrap.node = Some(super::node(bootstrap.node.take().unwrap_or_default()));
    let bootstrap = admin::BootstrapConfigDump {
        bootstrap: Some(bootstrap),
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
        if !names.matches(name) {
            continue;
        }
        if entry.added_via_api {
            let active = xds
                .as_ref()
                .and_then(|x| x.clusters.get(name))
                .and_then(|s| s.active.as_ref());
            clusters
                .dynamic_active_clusters
                .push(admin::clusters_config_dump::DynamicCluster {
                    version_info: active.map_or_else(|| version.clone(), |a| a.version.clone()),
                    cluster: Some(pack(&*entry.source)),
                    last_updated: Some(timestamp(
                        active.map_or(entry.last_updated, |a| a.last_updated),
                    )),
                    ..Default::default()
                });
        } else {
            clusters
                .static_clusters
                .push(admin::clusters_config_dump::StaticCluster {
                    cluster: Some(pack(&*entry.source)),
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
        for (name, slot) in xds.clusters.iter() {
            if let Some((warming, _)) = &slot.warming
                && names.matches(name)
            {
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
        if !names.matches(name) {
            continue;
        }
        if statics.contains(&name.as_str()) {
            listeners
                .static_listeners
                .push(admin::listeners_config_dump::StaticListener {
                    listener: Some(pack(&*entry.source)),
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
                        listener: Some(pack(&*entry.source)),
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
    if let Some(xds) = &xds {
        // Listeners that only warm (no active version yet) are listed with their warming state.
        for (name, slot) in xds.listeners.iter() {
            if let (None, Some((w, _))) = (&slot.active, &slot.warming)
                && names.matches(name)
            {
                listeners
                    .dynamic_listeners
                    .push(admin::listeners_config_dump::DynamicListener {
                        name: name.clone(),
                        warming_state: Some(listener_state(&w.source, &w.version, w.last_updated)),
                        ..Default::default()
                    });
            }
        }
    }
    let routes = admin::RoutesConfigDump {
        static_route_configs: inline_route_configs(&snapshot, names),
        dynamic_route_configs: xds
            .iter()
            .flat_map(|x| x.routes.values())
            .filter(|r| names.matches(&r.source.name))
            .map(|r| admin::routes_config_dump::DynamicRouteConfig {
                version_info: r.version.clone(),
                route_config: Some(pack(&*r.source)),
                last_updated: Some(timestamp(r.last_updated)),
                ..Default::default()
            })
            .collect(),
    };
    let mut configs = vec![pack(&bootstrap), pack(&clusters)];
    if include_eds && let Some(endpoints) = endpoints::dump(&snapshot, xds.as_deref(), names) {
        configs.push(pack(&endpoints));
    }
    configs.extend([
        pack(&listeners),
        // Tern has no scoped routes; Envoy lists the section empty all the same.
        pack(&admin::ScopedRoutesConfigDump::default()),
        pack(&routes),
        pack(&secrets(info, xds.as_deref(), names)),
    ]);
    admin::ConfigDump { configs }
}

/// Envoy lists every inline `route_config` of an HTTP connection manager, in any listener, as a
/// static route config: once per filter chain that carries one (Istio's `virtualInbound` repeats
/// `inbound|<port>||` for its plaintext and mTLS chains).
fn inline_route_configs(
    snapshot: &crate::snapshot::Snapshot,
    names: &Names,
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
            if let Some(RouteSpecifier::RouteConfig(routes)) = hcm.route_specifier
                && names.matches(&routes.name)
            {
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
    names: &Names,
) -> admin::SecretsConfigDump {
    use admin::secrets_config_dump::{DynamicSecret, StaticSecret};
    use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    let static_secrets = info
        .bootstrap
        .static_resources
        .iter()
        .flat_map(|s| &s.secrets)
        .filter(|s| names.matches(&s.name))
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
    // Envoy lists its certificate secrets before its validation contexts.
    let mut active: Vec<_> = xds
        .secrets
        .iter()
        .filter(|(key, _)| names.matches(&key.name))
        .collect();
    active.sort_by_key(|(key, r)| {
        let validation = matches!(
            r.config.kind,
            crate::config::secret::SecretKind::Validation(_)
        );
        (validation, *key)
    });
    admin::SecretsConfigDump {
        static_secrets,
        dynamic_active_secrets: active
            .into_iter()
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
            .filter(|(key, _)| !xds.secrets.contains_key(*key) && names.matches(&key.name))
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

/// A time as Envoy's config dump has it: to the millisecond.
fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: (since.subsec_millis() * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_regex_matches_whole_names_and_reports_a_bad_pattern_as_envoy() {
        let query = |re: &str| Query::from([("name_regex".to_string(), re.to_string())]);
        let names = Names::from_query(&query(".*reviews.*")).expect("valid");
        assert!(names.matches("outbound|9080||reviews.default.svc.cluster.local"));
        assert!(!names.matches("ratings"));
        let names = Names::from_query(&query("de")).expect("valid");
        assert!(!names.matches("default"), "RE2 full match, not a search");
        assert!(Names::from_query(&query("")).expect("empty").matches("x"));
        assert_eq!(
            Names::from_query(&query("(")).err().as_deref(),
            Some("INVALID_ARGUMENT: Error while parsing name_regex from (: unclosed group")
        );
    }

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
