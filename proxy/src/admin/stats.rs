//! `/stats` (Envoy's text and JSON forms, `usedonly`, `filter`) and `/stats/prometheus`.

use super::{Body, Query, json, text};
use crate::server::ServerHandle;
use crate::stats::Sample;
use http::{Response, StatusCode};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The stats a request asks for, or a 400 response for a bad `filter` regex.
fn selected(handle: &ServerHandle, query: &Query) -> Result<Vec<Sample>, Box<Response<Body>>> {
    refresh_server_gauges(handle);
    let filter = match query.get("filter").filter(|f| !f.is_empty()) {
        Some(pattern) => Some(regex::Regex::new(pattern).map_err(|e| {
            Box::new(text(
                StatusCode::BAD_REQUEST,
                format!("Invalid re2 regex: {e}\n"),
            ))
        })?),
        None => None,
    };
    let used_only = query.contains_key("usedonly");
    Ok(handle
        .store()
        .samples()
        .into_iter()
        .filter(|s| !used_only || s.used)
        .filter(|s| filter.as_ref().is_none_or(|re| re.is_match(&s.name)))
        .collect())
}

fn refresh_server_gauges(handle: &ServerHandle) {
    let uptime = handle.info.started.elapsed().as_secs() as i64;
    handle.store().gauge("server.uptime").set(uptime);
}

pub fn stats(handle: &ServerHandle, query: &Query) -> Response<Body> {
    let samples = match selected(handle, query) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    if query.get("format").map(String::as_str) == Some("json") {
        let stats: Vec<_> = samples
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
            .collect();
        return json(StatusCode::OK, &serde_json::json!({"stats": stats}));
    }
    if query.get("format").map(String::as_str) == Some("prometheus") {
        return prometheus_response(&samples);
    }
    let mut body = String::new();
    for s in &samples {
        let _ = writeln!(body, "{}: {}", s.name, s.value);
    }
    text(StatusCode::OK, body)
}

pub fn prometheus(handle: &ServerHandle, query: &Query) -> Response<Body> {
    match selected(handle, query) {
        Ok(samples) => prometheus_response(&samples),
        Err(response) => *response,
    }
}

/// Prometheus text exposition: one `# TYPE` per metric family, samples labelled with the
/// extracted tags, names prefixed `envoy_` and sanitised as Envoy does.
fn prometheus_response(samples: &[Sample]) -> Response<Body> {
    let mut families: BTreeMap<String, (bool, Vec<&Sample>)> = BTreeMap::new();
    for s in samples {
        let name = format!("envoy_{}", sanitize(&s.tags.extracted_name));
        families
            .entry(name)
            .or_insert_with(|| (s.is_counter, Vec::new()))
            .1
            .push(s);
    }
    let mut body = String::new();
    for (name, (is_counter, members)) in families {
        let _ = writeln!(
            body,
            "# TYPE {name} {}",
            if is_counter { "counter" } else { "gauge" }
        );
        for s in members {
            let labels: Vec<String> = s
                .tags
                .tags
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape_label(v)))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(body, "{name} {}", s.value);
            } else {
                let _ = writeln!(body, "{name}{{{}}} {}", labels.join(","), s.value);
            }
        }
    }
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=UTF-8"),
    );
    response
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
