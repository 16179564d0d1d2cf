//! `google.protobuf.Any` helpers.
//!
//! `envoy-types` generates its own well-known types, so `prost_types::Any::to_msg` does not apply;
//! these helpers do the same over [`prost::Name`]. A `typed_config` may also arrive as a
//! `TypedStruct` (the JSON form of an extension config); [`type_url`] sees through it so callers
//! dispatch on the real extension type.

use crate::pb::google::protobuf::Any;
use crate::pb::google::protobuf::Struct;
use prost::{Message, Name};

/// Type URL of `udpa.type.v1.TypedStruct`.
pub const UDPA_TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
/// Type URL of `xds.type.v3.TypedStruct`.
pub const XDS_TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";

/// `udpa.type.v1.TypedStruct` and `xds.type.v3.TypedStruct` (identical on the wire): an extension
/// config given as a JSON struct plus the type it stands for. `envoy-types` does not generate it.
#[derive(Clone, PartialEq, Message)]
pub struct TypedStruct {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Struct>,
}

/// Why an `Any` could not be unpacked into the expected message.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("expected {expected}, got {actual}")]
    WrongType { expected: String, actual: String },
    #[error("cannot decode {type_url}: {source}")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// Packs a message into an `Any` with its canonical type URL.
pub fn pack<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Unpacks an `Any` of exactly type `M`.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Result<M, UnpackError> {
    if any.type_url != M::type_url() {
        return Err(UnpackError::WrongType {
            expected: M::type_url(),
            actual: any.type_url.clone(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|source| UnpackError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

/// The extension type an `Any` carries, looking through a `TypedStruct` wrapper.
///
/// A TypedStruct that fails to decode reports its own type URL, so the caller rejects it by name.
pub fn type_url(any: &Any) -> String {
    match any.type_url.as_str() {
        UDPA_TYPED_STRUCT | XDS_TYPED_STRUCT => TypedStruct::decode(any.value.as_slice())
            .map(|t| t.type_url)
            .unwrap_or_else(|_| any.type_url.clone()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::envoy::config::core::v3::Node;

    #[test]
    fn pack_then_unpack_round_trips() {
        let node = Node {
            id: "sidecar~1.2.3.4~a.b~b.svc.cluster.local".into(),
            ..Default::default()
        };
        let any = pack(&node);
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.config.core.v3.Node"
        );
        assert_eq!(unpack::<Node>(&any).unwrap(), node);
    }

    #[test]
    fn unpack_rejects_other_type_by_name() {
        let any = Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![],
        };
        let err = unpack::<Node>(&any).unwrap_err().to_string();
        assert_eq!(
            err,
            "expected type.googleapis.com/envoy.config.core.v3.Node, got type.googleapis.com/x.Y"
        );
    }

    #[test]
    fn type_url_sees_through_typed_struct() {
        let ts = TypedStruct {
            type_url: "type.googleapis.com/io.istio.http.peer_metadata.Config".into(),
            value: None,
        };
        let any = Any {
            type_url: UDPA_TYPED_STRUCT.into(),
            value: ts.encode_to_vec(),
        };
        assert_eq!(
            type_url(&any),
            "type.googleapis.com/io.istio.http.peer_metadata.Config"
        );
    }
}
