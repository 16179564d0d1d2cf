//! `/clusters` and `/listeners`, in Envoy's text and `?format=json` forms.

use super::{Body, Query, proto_json, text};
use crate::config::cluster::{CircuitBreakers, Discovery, thresholds};
use crate::lb::HostHealth;
use crate::server::ServerHandle;
use crate::snapshot::{ClusterEntry, Host};
use crate::xds::XdsDump;
use http::{Response, StatusCode};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use xds_client::pb::envoy::admin::v3 as admin;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

pub fn clusters(handle: &ServerHandle, query: &Query) -> Response<Body> {
    let snapshot = handle.snapshot();
    if query.get("format").map(String::as_str) == Some("json") {
        let xds = handle.info.xds.load_full();
        let statuses = snapshot
            .clusters
            .values()
            .map(|c| cluster_status(c, xds.as_deref()))
            .collect();
        let proto = admin::Clusters {
            cluster_statuses: statuses,
        };
        return match xds_client::proto_json::to_value(&proto) {
            Ok(mut value) => {
                super::whole_numbers_as_integers(&mut value);
                proto_json(StatusCode::OK, &value, "envoy.admin.v3.Clusters")
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        };
    }
    let mut body = String::new();
    for cluster in snapshot.clusters.values() {
        write_cluster_text(&mut body, cluster);
    }
    text(StatusCode::OK, body)
}

fn write_cluster_text(out: &mut String, cluster: &ClusterEntry) {
    let name = &cluster.config.name;
    let _ = writeln!(
        out,
        "{name}::observability_name::{}",
        cluster.config.stat_name
    );
    for (priority, cb) in [
        ("default_priority", cluster.config.circuit_breakers.clone()),
        ("high_priority", high_priority(cluster)),
    ] {
        let _ = writeln!(
            out,
            "{name}::{priority}::max_connections::{}",
            cb.max_connections
        );
        let _ = writeln!(
            out,
            "{name}::{priority}::max_pending_requests::{}",
            cb.max_pending_requests
        );
        let _ = writeln!(out, "{name}::{priority}::max_requests::{}", cb.max_requests);
        let _ = writeln!(out, "{name}::{priority}::max_retries::{}", cb.max_retries);
    }
    let _ = writeln!(out, "{name}::added_via_api::{}", cluster.added_via_api);
    for host in cluster.hosts.iter() {
        let address = host.endpoint.address.to_string();
        let s = &host.stats;
        let counter = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        for (stat, value) in [
            ("cx_active", counter(&s.cx_active)),
            ("cx_connect_fail", counter(&s.cx_connect_fail)),
            ("cx_total", counter(&s.cx_total)),
            ("rq_active", counter(&s.rq_active)),
            ("rq_error", counter(&s.rq_error)),
            ("rq_pending_active", 0),
            ("rq_success", counter(&s.rq_success)),
            ("rq_timeout", counter(&s.rq_timeout)),
            ("rq_total", counter(&s.rq_total)),
        ] {
            let _ = writeln!(out, "{name}::{address}::{stat}::{value}");
        }
        let _ = writeln!(
            out,
            "{name}::{address}::hostname::{}",
            host.endpoint.hostname
        );
        let _ = writeln!(
            out,
            "{name}::{address}::health_flags::{}",
            health_flags(host, cluster.is_ejected(host))
        );
        let _ = writeln!(out, "{name}::{address}::weight::{}", host.endpoint.weight);
        let _ = writeln!(out, "{name}::{address}::region::");
        let _ = writeln!(out, "{name}::{address}::zone::");
        let _ = writeln!(out, "{name}::{address}::sub_zone::");
        let _ = writeln!(out, "{name}::{address}::canary::false");
        let _ = writeln!(
            out,
            "{name}::{address}::priority::{}",
            host.endpoint.priority
        );
        let _ = writeln!(
            out,
            "{name}::{address}::success_rate::{}",
            host.outlier.success_rate()
        );
        let _ = writeln!(
            out,
            "{name}::{address}::local_origin_success_rate::{}",
            host.outlier.local_origin_success_rate()
        );
    }
}

/// Envoy's `health_flags`: `healthy`, or the reasons a host is excluded, in Envoy's order
/// (`/failed_outlier_check` before the EDS flags).
fn health_flags(host: &Host, ejected: bool) -> String {
    let eds = match host.endpoint.health {
        HostHealth::Healthy => "",
        HostHealth::Degraded => "/degraded_eds_health",
        HostHealth::Unhealthy => "/failed_eds_health",
        HostHealth::Draining => "/pending_dynamic_removal",
    };
    let outlier = if ejected { "/failed_outlier_check" } else { "" };
    match format!("{outlier}{eds}") {
        flags if flags.is_empty() => "healthy".to_string(),
        flags => flags,
    }
}

/// The HIGH routing priority's thresholds, which Tern does not enforce but shows as Envoy does.
fn high_priority(cluster: &ClusterEntry) -> CircuitBreakers {
    thresholds(
        cluster.source.circuit_breakers.as_ref(),
        core::RoutingPriority::High,
    )
}

/// The locality a host was given (its `LocalityLbEndpoints`' in the assignment it came from).
fn locality(host: &Host, source: Option<&ClusterLoadAssignment>) -> core::Locality {
    source
        .and_then(|s| {
            s.endpoints
                .iter()
                .filter(|l| l.priority == host.endpoint.priority)
                .nth(host.endpoint.locality)
        })
        .and_then(|l| l.locality.clone())
        .unwrap_or_default()
}

fn cluster_status(cluster: &ClusterEntry, xds: Option<&XdsDump>) -> admin::ClusterStatus {
    let source = super::config_dump::source_assignment(cluster, xds);
    let host_statuses = cluster
        .hosts
        .iter()
        .map(|host| {
            let s = &host.stats;
            let metric = |name: &str, v: &std::sync::atomic::AtomicU64, counter: bool| {
                xds_client::pb::envoy::admin::v3::SimpleMetric {
                    r#type: if counter {
                        admin::simple_metric::Type::Counter as i32
                    } else {
                        admin::simple_metric::Type::Gauge as i32
                    },
                    value: v.load(Ordering::Relaxed),
                    name: name.to_string(),
                }
            };
            let eds_health = match host.endpoint.health {
                HostHealth::Healthy => core::HealthStatus::Healthy,
                HostHealth::Degraded => core::HealthStatus::Degraded,
                HostHealth::Unhealthy => core::HealthStatus::Unhealthy,
                HostHealth::Draining => core::HealthStatus::Draining,
            };
            admin::HostStatus {
                address: Some(address(&host.endpoint.address)),
                stats: vec![
                    metric("cx_connect_fail", &s.cx_connect_fail, true),
                    metric("cx_total", &s.cx_total, true),
                    metric("rq_error", &s.rq_error, true),
                    metric("rq_success", &s.rq_success, true),
                    metric("rq_timeout", &s.rq_timeout, true),
                    metric("rq_total", &s.rq_total, true),
                    metric("cx_active", &s.cx_active, false),
                    metric("rq_active", &s.rq_active, false),
                    metric("rq_pending_active", &AtomicU64::new(0), false),
                ],
                locality: Some(locality(host, source.as_ref())),
                health_status: Some(admin::HostHealthStatus {
                    eds_health_status: eds_health as i32,
                    failed_outlier_check: cluster.is_ejected(host),
                    ..Default::default()
                }),
                success_rate: rate(host.outlier.success_rate()),
                local_origin_success_rate: rate(host.outlier.local_origin_success_rate()),
                weight: host.endpoint.weight,
                hostname: host.endpoint.hostname.clone(),
                priority: host.endpoint.priority,
            }
        })
        .collect();
    let thresholds = [
        (
            core::RoutingPriority::Default,
            cluster.config.circuit_breakers.clone(),
        ),
        (core::RoutingPriority::High, high_priority(cluster)),
    ]
    .into_iter()
    .map(|(priority, cb)| {
        xds_client::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds {
            priority: priority as i32,
            max_connections: Some(xds_client::pb::google::protobuf::UInt32Value {
                value: cb.max_connections,
            }),
            max_pending_requests: Some(xds_client::pb::google::protobuf::UInt32Value {
                value: cb.max_pending_requests,
            }),
            max_requests: Some(xds_client::pb::google::protobuf::UInt32Value {
                value: cb.max_requests,
            }),
            max_retries: Some(xds_client::pb::google::protobuf::UInt32Value {
                value: cb.max_retries,
            }),
            ..Default::default()
        }
    })
    .collect();
    admin::ClusterStatus {
        circuit_breakers: Some(
            xds_client::pb::envoy::config::cluster::v3::CircuitBreakers {
                thresholds,
                ..Default::default()
            },
        ),
        name: cluster.config.name.clone(),
        added_via_api: cluster.added_via_api,
        observability_name: cluster.config.stat_name.clone(),
        eds_service_name: match &cluster.config.discovery {
            Discovery::Eds { service_name } => service_name.clone(),
            _ => String::new(),
        },
        host_statuses,
        ..Default::default()
    }
}

