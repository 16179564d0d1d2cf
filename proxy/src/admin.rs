//! Envoy's admin API: the endpoints pilot-agent, istioctl and operators call, in Envoy's shapes.
//!
//! Runs on the main thread's runtime, HTTP/1.1. JSON bodies are built as the real
//! `envoy.admin.v3` protos and printed through `proto_json`, so field names and nesting are
//! Envoy's by construction. Handlers only read shared state or send the manager a command.

mod certs;
mod clusters;
mod config_dump;
mod envoy_json;
mod logging;
mod stats;

use crate::server::{Command, DrainRequest, ServerHandle, ServerState};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub use logging::LogControl;

type Body = Full<Bytes>;

/// Binds the admin listener; the returned future serves it until dropped.
pub async fn bind(
    address: SocketAddr,
    handle: ServerHandle,
    logs: LogControl,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            let logs = logs.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handle = handle.clone();
                    let logs = logs.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(req, &handle, &logs).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    Ok((bound, serve))
}

/// Query parameters; a flag without `=` (Envoy's `usedonly`) has an empty value.
pub(crate) type Query = HashMap<String, String>;

fn parse_query(query: Option<&str>) -> Query {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(req: Request<Incoming>, handle: &ServerHandle, logs: &LogControl) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let method = req.method().clone();
    const MUTATING: &[&str] = &[
        "/drain_listeners",
        "/quitquitquit",
        "/logging",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/reset_counters",
    ];
    if MUTATING.contains(&path.as_str())
        && method != Method::POST
        && !(path == "/logging" && query.is_empty())
    {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed, POST required."),
        );
    }
    match path.as_str() {
        "/ready" => ready(handle),
        "/server_info" => proto_json(
            StatusCode::OK,
            &server_info(handle),
            "envoy.admin.v3.ServerInfo",
        ),
        "/stats" => stats::stats(handle, &query),
        "/stats/prometheus" => stats::prometheus(handle, &query),
        "/config_dump" => config_dump::config_dump(handle, &query),
        "/clusters" => clusters::clusters(handle, &query),
        "/listeners" => clusters::listeners(handle, &query).await,
        "/logging" => logs.handle(&query),
        "/memory" => memory(),
        "/certs" => certs::certs(handle),
        "/runtime" => json(
            StatusCode::OK,
            &serde_json::json!({"entries": {}, "layers": ["global config", "admin"]}),
        ),
        "/drain_listeners" => {
            handle.send(Command::DrainListeners(DrainRequest {
                inbound_only: query.contains_key("inboundonly"),
                graceful: query.contains_key("graceful"),
                skip_exit: query.contains_key("skip_exit"),
            }));
            text(StatusCode::OK, "OK\n".into())
        }
        "/healthcheck/fail" | "/healthcheck/ok" => {
            handle.fail_health_check(path == "/healthcheck/fail");
            text(StatusCode::OK, "OK\n".to_string())
        }
        "/quitquitquit" => {
            handle.send(Command::Shutdown { graceful: false });
            text(StatusCode::OK, "OK\n".into())
        }
        "/" => text(StatusCode::OK, HELP.into()),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("invalid path. admin commands are:\n{HELP}"),
        ),
    }
}

const HELP: &str = "  /: help\n  /certs: certificates\n  /clusters: upstream clusters\n  /config_dump: current configuration\n  /drain_listeners (POST): drain listeners\n  /healthcheck/fail (POST): cause the server to fail health checks\n  /healthcheck/ok (POST): cause the server to pass health checks\n  /listeners: listener addresses\n  /logging: query/change logging levels\n  /memory: memory usage\n  /quitquitquit (POST): exit the server\n  /ready: readiness\n  /runtime: runtime values\n  /server_info: server version and state\n  /stats: statistics\n  /stats/prometheus: statistics in prometheus format\n";

fn ready(handle: &ServerHandle) -> Response<Body> {
    let state = handle.state();
    let status = if state == ServerState::Live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, format!("{}\n", state.name()))
}

