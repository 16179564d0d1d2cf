//! Envoy resources for the xDS tests, written as Envoy YAML and read through `proto_json`.

use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_client::pb::envoy::config::listener::v3::Listener;
use xds_client::pb::envoy::config::route::v3::RouteConfiguration;
use xds_client::proto_json::{ReadOptions, from_text};

fn read<M: prost::Message + prost::Name + Default>(yaml: &str) -> M {
    from_text(yaml, "resource.yaml", ReadOptions::default())
        .unwrap_or_else(|e| panic!("test resource does not parse: {e}\n{yaml}"))
}

/// An HTTP listener on 127.0.0.1:0 whose routes come over ADS as `route`.
pub fn http_listener(name: &str, route: &str) -> Listener {
    read(&format!(
        r#"
name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      rds:
        route_config_name: {route}
        config_source: {{ads: {{}}, resource_api_version: V3}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    ))
}

/// One virtual host for every authority, everything to `cluster`.
pub fn route_to(name: &str, cluster: &str) -> RouteConfiguration {
    read(&format!(
        r#"
name: {name}
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{prefix: "/"}}
    route: {{cluster: {cluster}}}
"#
    ))
}

/// An EDS cluster whose endpoints come over ADS.
pub fn eds_cluster(name: &str) -> Cluster {
    read(&format!(
        r#"
name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}
"#
    ))
}

/// A STATIC cluster with its endpoint inline.
pub fn static_cluster(name: &str, port: u16) -> Cluster {
    read(&format!(
        r#"
name: {name}
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: {name}
  endpoints:
  - lb_endpoints:
    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"#
    ))
}

/// One endpoint at 127.0.0.1:`port` for `cluster`.
pub fn endpoints(cluster: &str, port: u16) -> ClusterLoadAssignment {
    read(&format!(
        r#"
cluster_name: {cluster}
endpoints:
- lb_endpoints:
  - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"#
    ))
}

/// The smallest routed mesh: listener `http_in` whose RDS `routes` sends everything to
/// `route_cluster`, and the EDS cluster `backend` with one endpoint on `backend_port`.
#[allow(dead_code)] // not every test that includes this file pushes a whole snapshot
pub fn mesh(route_cluster: &str, backend_port: u16) -> tern_tests::xds_server::Snapshot {
    let mut snapshot = tern_tests::xds_server::Snapshot::new();
    snapshot
        .add(&http_listener("http_in", "routes"))
        .add(&route_to("routes", route_cluster))
        .add(&eds_cluster("backend"))
        .add(&endpoints("backend", backend_port));
    snapshot
}
