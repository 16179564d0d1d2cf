//! Header mutations (`*_headers_to_add` / `*_headers_to_remove`) at route-config, virtual host,
//! route and weighted-cluster level, applied the way Envoy's `HeaderParser` does: removals
//! first, then every add decided against the headers as they stood before any add, then
//! overwrites, then appends.
//!
//! Envoy refuses to add or remove `:`-pseudo-headers and `host` this way (the route action owns
//! path and authority rewrites); so do we. Values are literals: Envoy's `%COMMAND%` substitution
//! formatters are not implemented, so a value using one is rejected rather than sent verbatim
//! (`%%` is an escaped `%` and is accepted).

use super::err;
use crate::config::ConfigError;
use http::{HeaderMap, HeaderName, HeaderValue};
use xds_client::pb::envoy::config::core::v3 as core;

/// Header mutations for one level of the route configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    pub request_add: Vec<HeaderAdd>,
    pub request_remove: Vec<HeaderName>,
    pub response_add: Vec<HeaderAdd>,
    pub response_remove: Vec<HeaderName>,
}

/// One header to add.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderAdd {
    pub name: HeaderName,
    pub value: String,
    pub action: AppendAction,
    /// Add the header even when the value is empty (Envoy drops empty values by default).
    pub keep_empty_value: bool,
    encoded: HeaderValue,
}

/// `HeaderValueOption.append_action`, or the legacy `append` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Add another value if the header exists, else add it (the default).
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

impl HeaderAdd {
    /// A header to add; `Err` when the value is not a valid header value (control characters;
    /// UTF-8 beyond ASCII is allowed, as in Envoy).
    pub fn new(
        name: HeaderName,
        value: impl Into<String>,
        action: AppendAction,
        keep_empty_value: bool,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let value = value.into();
        let encoded = HeaderValue::from_bytes(value.as_bytes())?;
        Ok(Self {
            name,
            value,
            action,
            keep_empty_value,
            encoded,
        })
    }
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }

    /// Applies the request-side mutations.
    pub fn apply_request(&self, headers: &mut HeaderMap) {
        apply(&self.request_add, &self.request_remove, headers);
    }

    /// Applies the response-side mutations.
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        apply(&self.response_add, &self.response_remove, headers);
    }

    pub(super) fn from_proto(
        request_add: &[core::HeaderValueOption],
        request_remove: &[String],
        response_add: &[core::HeaderValueOption],
        response_remove: &[String],
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            request_add: adds(request_add, "request_headers_to_add")?,
            request_remove: removes(request_remove, "request_headers_to_remove")?,
            response_add: adds(response_add, "response_headers_to_add")?,
            response_remove: removes(response_remove, "response_headers_to_remove")?,
        })
    }
}

/// What an add does, decided before any add is applied.
#[derive(Clone, Copy, PartialEq)]
enum Effect {
    Skip,
    Overwrite,
    Append,
}

fn effect(add: &HeaderAdd, headers: &HeaderMap) -> Effect {
    if add.value.is_empty() && !add.keep_empty_value {
        return Effect::Skip;
    }
    let present = || headers.contains_key(&add.name);
    match add.action {
        AppendAction::AppendIfExistsOrAdd => Effect::Append,
        AppendAction::AddIfAbsent if present() => Effect::Skip,
        AppendAction::AddIfAbsent => Effect::Append,
        AppendAction::OverwriteIfExists if !present() => Effect::Skip,
        AppendAction::OverwriteIfExists | AppendAction::OverwriteIfExistsOrAdd => Effect::Overwrite,
    }
}

fn apply(adds: &[HeaderAdd], removes: &[HeaderName], headers: &mut HeaderMap) {
    for name in removes {
        headers.remove(name);
    }
    if adds.is_empty() {
        return;
    }
    // Decide every add against the same snapshot, without allocating for the usual short list.
    let mut inline = [Effect::Skip; 16];
    let mut spilled = Vec::new();
    let effects: &mut [Effect] = if adds.len() <= inline.len() {
        &mut inline[..adds.len()]
    } else {
        spilled.resize(adds.len(), Effect::Skip);
        &mut spilled
    };
    for (slot, add) in effects.iter_mut().zip(adds) {
        *slot = effect(add, headers);
    }
    for (add, e) in adds.iter().zip(effects.iter()) {
        if *e == Effect::Overwrite {
            headers.insert(add.name.clone(), add.encoded.clone());
        }
    }
    for (add, e) in adds.iter().zip(effects.iter()) {
        if *e == Effect::Append {
            headers.append(add.name.clone(), add.encoded.clone());
        }
    }
}

/// Envoy's rule for `*_headers_to_add` and `*_headers_to_remove` names.
fn modifiable_name(key: &str) -> Result<HeaderName, String> {
    let lower = key.to_ascii_lowercase();
    if lower.starts_with(':') || lower == "host" {
        return Err(":-prefixed or host headers may not be modified".into());
    }
    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| format!("invalid header name {key:?}"))
}

fn removes(names: &[String], field: &str) -> Result<Vec<HeaderName>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| modifiable_name(n).map_err(|r| err(format!("{field}[{i}]"), r)))
        .collect()
}

fn adds(options: &[core::HeaderValueOption], field: &str) -> Result<Vec<HeaderAdd>, ConfigError> {
    options
        .iter()
        .enumerate()
        .map(|(i, o)| add(o).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

// `append` is deprecated in favour of `append_action` but still what most control planes send.
#[allow(deprecated)]
fn add(option: &core::HeaderValueOption) -> Result<HeaderAdd, ConfigError> {
    use core::header_value_option::HeaderAppendAction as P;
    let header = option
        .header
        .as_ref()
        .ok_or_else(|| err("header", "is required"))?;
    let name = modifiable_name(&header.key).map_err(|r| err("header.key", r))?;
    let raw = if header.raw_value.is_empty() {
        header.value.as_str()
    } else if !header.value.is_empty() {
        return Err(err("header", "only one of value or raw_value may be set"));
    } else {
        std::str::from_utf8(&header.raw_value)
            .map_err(|_| err("header.raw_value", "non-UTF-8 values are not supported"))?
    };
    let value = literal(raw).map_err(|r| err("header.value", r))?;
    let action = if let Some(append) = &option.append {
        if option.append_action != P::AppendIfExistsOrAdd as i32 {
            return Err(err(
                "append_action",
                "append and append_action may not both be set",
            ));
        }
        if append.value {
            AppendAction::AppendIfExistsOrAdd
        } else {
            AppendAction::OverwriteIfExistsOrAdd
        }
    } else {
        match P::try_from(option.append_action) {
            Ok(P::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(P::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(P::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(P::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(err(
                    "append_action",
                    format!("unknown action {}", option.append_action),
                ));
            }
        }
    };
    HeaderAdd::new(name, value, action, option.keep_empty_value)
        .map_err(|_| err("header.value", "not a valid header value"))
}

/// The literal a header value stands for: `%%` is `%`; any other `%` starts a substitution
/// command, which we do not implement.
fn literal(value: &str) -> Result<String, String> {
    if !value.contains('%') {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        if rest[at + 1..].starts_with('%') {
            out.push('%');
            rest = &rest[at + 2..];
        } else {
            return Err(format!(
                "substitution formatters (%COMMAND%) are not supported in {value:?}"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}