fn server_info(handle: &ServerHandle) -> serde_json::Value {
    use xds_client::pb::envoy::admin::v3 as admin;
    let info = &handle.info;
    let uptime = xds_client::pb::google::protobuf::Duration {
        seconds: info.started.elapsed().as_secs() as i64,
        nanos: 0,
    };
    let seconds = |d: std::time::Duration| xds_client::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: 0,
    };
    let state = match handle.state() {
        ServerState::Live => admin::server_info::State::Live,
        ServerState::Draining => admin::server_info::State::Draining,
        ServerState::PreInitializing => admin::server_info::State::PreInitializing,
        ServerState::Initializing => admin::server_info::State::Initializing,
    };
    let proto = admin::ServerInfo {
        version: format!("tern/{}/Clean/RELEASE/BoringSSL-free", crate::VERSION),
        state: state as i32,
        uptime_current_epoch: Some(uptime),
        uptime_all_epochs: Some(uptime),
        hot_restart_version: "disabled".into(),
        command_line_options: Some(admin::CommandLineOptions {
            concurrency: info.options.concurrency as u32,
            drain_time: Some(seconds(info.options.drain_time)),
            parent_shutdown_time: Some(seconds(info.options.parent_shutdown_time)),
            drain_strategy: if info.options.drain_immediate {
                admin::command_line_options::DrainStrategy::Immediate as i32
            } else {
                admin::command_line_options::DrainStrategy::Gradual as i32
            },
            service_cluster: info.node.cluster.clone(),
            service_node: info.node.id.clone(),
            disable_hot_restart: true,
            ..Default::default()
        }),
        node: Some(node(info.bootstrap.node.clone().unwrap_or_default())),
        hot_restart_initializing: false,
    };
    xds_client::proto_json::to_value_with_defaults(&proto)
        .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
}

/// The bootstrap's node as the server reports it (`/server_info`, the bootstrap in
/// `/config_dump`): Envoy fills in its user agent, and `istioctl proxy-config all` prints the
/// build version from there. Tern gives its own name and version.
fn node(
    node: xds_client::pb::envoy::config::core::v3::Node,
) -> xds_client::pb::envoy::config::core::v3::Node {
    use xds_client::pb::envoy::config::core::v3 as core;
    use xds_client::pb::google::protobuf::{Struct, Value, value::Kind};
    let mut numbers = crate::VERSION.split('.').map(|n| n.parse().unwrap_or(0));
    let version = xds_client::pb::envoy::r#type::v3::SemanticVersion {
        major_number: numbers.next().unwrap_or(0),
        minor_number: numbers.next().unwrap_or(0),
        patch: numbers.next().unwrap_or(0),
    };
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let build_type = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    let metadata = Struct {
        fields: [
            ("revision.status", text("Clean")),
            ("build.type", text(build_type)),
            ("ssl.version", text("rustls")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    core::Node {
        user_agent_name: "tern".into(),
        user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentBuildVersion(
            core::BuildVersion {
                version: Some(version),
                metadata: Some(metadata),
            },
        )),
        ..node
    }
}

fn memory() -> Response<Body> {
    // Envoy reports tcmalloc figures; the process's resident set is the honest equivalent here.
    let page = 4096u64;
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut fields = statm
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    let size = fields.next().unwrap_or(0) * page;
    let resident = fields.next().unwrap_or(0) * page;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "allocated": resident.to_string(),
            "heap_size": size.to_string(),
            "pageheap_unmapped": "0",
            "pageheap_free": "0",
            "total_thread_cache": "0",
            "total_physical_bytes": resident.to_string(),
        }),
    )
}

/// Whole doubles as protobuf's JSON printer writes them, `100` rather than `100.0` (a sampling
/// percentage, a weight), so a dump reads as Envoy's.
pub(crate) fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9_007_199_254_740_992.0
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/plain; charset=UTF-8", body)
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    respond(status, "application/json", body)
}

/// A `type_name` message's JSON laid out as Envoy prints it (see [`envoy_json`]).
pub(crate) fn proto_json(
    status: StatusCode,
    value: &serde_json::Value,
    type_name: &str,
) -> Response<Body> {
    respond(
        status,
        "application/json",
        envoy_json::to_string(value, type_name),
    )
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
