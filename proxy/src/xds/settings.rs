//! The bootstrap's `dynamic_resources`, validated into what the ADS stream needs.
//!
//! Tern speaks xDS the way Istio configures Envoy: one ADS stream (`ads_config`, gRPC or delta
//! gRPC, to a STATIC cluster with one endpoint, usually the `pipe` `./etc/istio/proxy/XDS`),
//! with `lds_config` and `cds_config` (and every RDS/EDS source inside resources) set to
//! `ads: {}`. Every other way of fetching configuration (REST, files, per-type gRPC sources,
//! xdstp locators) is refused here with the field that asked for it, so a bootstrap Tern would
//! not follow fails at start-up rather than leaving the proxy silently unconfigured. The one
//! exception is secrets: a TLS context may take them from a static gRPC cluster of their own
//! (Istio's `sds-grpc`), which [`SecretSources`] resolves.

mod control_plane;

pub use control_plane::{ControlPlane, ControlPlaneError, control_plane};

use crate::config::cluster::{Cluster, Discovery};
use crate::config::secret::Secret;
use crate::config::tls::{SecretKey, SecretSource};
use crate::config::{ConfigError, opt_duration};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use xds_client::ads::{Protocol, XdsAddress, XdsTls, protocol_from_api_type};
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::pb::envoy::config::core::v3 as core;

/// Envoy's default `initial_fetch_timeout` when a config source does not set one.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// How Tern reaches its control plane and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsSettings {
    pub address: XdsAddress,
    /// TLS to the control plane, from the ADS cluster's `transport_socket` (`None`: h2c).
    pub tls: Option<XdsTls>,
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
    /// Where the secrets TLS contexts name can come from.
    pub secret_sources: SecretSources,
}

impl XdsSettings {
    /// Wildcard LDS and CDS over plaintext ADS at `address` with `protocol`, waiting forever for
    /// the first responses, and nothing else: what the fuzz entry, unit tests and measuring
    /// tools start from (a bootstrap gives the real settings, [`from_bootstrap`]).
    pub fn plain(address: XdsAddress, protocol: Protocol) -> Self {
        XdsSettings {
            address,
            tls: None,
            protocol,
            node: Default::default(),
            node_on_first_message_only: true,
            lds: true,
            cds: true,
            lds_initial_fetch_timeout: None,
            cds_initial_fetch_timeout: None,
            static_eds: Vec::new(),
            secret_sources: Default::default(),
        }
    }
}

/// The sources an `sds_config` may name, from the bootstrap: static clusters that can carry an
/// SDS stream (Istio's `sds-grpc`), and the static secrets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecretSources {
    /// Every static cluster: its single endpoint and TLS, or why it cannot carry a gRPC stream.
    pub clusters: BTreeMap<String, Result<ControlPlane, String>>,
    /// Names of `static_resources.secrets`.
    pub statics: BTreeSet<String>,
}

impl SecretSources {
    pub fn from_bootstrap(
        source: &bootstrap_proto::Bootstrap,
        static_clusters: &[Cluster],
        static_secrets: &[Secret],
    ) -> Self {
        SecretSources {
            clusters: static_clusters
                .iter()
                .map(|c| {
                    let plane = control_plane(&c.name, static_clusters, source, static_secrets);
                    (c.name.clone(), plane.map_err(|e| e.to_string()))
                })
                .collect(),
            statics: source
                .static_resources
                .iter()
                .flat_map(|s| &s.secrets)
                .map(|s| s.name.clone())
                .collect(),
        }
    }

    /// Whether `secret` can be fetched: its cluster is a static one with one endpoint, or the
    /// static secret it names exists.
    pub fn check(&self, secret: &SecretKey) -> Result<(), String> {
        match &secret.source {
            SecretSource::Ads => Ok(()),
            SecretSource::Static => {
                if self.statics.contains(&secret.name) {
                    Ok(())
                } else {
                    Err(format!(
                        "secret {:?} has no sds_config and is not a static secret",
                        secret.name
                    ))
                }
            }
            SecretSource::Cluster(cluster) => match self.clusters.get(cluster) {
                Some(Ok(_)) => Ok(()),
                Some(Err(reason)) => Err(format!("secret {:?}: {reason}", secret.name)),
                None => Err(format!(
                    "secret {:?}: SDS cluster {cluster:?} is not a static cluster",
                    secret.name
                )),
            },
        }
    }

    /// The control plane of an SDS cluster that [`SecretSources::check`] accepted.
    pub fn control_plane(&self, cluster: &str) -> Option<&ControlPlane> {
        self.clusters.get(cluster).and_then(|r| r.as_ref().ok())
    }
}

