//! TEMPORARY STUB (replaced by the access-log branch): the record the HCM fills per request.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use xds_client::pb::envoy::config::accesslog::v3 as proto;

/// What one request leaves behind for the access log.
#[derive(Debug, Clone, Default)]
pub struct LogRecord {
    pub start_time: Option<SystemTime>,
    pub method: String,
    /// `:path` as received (before rewrites); `x-envoy-original-path` when set.
    pub path: String,
    pub original_path: Option<String>,
    pub protocol: &'static str,
    pub authority: String,
    pub request_headers: http::HeaderMap,
    pub response_headers: http::HeaderMap,
    pub response_trailers: http::HeaderMap,
    /// 0 when no response was sent.
    pub response_code: u16,
    pub response_code_details: String,
    pub response_flags: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub request_duration: Option<Duration>,
    pub response_duration: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub upstream_local_address: Option<SocketAddr>,
    pub upstream_transport_failure_reason: Option<String>,
    pub downstream_remote_address: Option<SocketAddr>,
    pub downstream_local_address: Option<SocketAddr>,
    pub route_name: String,
    pub request_id: Option<String>,
    pub attempt_count: u32,
    pub connection_id: u64,
}

#[derive(Debug, Clone)]
pub struct AccessLog {}

impl AccessLog {
    pub fn from_proto(_p: &proto::AccessLog) -> Result<Self, String> {
        Ok(AccessLog {})
    }
    pub fn log(&self, _record: &LogRecord) {}
}
