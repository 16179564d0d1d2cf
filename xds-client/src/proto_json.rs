//! The proto3 JSON (and YAML) mapping for Envoy's v3 API, done once over descriptors.
//!
//! Envoy reads its bootstrap, `--config-yaml` and test fixtures as proto3 JSON/YAML and prints
//! `/config_dump` the same way. Rather than hand-writing serde structs that drift from the protos,
//! we keep the protos' descriptors (`proto/envoy.desc`, the descriptor set `envoy-types` was
//! generated from, comments stripped) and let `prost-reflect` do the mapping:
//!
//! ```text
//! JSON/YAML text -> serde_json::Value -> (TypedStruct / unknown-Any rewrite) -> DynamicMessage
//!                -> protobuf bytes -> envoy-types struct
//! ```
//!
//! so camelCase and snake_case names, `"@type"` Anys, `"1.5s"` durations, wrappers and enums by
//! name all follow the standard mapping. Two Envoy-specific rules are added on top:
//! - a `TypedStruct` whose inner type we know is unwrapped into that type (Envoy does the same);
//! - an Any of a type we have no descriptor for is kept as a `udpa.type.v1.TypedStruct` holding
//!   its JSON, so it survives into the config, where the extension registry decides whether it is
//!   a no-op or a rejection. (Istio's typed extension configs, `istio.alpn` and `istio.stats`,
//!   have descriptors: istiod sends them as binary protos, which `/config_dump` must print.)
//!
//! The decoded descriptor pool is about 10 MB of heap, more than the rest of an idle sidecar, and
//! is needed only now and then: to read the bootstrap, and to print admin JSON. So it is not kept
//! for the life of the process. A holder thread builds it on demand, hands out clones, and after
//! [`POOL_IDLE`] without a request drops it and ends; the next request starts a new holder.
//! Building and dropping the pool on a thread of its own keeps its memory in that thread's malloc
//! arena (glibc gives each thread one) with nothing long-lived beside it, so when the thread ends
//! the pages go back to the OS instead of staying resident between other allocations.

use crate::any::UDPA_TYPED_STRUCT;
use prost::{Message, Name};
use prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, field_descriptor_proto,
};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// The descriptor set the `envoy-types` crate was generated from (source info stripped).
static ENVOY_DESCRIPTORS: &[u8] = include_bytes!("../proto/envoy.desc");

/// The Istio extension configs istiod sends as typed protos rather than `TypedStruct`s
/// (`istio.alpn`'s `FilterConfig`, `istio.stats`' `stats.PluginConfig`), from istio/api.
static ISTIO_DESCRIPTORS: &[u8] = include_bytes!("../proto/istio.desc");

/// How long the descriptor thread keeps the pool after the last request for it.
pub const POOL_IDLE: Duration = Duration::from_secs(10);

/// Requests to the descriptor thread: each carries where to send the pool.
static KEEPER: OnceLock<Option<mpsc::Sender<PoolRequest>>> = OnceLock::new();

/// A failure to map JSON/YAML to a message, or a message to JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    #[error("no descriptor for message type {0}")]
    UnknownMessage(String),
    #[error("cannot re-decode {type_name}: {source}")]
    Decode {
        type_name: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("cannot encode {type_name} as JSON: {message}")]
    Encode { type_name: String, message: String },
}

/// How strictly to read JSON into a message.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Ignore fields the schema does not know (Envoy's `--allow-unknown-static-fields`).
    pub allow_unknown_fields: bool,
}

/// The descriptor pool: Envoy's v3 API, the `TypedStruct` wrappers and Istio's typed extension
/// configs. Cheap to clone; fetch it once per piece of work rather than per lookup.
pub fn pool() -> DescriptorPool {
    let dispatcher = KEEPER.get_or_init(|| {
        let (requests, inbox) = mpsc::channel();
        std::thread::Builder::new()
            .name("proto-descriptors".into())
            .spawn(move || dispatch(inbox, POOL_IDLE))
            .ok()
            .map(|_| requests)
    });
    let (reply, answer) = mpsc::channel();
    match dispatcher {
        Some(requests) if requests.send(reply).is_ok() => {
            answer.recv().unwrap_or_else(|_| build_pool())
        }
        // No descriptor thread (it could not be spawned, or a request was lost to a holder
        // that was just retiring): build one for this caller alone.
        _ => build_pool(),
    }
}

