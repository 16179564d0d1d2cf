//! `/config_dump?include_eds`: the endpoints of every cluster as the proxy holds them now, in
//! Envoy's `EndpointsConfigDump` shape.
//!
//! Envoy builds this section from its live host sets, not from the `ClusterLoadAssignment`s it
//! received: every active cluster is listed (static ones under `static_endpoint_configs`), hosts
//! grouped by priority and locality with their current health, weight and metadata, and no
//! version or update time. `istioctl proxy-config all` and `eds` read it. The hosts here are the
//! cluster entry's; the locality and metadata of each come from the assignment it was made from.

use super::Names;
use crate::admin::clusters::address;
use crate::config::cluster::{DEFAULT_OVERPROVISIONING, Discovery};
use crate::lb::HostHealth;
use crate::snapshot::{ClusterEntry, Host, Snapshot};
use crate::xds::XdsDump;
use xds_client::any::pack;
use xds_client::pb::envoy::admin::v3 as admin;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::config::endpoint::v3 as endpoint;
use xds_client::pb::google::protobuf::UInt32Value;

/// The section, or `None` when there are no clusters (Envoy then leaves it out).
pub fn dump(
    snapshot: &Snapshot,
    xds: Option<&XdsDump>,
    names: &Names,
) -> Option<admin::EndpointsConfigDump> {
    if snapshot.clusters.is_empty() {
        return None;
    }
    let mut out = admin::EndpointsConfigDump::default();
    for entry in snapshot.clusters.values() {
        let name = assignment_name(entry);
        if !names.matches(name) {
            continue;
        }
        let source = source_assignment(entry, xds);
        let assignment = pack(&assignment(entry, name, source.as_ref()));
        if entry.added_via_api {
            out.dynamic_endpoint_configs.push(
                admin::endpoints_config_dump::DynamicEndpointConfig {
                    endpoint_config: Some(assignment),
                    ..Default::default()
                },
            );
        } else {
            out.static_endpoint_configs
                .push(admin::endpoints_config_dump::StaticEndpointConfig {
                    endpoint_config: Some(assignment),
                    ..Default::default()
                });
        }
    }
    Some(out)
}

/// The name of a cluster's assignment: its EDS service name, else its own.
fn assignment_name(entry: &ClusterEntry) -> &str {
    match &entry.config.discovery {
        Discovery::Eds { service_name } if !service_name.is_empty() => service_name,
        _ => &entry.config.name,
    }
}

/// The assignment a cluster's hosts were made from: the last one EDS delivered, else the
/// cluster's own `load_assignment`.
pub fn source_assignment(
    entry: &ClusterEntry,
    xds: Option<&XdsDump>,
) -> Option<endpoint::ClusterLoadAssignment> {
    match &entry.config.discovery {
        Discovery::Eds { .. } => xds
            .and_then(|x| x.endpoints.get(assignment_name(entry)))
            .map(|received| (*received.source).clone()),
        _ => entry.source.load_assignment.clone(),
    }
}

/// The live hosts of `entry` by priority, then locality, as one `ClusterLoadAssignment`.
fn assignment(
    entry: &ClusterEntry,
    name: &str,
    source: Option<&endpoint::ClusterLoadAssignment>,
) -> endpoint::ClusterLoadAssignment {
    let overprovisioning = source
        .and_then(|s| s.policy.as_ref())
        .and_then(|p| p.overprovisioning_factor.as_ref())
        .map_or(DEFAULT_OVERPROVISIONING, |f| f.value);
    let mut groups: Vec<(u32, usize)> = entry
        .hosts
        .iter()
        .map(|h| (h.endpoint.priority, h.endpoint.locality))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let endpoints = groups
        .into_iter()
        .map(|(priority, locality)| {
            let given = source.and_then(|s| {
                s.endpoints
                    .iter()
                    .filter(|l| l.priority == priority)
                    .nth(locality)
            });
            endpoint::LocalityLbEndpoints {
                locality: Some(given.and_then(|l| l.locality.clone()).unwrap_or_default()),
                priority,
                load_balancing_weight: Some(UInt32Value {
                    value: given
                        .and_then(|l| l.load_balancing_weight.as_ref())
                        .map_or(0, |w| w.value),
                }),
                lb_endpoints: entry
                    .hosts
                    .iter()
                    .filter(|h| h.endpoint.priority == priority && h.endpoint.locality == locality)
                    .map(|h| lb_endpoint(entry, h, given))
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    endpoint::ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints,
        policy: Some(endpoint::cluster_load_assignment::Policy {
            overprovisioning_factor: Some(UInt32Value {
                value: overprovisioning,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn lb_endpoint(
    entry: &ClusterEntry,
    host: &Host,
    locality: Option<&endpoint::LocalityLbEndpoints>,
) -> endpoint::LbEndpoint {
    let address = address(&host.endpoint.address);
    // The metadata the host was given: its lb_endpoint's, found by address in its locality.
    let metadata = locality.and_then(|l| {
        l.lb_endpoints
            .iter()
            .find(|lb| match &lb.host_identifier {
                Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) => {
                    e.address.as_ref() == Some(&address)
                }
                _ => false,
            })
            .and_then(|lb| lb.metadata.clone())
    });
    // Envoy's coarse health: an outlier ejection makes a host unhealthy whatever EDS said.
    let health = if entry.is_ejected(host) {
        core::HealthStatus::Unhealthy
    } else {
        match host.endpoint.health {
            HostHealth::Healthy => core::HealthStatus::Healthy,
            HostHealth::Degraded => core::HealthStatus::Degraded,
            HostHealth::Unhealthy | HostHealth::Draining => core::HealthStatus::Unhealthy,
        }
    };
    endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
            endpoint::Endpoint {
                address: Some(address),
                health_check_config: Some(Default::default()),
                hostname: host.endpoint.hostname.clone(),
                ..Default::default()
            },
        )),
        health_status: health as i32,
        metadata,
        load_balancing_weight: Some(UInt32Value {
            value: host.endpoint.weight,
        }),
    }
}