/// A success rate for JSON: absent when the last interval had none (Envoy's -1).
fn rate(value: f64) -> Option<xds_client::pb::envoy::r#type::v3::Percent> {
    (value >= 0.0).then_some(xds_client::pb::envoy::r#type::v3::Percent { value })
}

/// A host's address as Envoy prints it: a socket address, or a pipe for a unix socket.
pub(super) fn address(address: &crate::config::address::Address) -> core::Address {
    use crate::config::address::Address;
    match address {
        Address::Socket(addr) => socket_address(*addr),
        Address::Named { host, port } => core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: host.clone(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                    *port,
                ))),
                ..Default::default()
            })),
        },
        Address::Pipe(path) => core::Address {
            address: Some(core::address::Address::Pipe(core::Pipe {
                path: path.to_string_lossy().into_owned(),
                mode: 0,
            })),
        },
    }
}

fn socket_address(addr: std::net::SocketAddr) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

pub async fn listeners(handle: &ServerHandle, query: &Query) -> Response<Body> {
    let addresses = handle.listener_addresses().await;
    if query.get("format").map(String::as_str) == Some("json") {
        let statuses = addresses
            .iter()
            .map(|(name, addr)| admin::ListenerStatus {
                name: name.clone(),
                local_address: Some(socket_address(*addr)),
                ..Default::default()
            })
            .collect();
        return match xds_client::proto_json::to_value(&admin::Listeners {
            listener_statuses: statuses,
        }) {
            Ok(value) => proto_json(StatusCode::OK, &value, "envoy.admin.v3.Listeners"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        };
    }
    let mut body = String::new();
    for (name, addr) in &addresses {
        let _ = writeln!(body, "{name}::{addr}");
    }
    text(StatusCode::OK, body)
}