type PoolRequest = mpsc::Sender<DescriptorPool>;

/// The descriptor thread: passes each request to the current holder thread, starting a new
/// one when the last has retired.
fn dispatch(inbox: mpsc::Receiver<PoolRequest>, idle: Duration) {
    let mut holder: Option<mpsc::Sender<PoolRequest>> = None;
    for request in inbox {
        let request = match &holder {
            Some(current) => match current.send(request) {
                Ok(()) => continue,
                // That holder retired: start another.
                Err(mpsc::SendError(request)) => request,
            },
            None => request,
        };
        let (to_holder, holder_inbox) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("proto-pool".into())
            .spawn(move || hold_pool(holder_inbox, idle));
        if spawned.is_ok() && to_holder.send(request).is_ok() {
            holder = Some(to_holder);
        }
        // Else the request is dropped and its caller builds a pool of its own.
    }
}

/// A holder thread: builds the pool, answers requests with clones until `idle` passes without
/// one, then drops it and ends. The pool's memory is in this thread's malloc arena; ending the
/// thread hands its cached free chunks back to the arena, which lets glibc coalesce and return
/// the pages (a pool dropped by a thread that lives on stays resident, pinned by the chunks that
/// thread caches).
fn hold_pool(inbox: mpsc::Receiver<PoolRequest>, idle: Duration) {
    let pool = build_pool();
    if idle.is_zero() {
        // Kept for no time at all: one answer, then retire.
        if let Ok(request) = inbox.recv() {
            let _ = request.send(pool.clone());
        }
        return;
    }
    while let Ok(request) = inbox.recv_timeout(idle) {
        // The caller may have gone; nothing to do then.
        let _ = request.send(pool.clone());
    }
}

fn build_pool() -> DescriptorPool {
    // The embedded set is generated at build time of envoy-types and checked by the tests below;
    // failing here means the file in the repository is corrupt, which no input can cause.
    #[allow(clippy::expect_used)]
    let mut pool = DescriptorPool::decode(ENVOY_DESCRIPTORS)
        .expect("proto/envoy.desc is a valid descriptor set");
    for (file, package) in [
        ("udpa/type/v1/typed_struct.proto", "udpa.type.v1"),
        ("xds/type/v3/typed_struct.proto", "xds.type.v3"),
    ] {
        #[allow(clippy::expect_used)]
        pool.add_file_descriptor_proto(typed_struct_file(file, package))
            .expect("TypedStruct descriptor is well formed");
    }
    #[allow(clippy::expect_used)]
    pool.decode_file_descriptor_set(ISTIO_DESCRIPTORS)
        .expect("proto/istio.desc is a valid descriptor set over Envoy's well-known types");
    pool
}

/// `message TypedStruct { string type_url = 1; google.protobuf.Struct value = 2; }`
fn typed_struct_file(name: &str, package: &str) -> FileDescriptorProto {
    let field = |name: &str, number, ty, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(field_descriptor_proto::Label::Optional as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(Into::into),
        json_name: Some(to_camel(name)),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some(name.into()),
        package: Some(package.into()),
        dependency: vec!["google/protobuf/struct.proto".into()],
        message_type: vec![DescriptorProto {
            name: Some("TypedStruct".into()),
            field: vec![
                field("type_url", 1, field_descriptor_proto::Type::String, None),
                field(
                    "value",
                    2,
                    field_descriptor_proto::Type::Message,
                    Some(".google.protobuf.Struct"),
                ),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

fn to_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses text as JSON or YAML. `hint` is a file name: `.json` means JSON, `.yaml`/`.yml` YAML,
/// anything else tries JSON first and then YAML (YAML is a superset, but JSON errors read better).
pub fn parse_text(text: &str, hint: &str) -> Result<Value, JsonError> {
    let yaml = |text: &str| {
        serde_yaml_ng::from_str::<Value>(text).map_err(|e| JsonError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })
    };
    let json = |text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| JsonError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })
    };
    if hint.ends_with(".yaml") || hint.ends_with(".yml") {
        yaml(text)
    } else if hint.ends_with(".json") {
        json(text)
    } else {
        json(text).or_else(|json_err| yaml(text).map_err(|_| json_err))
    }
}

/// Reads a message of type `M` from a JSON value.
pub fn from_value<M: Message + Name + Default>(
    mut value: Value,
    options: ReadOptions,
) -> Result<M, JsonError> {
    let type_name = M::full_name();
    let pool = pool();
    let desc = pool
        .get_message_by_name(&type_name)
        .ok_or_else(|| JsonError::UnknownMessage(type_name.clone()))?;
    rewrite_anys(&pool, &mut value);
    let deserialize_options =
        DeserializeOptions::new().deny_unknown_fields(!options.allow_unknown_fields);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&value, &mut track);
    let dynamic =
        DynamicMessage::deserialize_with_options(desc, deserializer, &deserialize_options)
            .map_err(|e| JsonError::Field {
                path: display_path(&track.path()),
                message: short_message(&e.to_string()),
            })?;
    M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|source| JsonError::Decode { type_name, source })
}