/// The ADS settings of a bootstrap, `None` when it has no `dynamic_resources` to follow.
pub fn from_bootstrap(
    source: &bootstrap_proto::Bootstrap,
    node_id: &str,
    node_cluster: &str,
    static_clusters: &[Cluster],
    static_secrets: &[Secret],
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
    let ControlPlane { address, tls } =
        control_plane(cluster_name, static_clusters, source, static_secrets).map_err(
            |e| match e {
                ControlPlaneError::Cluster(r) => {
                    err("ads_config.grpc_services[0].envoy_grpc.cluster_name", r)
                }
                ControlPlaneError::Field(e) => e,
            },
        )?;
    let mut node = source.node.clone().unwrap_or_default();
    node.id = node_id.to_string();
    node.cluster = node_cluster.to_string();
    Ok(Some(XdsSettings {
        address,
        tls,
        protocol,
        node,
        node_on_first_message_only: ads.set_node_on_first_message_only,
        lds: dynamic.lds_config.is_some(),
        cds: dynamic.cds_config.is_some(),
        lds_initial_fetch_timeout: lds_initial_fetch_timeout.flatten(),
        cds_initial_fetch_timeout: cds_initial_fetch_timeout.flatten(),
        static_eds,
        secret_sources: SecretSources::from_bootstrap(source, static_clusters, static_secrets),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bootstrap::Bootstrap;
    use xds_client::proto_json::{ReadOptions, from_text};

    fn load(yaml: &str) -> Result<Option<XdsSettings>, ConfigError> {
        let source: bootstrap_proto::Bootstrap =
            from_text(yaml, "bootstrap.yaml", ReadOptions::default()).expect("parses");
        Bootstrap::new(source, None, None).map(|b| b.xds)
    }

    fn with_dynamic(dynamic: &str) -> String {
        format!(
            r#"
node: {{id: n1, cluster: c1}}
dynamic_resources:
{dynamic}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: ./etc/istio/proxy/XDS}}}}}}}}]}}]
  - name: tcp-xds
    type: STATIC
    load_assignment:
      cluster_name: tcp-xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 15010}}}}}}}}]}}]
"#
        )
    }

    const ADS: &str = r#"
  ads_config:
    api_type: DELTA_GRPC
    set_node_on_first_message_only: true
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  lds_config: {ads: {}, initial_fetch_timeout: 0s}
  cds_config: {ads: {}}
"#;

    #[test]
    fn istio_golden_bootstrap_uses_delta_ads_on_the_xds_pipe() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/istio/xds/default_golden.json"
        ));
        let Ok(text) = text else {
            eprintln!("skipped: the Istio golden bootstrap fixture is not present");
            return;
        };
        let source: bootstrap_proto::Bootstrap = from_text(
            &text,
            "default_golden.json",
            ReadOptions {
                allow_unknown_fields: true,
            },
        )
        .expect("golden parses");
        let xds = Bootstrap::new(source, None, None)
            .expect("golden validates")
            .xds
            .expect("golden has ADS");
        assert_eq!(xds.address, XdsAddress::Unix("/tmp/XDS".into()));
        assert_eq!(xds.protocol, Protocol::Delta);
        assert!(xds.node_on_first_message_only && xds.lds && xds.cds);
        assert_eq!(xds.lds_initial_fetch_timeout, None, "0s waits forever");
        assert_eq!(xds.cds_initial_fetch_timeout, None);
        assert!(xds.node.id.starts_with("sidecar~"));
        assert!(
            xds.node.metadata.is_some(),
            "node metadata goes out verbatim"
        );
    }

    #[test]
    fn ads_settings_follow_the_bootstrap() {
        let xds = load(&with_dynamic(ADS)).expect("valid").expect("ADS");
        assert_eq!(
            xds.address,
            XdsAddress::Unix("./etc/istio/proxy/XDS".into())
        );
        assert_eq!(xds.protocol, Protocol::Delta);
        assert_eq!(xds.lds_initial_fetch_timeout, None);
        assert_eq!(
            xds.cds_initial_fetch_timeout,
            Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
            "unset is Envoy's 15 s"
        );
        assert_eq!(
            (xds.node.id.as_str(), xds.node.cluster.as_str()),
            ("n1", "c1")
        );
        let tcp = load(&with_dynamic(
            &ADS.replace("DELTA_GRPC", "GRPC")
                .replace("xds-grpc", "tcp-xds"),
        ))
        .expect("valid")
        .expect("ADS");
        assert_eq!(
            tcp.address,
            XdsAddress::Tcp("http://127.0.0.1:15010".into())
        );
        assert_eq!(tcp.protocol, Protocol::StateOfTheWorld);
        assert_eq!(load("node: {id: n}").expect("valid"), None);
    }

    #[test]
    fn unsupported_sources_are_one_line_errors_naming_the_field() {
        let cases = [
            (
                ADS.replace("DELTA_GRPC", "REST"),
                "dynamic_resources.ads_config.api_type",
            ),
            (
                ADS.replace("{ads: {}}", "{path_config_source: {path: /x}}"),
                "dynamic_resources.cds_config",
            ),
            (
                ADS.replace("cluster_name: xds-grpc", "cluster_name: nope"),
                "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
            ),
            (
                ADS.replace(
                    "{envoy_grpc: {cluster_name: xds-grpc}}",
                    "{google_grpc: {target_uri: x, stat_prefix: y}}",
                ),
                "dynamic_resources.ads_config.grpc_services[0].google_grpc",
            ),
            (
                "  lds_config: {ads: {}}\n".to_string(),
                "dynamic_resources.ads_config",
            ),
        ];
        for (dynamic, field) in cases {
            let e = load(&with_dynamic(&dynamic)).expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}
