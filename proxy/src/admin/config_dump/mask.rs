//! `/config_dump?mask=`: a `google.protobuf.FieldMask` applied to the dump as Envoy applies it.
//!
//! Envoy checks every path against the message's descriptor before trimming (a path is field
//! names joined by `.`, every one but the last a singular message field) and then keeps only the
//! named fields. Without `?resource=` the mask applies to each config as a whole and a config it
//! does not fit is left out; with `?resource=` it applies to each listed item, where a path may
//! go on into the item's one `Any` field (`cluster.name`), and a path that does not fit is a 400.
//!
//! The dump is JSON here (proto field names, every `Any` inline with its `@type`), so trimming is
//! done on the JSON, while the checks use the descriptors the JSON was printed from.

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::Value;

/// The paths of a `?mask=` value, as `FieldMaskUtil::FromString` splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMask {
    /// The value as given, for Envoy's error text.
    pub text: String,
    pub paths: Vec<String>,
}

impl FieldMask {
    pub fn parse(text: &str) -> FieldMask {
        FieldMask {
            text: text.to_string(),
            paths: text
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// The mask as protobuf's `DebugString` prints a `FieldMask`, which Envoy puts in its error
    /// text (`goo.gle/debugproto` is protobuf's marker that the format is not to be parsed).
    pub fn debug_string(&self) -> String {
        let mut out = "goo.gle/debugproto  \n".to_string();
        for path in &self.paths {
            out.push_str(&format!("paths: {path:?}\n"));
        }
        out
    }

    /// Whether every path names a field of `message` (protobuf's `GetFieldDescriptors`).
    pub fn fits(&self, message: &MessageDescriptor) -> bool {
        self.paths.iter().all(|p| path_fits(message, p))
    }

    /// Envoy's `trimResourceMessage` check for one item of `?resource=`: a path whose first
    /// field is the item's singular `Any` goes on in the packed message's type (when the item
    /// has one), every other path must fit the item's own type.
    pub fn fits_item(&self, message: &MessageDescriptor, item: &Value) -> bool {
        self.paths.iter().all(|path| {
            let (first, rest) = path.split_once('.').unwrap_or((path, ""));
            let any = message.get_field_by_name(first).filter(|f| {
                !f.is_list()
                    && !f.is_map()
                    && matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Any")
            });
            if any.is_none() {
                return path_fits(message, path);
            }
            let Some(packed) = item.get(first) else {
                return true;
            };
            packed
                .get("@type")
                .and_then(Value::as_str)
                .and_then(|url| url.rsplit('/').next())
                .and_then(|name| message.parent_pool().get_message_by_name(name))
                .is_some_and(|inner| path_fits(&inner, rest))
        })
    }

    /// Keeps only the masked fields of `value` (and the `@type` of every message on the way, so
    /// an `Any` still reads as one).
    pub fn trim(&self, value: &Value) -> Value {
        let split: Vec<Vec<&str>> = self.paths.iter().map(|p| p.split('.').collect()).collect();
        trim(value, &split.iter().map(Vec::as_slice).collect::<Vec<_>>())
    }
}

fn path_fits(message: &MessageDescriptor, path: &str) -> bool {
    let mut current = message.clone();
    let mut fields = path.split('.').peekable();
    while let Some(name) = fields.next() {
        let Some(field) = current.get_field_by_name(name) else {
            return false;
        };
        if fields.peek().is_none() {
            return true;
        }
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
            _ => return false,
        }
    }
    false
}

fn trim(value: &Value, paths: &[&[&str]]) -> Value {
    let Value::Object(fields) = value else {
        return value.clone();
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(name: &str) -> MessageDescriptor {
        xds_client::proto_json::pool()
            .get_message_by_name(name)
            .expect("descriptor")
    }

    #[test]
    fn paths_must_name_fields_through_singular_messages() {
        let bootstrap = message("envoy.admin.v3.BootstrapConfigDump");
        let clusters = message("envoy.admin.v3.ClustersConfigDump");
        assert!(FieldMask::parse("bootstrap.node.id").fits(&bootstrap));
        assert!(FieldMask::parse("bootstrap,last_updated").fits(&bootstrap));
        assert!(!FieldMask::parse("bootstrap.nope").fits(&bootstrap));
        assert!(!FieldMask::parse("static_clusters").fits(&bootstrap));
        assert!(FieldMask::parse("static_clusters,version_info").fits(&clusters));
        // A repeated field cannot be indexed through.
        assert!(!FieldMask::parse("static_clusters.cluster").fits(&clusters));
    }

    #[test]
    fn an_item_mask_goes_into_its_any_only_when_the_item_has_one() {
        let item_type = message("envoy.admin.v3.ClustersConfigDump.DynamicCluster");
        let item = json!({"cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a"}});
        assert!(FieldMask::parse("cluster.name,last_updated").fits_item(&item_type, &item));
        assert!(!FieldMask::parse("cluster.nope").fits_item(&item_type, &item));
        // The Any itself with nothing after it names no field of the packed type (Envoy: 400).
        assert!(!FieldMask::parse("cluster").fits_item(&item_type, &item));
        assert!(FieldMask::parse("cluster.nope").fits_item(&item_type, &json!({})));
        let listener = message("envoy.admin.v3.ListenersConfigDump.DynamicListener");
        assert!(FieldMask::parse("active_state.listener").fits_item(&listener, &json!({})));
        assert!(!FieldMask::parse("active_state.listener.name").fits_item(&listener, &json!({})));
    }

    #[test]
    fn trim_keeps_the_masked_fields_and_every_type_on_the_way() {
        let item = json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
            "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a", "type": "STATIC"},
            "last_updated": "2026-01-01T00:00:00Z"
        });
        assert_eq!(
            FieldMask::parse("cluster.name").trim(&item),
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
                "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a"}
            })
        );
    }

    #[test]
    fn debug_string_is_protobufs() {
        assert_eq!(
            FieldMask::parse("cluster.name,nope").debug_string(),
            "goo.gle/debugproto  \npaths: \"cluster.name\"\npaths: \"nope\"\n"
        );
    }
}
