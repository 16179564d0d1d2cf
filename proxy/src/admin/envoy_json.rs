//! Admin JSON laid out as Envoy prints it, so a dump can be compared with Envoy's byte for byte.
//!
//! The admin handlers build `serde_json::Value`s (from the real admin protos, then redacted or
//! masked), whose maps are sorted by key. Envoy prints with protobuf's JSON printer: fields in
//! the order the message declares them, `@type` first in an `Any`, one space of indentation,
//! `<` and `>` escaped. This printer walks the value beside the message's descriptor (from the
//! handler's root type, then each `Any`'s `@type`) to restore that order; maps and `Struct`s have
//! no declared order and keep the value's (protobuf's is unspecified too).

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use serde_json::Value;

/// `value` (a `type_name` message as JSON) as Envoy prints it, with a final newline.
pub fn to_string(value: &Value, type_name: &str) -> String {
    let pool = xds_client::proto_json::pool();
    let message = pool.get_message_by_name(type_name);
    let mut out = String::new();
    write(&pool, &mut out, value, message.as_ref(), 0);
    out.push('\n');
    out
}

fn write(
    pool: &DescriptorPool,
    out: &mut String,
    value: &Value,
    message: Option<&MessageDescriptor>,
    depth: usize,
) {
    match value {
        Value::Object(fields) => write_object(pool, out, fields, message, depth),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, depth + 1);
                write(pool, out, item, message, depth + 1);
            }
            out.push('\n');
            indent(out, depth);
            out.push(']');
        }
        Value::String(s) => write_string(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn write_object(
    pool: &DescriptorPool,
    out: &mut String,
    fields: &serde_json::Map<String, Value>,
    message: Option<&MessageDescriptor>,
    depth: usize,
) {
    if fields.is_empty() {
        out.push_str("{}");
        return;
    }
    // An Any names its own type; a well-known type printed inline has no declared layout here.
    let packed = fields
        .get("@type")
        .and_then(Value::as_str)
        .and_then(|url| url.rsplit('/').next())
        .and_then(|name| pool.get_message_by_name(name));
    let message = packed.as_ref().or(message);
    let mut keys: Vec<(&String, Option<MessageDescriptor>)> = Vec::with_capacity(fields.len());
    if fields.contains_key("@type") {
        keys.push((
            fields
                .get_key_value("@type")
                .map(|(k, _)| k)
                .expect("present"),
            None,
        ));
    }
    match message {
        Some(message) if !message.is_map_entry() && !is_struct(message) => {
            for field in message.fields() {
                if let Some((key, _)) = fields.get_key_value(field.name()) {
                    let inner = match field.kind() {
                        // A map's object is laid out by its entry type (values keep theirs).
                        Kind::Message(m) => Some(m),
                        _ => None,
                    };
                    keys.push((key, inner));
                }
            }
            // Whatever the descriptor does not name (nothing, normally) goes last.
            for key in fields.keys() {
                if key != "@type" && message.get_field_by_name(key).is_none() {
                    keys.push((key, None));
                }
            }
        }
        _ => {
            let value_type = message.and_then(map_value_message);
            keys.extend(
                fields
                    .keys()
                    .filter(|k| *k != "@type")
                    .map(|k| (k, value_type.clone())),
            );
        }
    }
    out.push('{');
    for (i, (key, inner)) in keys.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        indent(out, depth + 1);
        write_string(out, key);
        out.push_str(": ");
        write(pool, out, &fields[key.as_str()], inner.as_ref(), depth + 1);
    }
    out.push('\n');
    indent(out, depth);
    out.push('}');
}

fn is_struct(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue"
    )
}

/// For a map field's entry type (or a map entry itself), the message type of its values.
fn map_value_message(message: &MessageDescriptor) -> Option<MessageDescriptor> {
    if !message.is_map_entry() {
        return None;
    }
    match message.map_entry_value_field().kind() {
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

fn indent(out: &mut String, depth: usize) {
    out.extend(std::iter::repeat_n(' ', depth));
}

/// A JSON string as protobuf escapes it (`<` and `>` as `\u003c`, `\u003e`).
fn write_string(out: &mut String, s: &str) {
    let quoted = Value::String(s.to_string()).to_string();
    out.push_str(&quoted.replace('<', "\\u003c").replace('>', "\\u003e"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_print_in_declaration_order_with_one_space() {
        let value = json!({"cluster_statuses": [{
            "observability_name": "a;",
            "name": "a",
            "added_via_api": true,
            "host_statuses": [{"weight": 1, "address": {"pipe": {"path": "/s"}}, "locality": {}}]
        }]});
        assert_eq!(
            to_string(&value, "envoy.admin.v3.Clusters"),
            "{\n \"cluster_statuses\": [\n  {\n   \"name\": \"a\",\n   \"added_via_api\": true,\n   \"host_statuses\": [\n    {\n     \"address\": {\n      \"pipe\": {\n       \"path\": \"/s\"\n      }\n     },\n     \"weight\": 1,\n     \"locality\": {}\n    }\n   ],\n   \"observability_name\": \"a;\"\n  }\n ]\n}\n"
        );
    }

    #[test]
    fn an_any_is_laid_out_by_its_own_type_and_strings_escape_angle_brackets() {
        let value = json!({"configs": [{
            "static_clusters": [],
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "version_info": "<v>"
        }]});
        assert_eq!(
            to_string(&value, "envoy.admin.v3.ConfigDump"),
            "{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.ClustersConfigDump\",\n   \"version_info\": \"\\u003cv\\u003e\",\n   \"static_clusters\": []\n  }\n ]\n}\n"
        );
    }
}
