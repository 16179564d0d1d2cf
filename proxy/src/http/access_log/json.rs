//! `json_format`: a `google.protobuf.Struct` whose string values are format strings, rendered
//! as one compact JSON object per line, keys sorted as Envoy sorts them.
//!
//! A value that is a lone operator keeps its type (`%RESPONSE_CODE%` is a number, a missing
//! header is `null`); a value mixing text and operators is a string, with `-` for "not set".
//! Strings without `%`, numbers, booleans and nulls in the config are copied as they are. With
//! `omit_empty_values`, null members and list items are dropped, and so is a nested object left
//! with no members; the root object is always written.

use super::LogRecord;
use super::format::{Commands, Template};
use serde_json::{Map, Number, Value};
use xds_client::pb::google::protobuf::{self as pb, value::Kind};

/// A parsed `json_format`.
#[derive(Debug, Clone)]
pub(super) struct JsonFormat {
    root: Vec<(String, Node)>,
    omit_empty: bool,
}

#[derive(Debug, Clone)]
enum Node {
    Object(Vec<(String, Node)>),
    List(Vec<Node>),
    Constant(Value),
    Template(Template),
}

impl JsonFormat {
    /// Parses every format string in `format`; `path` names the field in errors.
    pub(super) fn parse(
        format: &pb::Struct,
        omit_empty: bool,
        commands: Commands,
        path: &str,
    ) -> Result<Self, String> {
        Ok(JsonFormat {
            root: object(format, commands, path)?,
            omit_empty,
        })
    }

    /// One line: the object and a newline.
    pub(super) fn render(&self, record: &LogRecord) -> String {
        let root = self.object(&self.root, record);
        let mut line = serde_json::to_string(&Value::Object(root)).unwrap_or_default();
        line.push('\n');
        line
    }

    fn object(&self, members: &[(String, Node)], record: &LogRecord) -> Map<String, Value> {
        members
            .iter()
            .filter_map(|(key, node)| Some((key.clone(), self.eval(node, record)?)))
            .collect()
    }

    /// The value of `node`, or `None` when `omit_empty_values` drops it.
    fn eval(&self, node: &Node, record: &LogRecord) -> Option<Value> {
        let value = match node {
            Node::Constant(value) => value.clone(),
            Node::Template(template) => template.json_value(record, self.omit_empty),
            Node::List(items) => Value::Array(
                items
                    .iter()
                    .filter_map(|item| self.eval(item, record))
                    .collect(),
            ),
            Node::Object(members) => {
                let map = self.object(members, record);
                if self.omit_empty && map.is_empty() {
                    return None;
                }
                Value::Object(map)
            }
        };
        (!(self.omit_empty && value.is_null())).then_some(value)
    }
}

fn object(s: &pb::Struct, commands: Commands, path: &str) -> Result<Vec<(String, Node)>, String> {
    let mut members = s
        .fields
        .iter()
        .map(|(key, value)| {
            Ok((
                key.clone(),
                node(value, commands, &format!("{path}.{key}"))?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(members)
}

fn node(value: &pb::Value, commands: Commands, path: &str) -> Result<Node, String> {
    Ok(match &value.kind {
        Some(Kind::StringValue(s)) if s.contains('%') => {
            Node::Template(Template::parse(s, commands).map_err(|e| format!("{path}: {e}"))?)
        }
        Some(Kind::StringValue(s)) => Node::Constant(Value::String(s.clone())),
        Some(Kind::NumberValue(n)) => Node::Constant(number(*n)),
        Some(Kind::BoolValue(b)) => Node::Constant(Value::Bool(*b)),
        Some(Kind::NullValue(_)) | None => Node::Constant(Value::Null),
        Some(Kind::StructValue(s)) => Node::Object(object(s, commands, path)?),
        Some(Kind::ListValue(list)) => Node::List(
            list.values
                .iter()
                .enumerate()
                .map(|(i, v)| node(v, commands, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A config number as Envoy prints it: whole numbers without a fraction, NaN and infinities
/// as null.
fn number(n: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() < EXACT {
        // In range and whole, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(n as i64);
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}