/// Reads a message of type `M` from JSON or YAML text (see [`parse_text`] for `hint`).
pub fn from_text<M: Message + Name + Default>(
    text: &str,
    hint: &str,
    options: ReadOptions,
) -> Result<M, JsonError> {
    from_value(parse_text(text, hint)?, options)
}

/// Writes a message as JSON the way Envoy's admin does: proto field names, defaults omitted.
pub fn to_value<M: Message + Name>(msg: &M) -> Result<Value, JsonError> {
    write_value(msg, true)
}

/// Like [`to_value`] but printing default-valued fields too, as Envoy's `/server_info` does.
pub fn to_value_with_defaults<M: Message + Name>(msg: &M) -> Result<Value, JsonError> {
    write_value(msg, false)
}

fn write_value<M: Message + Name>(msg: &M, skip_defaults: bool) -> Result<Value, JsonError> {
    let type_name = M::full_name();
    let desc = pool()
        .get_message_by_name(&type_name)
        .ok_or_else(|| JsonError::UnknownMessage(type_name.clone()))?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|source| {
            JsonError::Decode {
                type_name: type_name.clone(),
                source,
            }
        })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(skip_defaults);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| JsonError::Encode {
            type_name,
            message: e.to_string(),
        })
}

/// serde's "unknown field `x`, expected one of `a`, `b`, ..." lists every field of the message;
/// one line naming the field is what a user needs.
fn short_message(message: &str) -> String {
    match message.find(", expected one of") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        "(top level)".to_string()
    } else {
        text
    }
}

/// Applies the two Any rules from the module doc, bottom-up over the whole tree.
fn rewrite_anys(pool: &DescriptorPool, value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_anys(pool, item)),
        Value::Object(map) => {
            map.values_mut().for_each(|item| rewrite_anys(pool, item));
            if let Some(rewritten) = rewrite_any(pool, map) {
                *map = rewritten;
            }
        }
        _ => {}
    }
}

fn rewrite_any(pool: &DescriptorPool, map: &Map<String, Value>) -> Option<Map<String, Value>> {
    let type_url = map.get("@type")?.as_str()?;
    if is_typed_struct(type_url) {
        let inner = map
            .get("type_url")
            .or_else(|| map.get("typeUrl"))?
            .as_str()?;
        if !known_type(pool, inner) {
            return None;
        }
        let mut out = match map.get("value") {
            Some(Value::Object(fields)) => fields.clone(),
            _ => Map::new(),
        };
        out.insert("@type".into(), Value::String(inner.to_string()));
        return Some(out);
    }
    if known_type(pool, type_url) {
        return None;
    }
    let mut fields = map.clone();
    fields.remove("@type");
    let mut out = Map::new();
    out.insert("@type".into(), Value::String(UDPA_TYPED_STRUCT.into()));
    out.insert("type_url".into(), Value::String(type_url.to_string()));
    out.insert("value".into(), Value::Object(fields));
    Some(out)
}

fn is_typed_struct(type_url: &str) -> bool {
    matches!(
        type_name_of(type_url),
        "udpa.type.v1.TypedStruct" | "xds.type.v3.TypedStruct"
    )
}

fn known_type(pool: &DescriptorPool, type_url: &str) -> bool {
    pool.get_message_by_name(type_name_of(type_url)).is_some()
}

fn type_name_of(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests;
