//! The bootstrap's `dynamic_resources`, validated into what the ADS stream needs.
//!
//! Tern speaks xDS the way Istio configures Envoy: one ADS stream (`ads_config`, gRPC or delta
//! gRPC, to a STATIC cluster with one endpoint, usually the `pipe` `./etc/istio/proxy/XDS`),
//! with `lds_config` and `cds_config` (and every RDS/EDS source inside resources) set to
//! `ads: {}`. Every other way of fetching configuration (REST, files, per-type gRPC sources,
//! xdstp locators) is refused here with the field that asked for it, so a bootstrap Tern would
//! not follow fails at start-up rather than leaving the proxy silently unconfigured.

use crate::config::address::Address;
use crate::config::cluster::{Cluster, Discovery};
use crate::config::{ConfigError, opt_duration};
use std::time::Duration;
use xds_client::ads::{Protocol, XdsAddress, protocol_from_api_type};
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::pb::envoy::config::core::v3 as core;

/// Envoy's default `initial_fetch_timeout` when a config source does not set one.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// How Tern reaches its control plane and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsSettings {
    pub address: XdsAddress,
    pub protocol: Protocol,
    /// The node sent to the control plane (the bootstrap's, with `--service-node`/`--service-cluster`).
    pub node: core::Node,
    pub node_on_first_message_only: bool,
    /// Whether listeners / clusters come over ADS (`lds_config` / `cds_config` present).
    pub lds: bool,
    pub cds: bool,
    /// How long the first LDS / CDS response may take before start-up goes on without it
    /// (`None`: wait forever, `initial_fetch_timeout: 0s`).
    pub lds_initial_fetch_timeout: Option<Duration>,
    pub cds_initial_fetch_timeout: Option<Duration>,
    /// EDS service names of the bootstrap's own EDS clusters (they subscribe from the start).
    pub static_eds: Vec<String>,
}

/// The ADS settings of a bootstrap, `None` when it has no `dynamic_resources` to follow.
pub fn from_bootstrap(
    source: &bootstrap_proto::Bootstrap,
    node_id: &str,
    node_cluster: &str,
    static_clusters: &[Cluster],
) -> Result<Option<XdsSettings>, ConfigError> {
    let err = |field: &str, reason: String| {
        ConfigError::new("bootstrap", format!("dynamic_resources.{field}"), reason)
    };
    let Some(dynamic) = &source.dynamic_resources else {
        return Ok(None);
    };
    for (field, locator) in [
        ("lds_resources_locator", &dynamic.lds_resources_locator),
        ("cds_resources_locator", &dynamic.cds_resources_locator),
    ] {
        if !locator.is_empty() {
            return Err(err(
                field,
                "xdstp resource locators are not supported".into(),
            ));
        }
    }
    let lds_initial_fetch_timeout = dynamic
        .lds_config
        .as_ref()
        .map(|c| ads_source(c).map_err(|r| err("lds_config", r)))
        .transpose()?;
    let cds_initial_fetch_timeout = dynamic
        .cds_config
        .as_ref()
        .map(|c| ads_source(c).map_err(|r| err("cds_config", r)))
        .transpose()?;
    let static_eds = static_eds_services(static_clusters, source)?;
    let Some(ads) = &dynamic.ads_config else {
        if lds_initial_fetch_timeout.is_some()
            || cds_initial_fetch_timeout.is_some()
            || !static_eds.is_empty()
        {
            return Err(err(
                "ads_config",
                "is required: lds_config/cds_config/eds_config use ads".into(),
            ));
        }
        return Ok(None);
    };
    let protocol = protocol_from_api_type(ads.api_type)
        .map_err(|e| err("ads_config.api_type", e.to_string()))?;
    if !ads.cluster_names.is_empty() {
        return Err(err(
            "ads_config.cluster_names",
            "only grpc_services is supported (cluster_names is for REST)".into(),
        ));
    }
    let service = ads.grpc_services.first().ok_or_else(|| {
        err(
            "ads_config.grpc_services",
            "one gRPC service is required".into(),
        )
    })?;
    let cluster_name = match &service.target_specifier {
        Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(envoy)) => &envoy.cluster_name,
        Some(core::grpc_service::TargetSpecifier::GoogleGrpc(_)) => {
            return Err(err(
                "ads_config.grpc_services[0].google_grpc",
                "is not supported (use envoy_grpc with a static cluster)".into(),
            ));
        }
        None => {
            return Err(err(
                "ads_config.grpc_services[0]",
                "envoy_grpc.cluster_name is required".into(),
            ));
        }
    };
    let address = control_plane_address(cluster_name, static_clusters)
        .map_err(|r| err("ads_config.grpc_services[0].envoy_grpc.cluster_name", r))?;
    let mut node = source.node.clone().unwrap_or_default();
    node.id = node_id.to_string();
    node.cluster = node_cluster.to_string();
    Ok(Some(XdsSettings {
        address,
        protocol,
        node,
        node_on_first_message_only: ads.set_node_on_first_message_only,
        lds: dynamic.lds_config.is_some(),
        cds: dynamic.cds_config.is_some(),
        lds_initial_fetch_timeout: lds_initial_fetch_timeout.flatten(),
        cds_initial_fetch_timeout: cds_initial_fetch_timeout.flatten(),
        static_eds,
    }))
}

