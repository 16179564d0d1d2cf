//! The bootstrap: reading Envoy's `-c` file and `--config-yaml` override, and turning the result
//! into the validated start-up configuration.
//!
//! `--config-yaml` is merged over the file with protobuf MergeFrom semantics (scalars replace,
//! messages merge, repeated fields append), which is exactly what decoding the override's bytes
//! on top of the file's message does.

use super::ConfigError;
use super::address::{self, Address};
use super::cluster::Cluster;
use super::listener::Listener;
use super::secret::Secret;
use super::tls::SecretSource;
use prost::Message;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use xds_client::pb::envoy::config::bootstrap::v3 as proto;
use xds_client::proto_json::{self, ReadOptions};

/// Why a bootstrap could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{origin}: {error}")]
    Parse {
        origin: String,
        error: proto_json::JsonError,
    },
    #[error("no configuration: give -c/--config-path or --config-yaml")]
    Missing,
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Reads the bootstrap proto from the file and/or the inline YAML override.
pub fn load(
    path: Option<&Path>,
    config_yaml: Option<&str>,
    options: ReadOptions,
) -> Result<proto::Bootstrap, BootstrapError> {
    let mut bootstrap = match path {
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| BootstrapError::Read {
                path: shown.clone(),
                error,
            })?;
            proto_json::from_text::<proto::Bootstrap>(&text, &shown, options).map_err(|error| {
                BootstrapError::Parse {
                    origin: shown,
                    error,
                }
            })?
        }
        None if config_yaml.is_none() => return Err(BootstrapError::Missing),
        None => proto::Bootstrap::default(),
    };
    if let Some(yaml) = config_yaml {
        let overlay =
            proto_json::from_text::<proto::Bootstrap>(yaml, "--config-yaml.yaml", options)
                .map_err(|error| BootstrapError::Parse {
                    origin: "--config-yaml".into(),
                    error,
                })?;
        // Decoding bytes into an existing message is protobuf's MergeFrom.
        bootstrap
            .merge(overlay.encode_to_vec().as_slice())
            .map_err(|e| BootstrapError::Parse {
                origin: "--config-yaml".into(),
                error: proto_json::JsonError::Decode {
                    type_name: "Bootstrap".into(),
                    source: e,
                },
            })?;
    }
    Ok(bootstrap)
}

/// The node identity sent to the control plane.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub id: String,
    pub cluster: String,
}

/// The validated bootstrap.
#[derive(Debug)]
pub struct Bootstrap {
    pub node: Node,
    pub admin: Option<Address>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// `static_resources.secrets`, for TLS contexts that name a secret without `sds_config`.
    pub secrets: Vec<Secret>,
    /// The ADS stream to follow (`dynamic_resources`), if any.
    pub xds: Option<crate::xds::XdsSettings>,
    /// `stats_config`: tag extraction and the stats matcher.
    pub stats: std::sync::Arc<crate::stats::StatsConfig>,
    /// The bootstrap as given (after merging), for `/config_dump` and for xDS set-up.
    pub source: proto::Bootstrap,
}

