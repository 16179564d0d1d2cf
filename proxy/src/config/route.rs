//! TEMPORARY STUB (replaced by the route-model branch): just the API the HTTP data path uses.
#![allow(dead_code, unused_variables)]
use super::ConfigError;
use super::matcher::HeaderMatcher;
use std::time::Duration;
use xds_client::pb::envoy::config::route::v3 as proto;

pub struct RequestView<'a> {
    pub method: &'a http::Method,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}
#[derive(Debug)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub headers: HeaderOps,
    pub ignore_port_in_host_matching: bool,
    pub most_specific_header_mutations_wins: bool,
}
impl TryFrom<&proto::RouteConfiguration> for RouteConfig {
    type Error = ConfigError;
    fn try_from(p: &proto::RouteConfiguration) -> Result<Self, ConfigError> {
        Err(ConfigError::new("", "", ""))
    }
}
impl RouteConfig {
    pub fn find_virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        None
    }
    pub fn route(&self, req: &RequestView<'_>, random: u64) -> Option<(&VirtualHost, &Route)> {
        None
    }
}
#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub headers: HeaderOps,
    pub retry_policy: Option<RetryPolicy>,
    pub per_filter_config: PerFilterConfig,
    pub include_request_attempt_count: bool,
}
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub headers: HeaderOps,
    pub per_filter_config: PerFilterConfig,
}
#[derive(Debug)]
pub struct RouteMatch {}
impl RouteMatch {
    pub fn matched_prefix(&self) -> Option<&str> {
        None
    }
}
#[derive(Debug)]
pub enum Action {
    Forward(ForwardAction),
    Redirect(Redirect),
    DirectResponse {
        status: http::StatusCode,
        body: Option<bytes::Bytes>,
    },
}
#[derive(Debug)]
pub struct ForwardAction {
    pub cluster: ClusterSpecifier,
    pub host_rewrite: HostRewrite,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub retry_policy: Option<RetryPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    pub mirror_policies: Vec<MirrorPolicy>,
    pub max_grpc_timeout: Option<Duration>,
    pub grpc_timeout_header_offset: Option<Duration>,
}
impl ForwardAction {
    pub fn rewrite_path(&self, matcher: &RouteMatch, path_and_query: &str) -> Option<String> {
        None
    }
}
#[derive(Debug)]
pub enum HostRewrite {
    None,
    Literal(String),
    Auto,
    Header(http::HeaderName),
    PathRegex(regex::Regex, String),
}
#[derive(Debug)]
pub enum ClusterSpecifier {
    Name(String),
    Header(http::HeaderName),
    Weighted(WeightedClusters),
}
#[derive(Debug)]
pub struct WeightedClusters {
    pub clusters: Vec<WeightedCluster>,
    pub total_weight: u64,
}
#[derive(Debug)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub headers: HeaderOps,
    pub host_rewrite: Option<String>,
    pub per_filter_config: PerFilterConfig,
}
impl WeightedClusters {
    pub fn pick(&self, random: u64) -> &WeightedCluster {
        &self.clusters[0]
    }
}
#[derive(Debug)]
pub struct Redirect {
    pub status: http::StatusCode,
}
impl Redirect {
    pub fn location(&self, req: &RequestView<'_>, matched_prefix: Option<&str>) -> String {
        String::new()
    }
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::MOVED_PERMANENTLY
    }
}
#[derive(Debug, Default)]
pub struct HeaderOps {}
impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn apply_request(&self, headers: &mut http::HeaderMap) {}
    pub fn apply_response(&self, headers: &mut http::HeaderMap) {}
}
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);
impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(2);
    pub const RESET: RetryOn = RetryOn(4);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(8);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(16);
    pub const REFUSED_STREAM: RetryOn = RetryOn(32);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(64);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(128);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(256);
    pub const CANCELLED: RetryOn = RetryOn(512);
    pub const DEADLINE_EXCEEDED: RetryOn = RetryOn(1024);
    pub const INTERNAL: RetryOn = RetryOn(2048);
    pub const RESOURCE_EXHAUSTED: RetryOn = RetryOn(4096);
    pub const UNAVAILABLE: RetryOn = RetryOn(8192);
    pub fn parse(s: &str) -> RetryOn {
        RetryOn(0)
    }
    pub fn union(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }
    pub fn contains(&self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }
}
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    pub retriable_headers: Vec<HeaderMatcher>,
    pub retriable_request_headers: Vec<HeaderMatcher>,
    pub previous_hosts: bool,
    pub host_selection_retry_max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}
impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 0,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: vec![],
            retriable_headers: vec![],
            retriable_request_headers: vec![],
            previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}
#[derive(Debug)]
pub enum HashPolicy {
    Header {
        name: http::HeaderName,
        terminal: bool,
    },
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
        terminal: bool,
    },
    QueryParameter {
        name: String,
        terminal: bool,
    },
    SourceIp {
        terminal: bool,
    },
}
#[derive(Debug)]
pub struct MirrorPolicy {
    pub cluster: String,
    pub fraction_ppm: u32,
}
#[derive(Debug, Default)]
pub struct PerFilterConfig(
    pub std::collections::BTreeMap<String, xds_client::pb::google::protobuf::Any>,
);