/// Checks that a config source is ADS (`ads: {}` or `self: {}` on the ADS stream) and returns its
/// `initial_fetch_timeout` (`None`: wait forever).
#[allow(deprecated)] // `path`: refused, but it must be named to be refused
pub fn ads_source(source: &core::ConfigSource) -> Result<Option<Duration>, String> {
    use core::config_source::ConfigSourceSpecifier as S;
    match &source.config_source_specifier {
        Some(S::Ads(_) | S::Self_(_)) => {}
        Some(S::Path(_) | S::PathConfigSource(_)) => {
            return Err("file (path) config sources are not supported; use ads".into());
        }
        Some(S::ApiConfigSource(_)) => {
            return Err("api_config_source is not supported; use ads".into());
        }
        None => return Err("a config source (ads) is required".into()),
    }
    let timeout = opt_duration(source.initial_fetch_timeout.as_ref())
        .map_err(|r| format!("initial_fetch_timeout: {r}"))?
        .unwrap_or(DEFAULT_INITIAL_FETCH_TIMEOUT);
    Ok((!timeout.is_zero()).then_some(timeout))
}

/// Where the ADS cluster's single endpoint is.
fn control_plane_address(name: &str, clusters: &[Cluster]) -> Result<XdsAddress, String> {
    let cluster = clusters
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("{name:?} is not a static cluster"))?;
    if cluster.discovery != Discovery::Static {
        return Err(format!("cluster {name:?} must be STATIC"));
    }
    match cluster.load_assignment.endpoints.as_slice() {
        [one] => match &one.address {
            Address::Pipe(path) => Ok(XdsAddress::Unix(path.clone())),
            Address::Socket(socket) => Ok(XdsAddress::Tcp(format!("http://{socket}"))),
            Address::Named { .. } => Err(format!("cluster {name:?}: a named host needs DNS")),
        },
        _ => Err(format!("cluster {name:?} must have exactly one endpoint")),
    }
}

/// The EDS service names of static EDS clusters, whose `eds_config` must be ADS too.
fn static_eds_services(
    clusters: &[Cluster],
    source: &bootstrap_proto::Bootstrap,
) -> Result<Vec<String>, ConfigError> {
    let protos = source
        .static_resources
        .as_ref()
        .map(|s| s.clusters.as_slice())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, cluster) in clusters.iter().enumerate() {
        if let Discovery::Eds { .. } = &cluster.discovery {
            let field = format!("static_resources.clusters[{i}].eds_cluster_config.eds_config");
            let eds_config = protos
                .get(i)
                .and_then(|p| p.eds_cluster_config.as_ref())
                .and_then(|e| e.eds_config.as_ref());
            match eds_config {
                Some(config) => {
                    ads_source(config).map_err(|r| ConfigError::new("bootstrap", &field, r))?;
                }
                None => {
                    return Err(ConfigError::new("bootstrap", &field, "is required (ads)"));
                }
            }
            out.push(eds_service_name(cluster).to_string());
        }
    }
    Ok(out)
}

/// The ClusterLoadAssignment name an EDS cluster asks for.
pub fn eds_service_name(cluster: &Cluster) -> &str {
    match &cluster.discovery {
        Discovery::Eds { service_name } if !service_name.is_empty() => service_name,
        _ => &cluster.name,
    }
}