impl Bootstrap {
    /// Validates a bootstrap. `service_cluster`/`service_node` are the command-line overrides.
    pub fn new(
        source: proto::Bootstrap,
        service_cluster: Option<&str>,
        service_node: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let proto_node = source.node.clone().unwrap_or_default();
        let node = Node {
            id: service_node.map_or(proto_node.id, str::to_string),
            cluster: service_cluster.map_or(proto_node.cluster, str::to_string),
        };
        let admin = match source.admin.as_ref().and_then(|a| a.address.as_ref()) {
            Some(addr) => Some(
                address::convert(Some(addr), false)
                    .map_err(|r| ConfigError::new("bootstrap", "admin.address", r))?,
            ),
            None => None,
        };
        let statics = source.static_resources.clone().unwrap_or_default();
        let clusters = statics
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Cluster::try_from(c)
                    .map_err(|e| e.within(&format!("static_resources.clusters[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        unique("cluster", clusters.iter().map(|c| c.name.as_str()))?;
        let listeners = statics
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Listener::try_from(l)
                    .map_err(|e| e.within(&format!("static_resources.listeners[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        unique("listener", listeners.iter().map(|l| l.name.as_str()))?;
        let secrets = statics
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Secret::try_from(s).map_err(|e| e.within(&format!("static_resources.secrets[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        unique("secret", secrets.iter().map(|s| s.name.as_str()))?;
        static_secret_refs(&listeners, &clusters, &secrets)?;
        let bound: Vec<SocketAddr> = listeners
            .iter()
            // Port 0 asks the kernel for a fresh port each time: never a clash (Envoy agrees).
            .filter(|l| l.bind_to_port && l.address.port() != 0)
            .map(|l| l.address)
            .collect();
        unique(
            "listener address",
            bound
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        )?;
        let xds = crate::xds::settings::from_bootstrap(
            &source,
            &node.id,
            &node.cluster,
            &clusters,
            &secrets,
        )?;
        let stats = crate::stats::StatsConfig::try_from(source.stats_config.as_ref())?;
        Ok(Bootstrap {
            node,
            admin,
            listeners,
            clusters,
            secrets,
            xds,
            stats: std::sync::Arc::new(stats),
            source,
        })
    }
}

/// Static listeners and clusters that name a static secret must find it. (Secrets they take
/// over SDS or ADS are not fetched: only xDS resources subscribe to secrets.)
fn static_secret_refs(
    listeners: &[Listener],
    clusters: &[Cluster],
    secrets: &[Secret],
) -> Result<(), ConfigError> {
    let listener_refs = listeners.iter().flat_map(|l| {
        l.filter_chains
            .chains()
            .iter()
            .chain(l.filter_chains.default_chain())
            .flat_map(|c| c.transport.secret_refs())
            .map(move |r| (format!("listener {:?}", l.name), r))
    });
    let cluster_refs = clusters.iter().flat_map(|c| {
        c.transport
            .secret_refs()
            .map(move |r| (format!("cluster {:?}", c.name), r))
    });
    for (resource, r) in listener_refs.chain(cluster_refs) {
        if r.key.source == SecretSource::Static && !secrets.iter().any(|s| s.name == r.key.name) {
            return Err(ConfigError::new(
                "bootstrap",
                "static_resources",
                format!(
                    "{resource} names secret {:?}, which has no sds_config and is not in static_resources.secrets",
                    r.key.name
                ),
            ));
        }
    }
    Ok(())
}

fn unique<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ConfigError::new(
                "bootstrap",
                "static_resources",
                format!("duplicate {what} {name:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Bootstrap, ConfigError> {
        let source: proto::Bootstrap =
            proto_json::from_text(yaml, "bootstrap.yaml", ReadOptions::default()).expect("parses");
        Bootstrap::new(source, None, None)
    }

    /// A static cluster whose TLS names secret `name` without an sds_config.
    fn cluster_naming(name: &str) -> String {
        format!(
            r#"
  clusters:
  - name: c
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          validation_context_sds_secret_config: {{name: {name}}}
"#
        )
    }

    #[test]
    fn static_secrets_are_validated_and_found_by_name() {
        let ca = crate::config::secret::tests::CA;
        let secrets = format!(
            "static_resources:\n  secrets:\n  - name: root\n    validation_context: {{trusted_ca: {{inline_string: {ca:?}}}}}\n"
        );
        let bootstrap =
            load(&format!("{secrets}{}", cluster_naming("root"))).expect("the secret is there");
        assert_eq!(bootstrap.secrets.len(), 1);
        assert_eq!(bootstrap.secrets[0].name, "root");

        let e = load(&format!("{secrets}{}", cluster_naming("nope"))).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "bootstrap: static_resources: cluster \"c\" names secret \"nope\", which has no sds_config and is not in static_resources.secrets"
        );
        let e = load(
            "static_resources:\n  secrets:\n  - name: bad\n    validation_context: {trusted_ca: {inline_string: nothing}}\n",
        )
        .expect_err("bad PEM");
        assert_eq!(
            e.to_string(),
            "secret \"bad\": static_resources.secrets[0].validation_context.trusted_ca: no PEM CERTIFICATE block found"
        );
    }
}
