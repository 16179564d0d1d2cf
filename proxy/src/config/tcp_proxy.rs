//! `envoy.filters.network.tcp_proxy`: which cluster a TCP connection goes to, and its timeouts.

use super::opt_duration;
use std::time::Duration;
use xds_client::pb::envoy::extensions::filters::network::tcp_proxy::v3 as proto;

/// A validated tcp_proxy filter.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxy {
    pub stat_prefix: String,
    pub route: TcpRoute,
    /// Close when neither side sent bytes for this long; `None` disables (Envoy default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Upstream connect attempts before giving up (Envoy default 1).
    pub max_connect_attempts: u32,
    /// `hash_policy: [{source_ip: {}}]`: consistent-hash balancers key on the client's IP.
    pub hash_source_ip: bool,
}

/// Where the connection goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TcpRoute {
    Cluster(String),
    /// Clusters with weights; one is chosen per connection in proportion to its weight.
    Weighted(Vec<(String, u32)>),
}

const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

impl TryFrom<&proto::TcpProxy> for TcpProxy {
    type Error = String;

    fn try_from(p: &proto::TcpProxy) -> Result<Self, String> {
        if p.stat_prefix.is_empty() {
            return Err("tcp_proxy.stat_prefix must not be empty".into());
        }
        let route = match &p.cluster_specifier {
            Some(proto::tcp_proxy::ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
                TcpRoute::Cluster(name.clone())
            }
            Some(proto::tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                let clusters: Vec<_> = w
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.weight))
                    .collect();
                if clusters.is_empty() || clusters.iter().all(|(_, w)| *w == 0) {
                    return Err(
                        "tcp_proxy.weighted_clusters needs a cluster with weight > 0".into(),
                    );
                }
                TcpRoute::Weighted(clusters)
            }
            _ => return Err("tcp_proxy needs cluster or weighted_clusters".into()),
        };
        if p.tunneling_config.is_some() {
            return Err("tcp_proxy.tunneling_config is not supported".into());
        }
        let idle_timeout = match opt_duration(p.idle_timeout.as_ref())
            .map_err(|r| format!("tcp_proxy.idle_timeout: {r}"))?
        {
            None => Some(DEFAULT_IDLE_TIMEOUT),
            Some(Duration::ZERO) => None,
            Some(d) => Some(d),
        };
        let max_connect_attempts = p.max_connect_attempts.as_ref().map_or(1, |v| v.value);
        if max_connect_attempts == 0 {
            return Err("tcp_proxy.max_connect_attempts must be at least 1".into());
        }
        use xds_client::pb::envoy::r#type::v3::hash_policy::PolicySpecifier;
        let mut hash_source_ip = false;
        for policy in &p.hash_policy {
            match &policy.policy_specifier {
                Some(PolicySpecifier::SourceIp(_)) => hash_source_ip = true,
                Some(PolicySpecifier::FilterState(f)) => {
                    return Err(format!(
                        "tcp_proxy.hash_policy filter_state {:?} is not supported",
                        f.key
                    ));
                }
                None => return Err("tcp_proxy.hash_policy needs a policy".into()),
            }
        }
        Ok(TcpProxy {
            hash_source_ip,
            stat_prefix: p.stat_prefix.clone(),
            route,
            idle_timeout,
            max_connect_attempts,
        })
    }
}
