//! Bootstraps for in-process tests, built from YAML fragments: one listener `http` on 127.0.0.1
//! (port chosen by the kernel) whose connection manager (stat prefix `ingress`) has one `*`
//! virtual host, plus an admin listener ([`HttpBootstrap`]); or one listener `tcp` proxying to
//! cluster `backend` ([`tcp_bootstrap`]). A test states only what it is about (extra connection
//! manager fields, filters, routes, clusters).

use std::net::SocketAddr;

/// The parts of an HTTP bootstrap a test chooses. Each is YAML text at the indentation noted.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpBootstrap<'a> {
    /// Extra HttpConnectionManager fields, indented 10 spaces.
    pub hcm: &'a str,
    /// HTTP filter list items placed before the router, indented 10.
    pub filters: &'a str,
    /// Route list items of the virtual host, indented 14.
    pub routes: &'a str,
    /// Cluster list items, indented 2 (see [`static_cluster`]).
    pub clusters: &'a str,
}

impl HttpBootstrap<'_> {
    pub fn yaml(&self) -> String {
        let line = |text: &str| {
            if text.is_empty() {
                String::new()
            } else {
                format!("{}\n", text.trim_end_matches('\n'))
            }
        };
        format!(
            r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{hcm}          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}  clusters:
{clusters}"#,
            hcm = line(self.hcm),
            filters = line(self.filters),
            routes = line(self.routes),
            clusters = line(self.clusters),
        )
    }
}

/// One listener `tcp` on 127.0.0.1 whose tcp_proxy (stat prefix `tcp`) sends every connection to
/// cluster `backend`, defined in `clusters` (cluster list items, indented 2).
pub fn tcp_bootstrap(clusters: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
  clusters:
{clusters}"#
    )
}

/// A STATIC ROUND_ROBIN cluster over `hosts`, with `extra` cluster fields (indented 4).
pub fn static_cluster(name: &str, hosts: &[SocketAddr], extra: &str) -> String {
    let endpoints: String = hosts
        .iter()
        .map(|h| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                h.ip(),
                h.port()
            )
        })
        .collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{}\n", extra.trim_end_matches('\n'))
    };
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    lb_policy: ROUND_ROBIN\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{endpoints}"
    )
}

/// One route sending every path to `cluster` with `extra` route-action fields (e.g.
/// `timeout: 0s`), as a route list item.
pub fn route_all(cluster: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!("              - {{ match: {{ prefix: / }}, route: {{ cluster: {cluster}{extra} }} }}")
}

/// Istio's shape of an xDS-driven bootstrap: node `node_id`, ADS (`api_type` `DELTA_GRPC` or
/// `GRPC`) through the static `xds-grpc` cluster, LDS and CDS over ADS with
/// `initial_fetch_timeout: 0s`. `clusters` are the static cluster list items (see
/// [`grpc_cluster`]; one must be `xds-grpc`); `top` is extra top-level YAML (e.g. `admin`).
pub fn ads_bootstrap(node_id: &str, api_type: &str, clusters: &[String], top: &str) -> String {
    format!(
        r#"
node: {{id: "{node_id}", cluster: test}}
{top}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  lds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  cds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
static_resources:
  clusters:{}
"#,
        clusters.concat()
    )
}

/// A static HTTP/2 cluster to a gRPC server at `address` (YAML of an Envoy `Address`, see
/// [`pipe_address`] and [`socket_address`]), as Istio's `xds-grpc` and `sds-grpc`.
pub fn grpc_cluster(name: &str, address: &str) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {address}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}"#
    )
}

/// An Envoy `Address` (YAML) for a unix socket.
pub fn pipe_address(path: &std::path::Path) -> String {
    format!("{{pipe: {{path: \"{}\"}}}}", path.display())
}

/// An Envoy `Address` (YAML) for a TCP socket.
pub fn socket_address(address: SocketAddr) -> String {
    format!(
        "{{socket_address: {{address: \"{}\", port_value: {}}}}}",
        address.ip(),
        address.port()
    )
}
