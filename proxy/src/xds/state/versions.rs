//! From a received Listener or Cluster to a [`Versioned`]: converted and validated with the same
//! converters the bootstrap uses, with what it must wait for before it may serve (RDS names,
//! the EDS service, and the secrets its TLS transport sockets take over SDS or ADS), and with
//! every source it names checked to be one Tern can fetch from.

use super::{Need, Versioned};
use crate::config::cluster::Cluster;
use crate::config::listener::Listener;
use crate::config::tls::{SdsSecretRef, SecretKey, SecretSource};
use crate::xds::settings::{SecretSources, ads_source, eds_service_name};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use xds_client::ads::Resource;
use xds_client::any;
use xds_client::pb::envoy::config::cluster::v3 as cluster_proto;
use xds_client::pb::envoy::config::listener::v3 as listener_proto;
use xds_client::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm_proto;

pub(super) fn listener_version(
    resource: &Resource,
    sources: &SecretSources,
) -> Result<Versioned<listener_proto::Listener>, String> {
    let source: listener_proto::Listener =
        any::unpack(&resource.body).map_err(|e| e.to_string())?;
    let listener = Listener::try_from(&source).map_err(|e| e.to_string())?;
    let needs = rds_names(&source)?;
    let chains = listener.filter_chains.chains().iter();
    let refs = chains
        .chain(listener.filter_chains.default_chain())
        .flat_map(|c| c.transport.secret_refs());
    let secrets =
        secret_needs(refs, sources).map_err(|r| format!("listener {:?}: {r}", source.name))?;
    Ok(Versioned {
        source: Arc::new(source),
        version: resource.version.clone(),
        last_updated: SystemTime::now(),
        needs,
        secrets,
    })
}

pub(super) fn cluster_version(
    resource: &Resource,
    sources: &SecretSources,
) -> Result<Versioned<cluster_proto::Cluster>, String> {
    let source: cluster_proto::Cluster = any::unpack(&resource.body).map_err(|e| e.to_string())?;
    let cluster = Cluster::try_from(&source).map_err(|e| e.to_string())?;
    let mut needs = Vec::new();
    if let crate::config::cluster::Discovery::Eds { .. } = cluster.discovery {
        let config = source
            .eds_cluster_config
            .as_ref()
            .and_then(|e| e.eds_config.as_ref())
            .ok_or_else(|| {
                format!(
                    "cluster {:?}: eds_cluster_config.eds_config: is required (ads)",
                    source.name
                )
            })?;
        let timeout = ads_source(config).map_err(|r| {
            format!(
                "cluster {:?}: eds_cluster_config.eds_config: {r}",
                source.name
            )
        })?;
        let stat_name = if source.alt_stat_name.is_empty() {
            &source.name
        } else {
            &source.alt_stat_name
        };
        needs.push(Need {
            name: eds_service_name(&cluster).to_string(),
            timeout,
            stat_prefix: stat_name.clone(),
        });
    }
    let secrets = secret_needs(cluster.transport.secret_refs(), sources)
        .map_err(|r| format!("cluster {:?}: {r}", source.name))?;
    Ok(Versioned {
        source: Arc::new(source),
        version: resource.version.clone(),
        last_updated: SystemTime::now(),
        needs,
        secrets,
    })
}

/// The fetched secrets a resource waits for, each once (the first reference's timeout counts),
/// after checking that each can be fetched. Static secrets are there from the start.
fn secret_needs<'a>(
    refs: impl Iterator<Item = &'a SdsSecretRef>,
    sources: &SecretSources,
) -> Result<Vec<(SecretKey, Option<Duration>)>, String> {
    let mut out: Vec<(SecretKey, Option<Duration>)> = Vec::new();
    for r in refs {
        sources.check(&r.key)?;
        if r.key.source != SecretSource::Static && !out.iter().any(|(k, _)| *k == r.key) {
            out.push((r.key.clone(), r.initial_fetch_timeout));
        }
    }
    Ok(out)
}

/// The RouteConfiguration names a listener's connection managers take over RDS, with each
/// source's `initial_fetch_timeout` and the first naming manager's `stat_prefix`; a non-ADS
/// source is refused.
fn rds_names(listener: &listener_proto::Listener) -> Result<Vec<Need>, String> {
    use hcm_proto::http_connection_manager::RouteSpecifier;
    let chains = listener
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c))
        .chain(
            listener
                .default_filter_chain
                .iter()
                .map(|c| ("default_filter_chain".to_string(), c)),
        );
    let mut out: Vec<Need> = Vec::new();
    for (chain_field, chain) in chains {
        for (j, filter) in chain.filters.iter().enumerate() {
            let Some(listener_proto::filter::ConfigType::TypedConfig(typed)) = &filter.config_type
            else {
                continue;
            };
            let Ok(hcm) = any::unpack::<hcm_proto::HttpConnectionManager>(typed) else {
                continue;
            };
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let field = format!("{chain_field}.filters[{j}].rds.config_source");
                let source = rds.config_source.as_ref().ok_or_else(|| {
                    format!("listener {:?}: {field}: is required (ads)", listener.name)
                })?;
                let timeout = ads_source(source)
                    .map_err(|r| format!("listener {:?}: {field}: {r}", listener.name))?;
                if !out.iter().any(|n| n.name == rds.route_config_name) {
                    out.push(Need {
                        name: rds.route_config_name.clone(),
                        timeout,
                        stat_prefix: hcm.stat_prefix.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}
