//! Upstream hosts as a worker sees them: a balancer per cluster (rebuilt lazily when the
//! cluster's entry in the snapshot changes), active-request counts per host, and connecting with
//! the cluster's timeout and source address.

use crate::config::address::Address;
use crate::config::cluster::Discovery;
use crate::config::tls::{TlsContext, TransportSocket};
use crate::lb::{HostInfo, LoadBalancer, PickContext};
use crate::snapshot::{ClusterEntry, ClusterStats, Host, HostStats};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// One worker's balancers, by cluster name.
#[derive(Default)]
pub struct WorkerClusters {
    balancers: RefCell<HashMap<String, WorkerCluster>>,
}

struct WorkerCluster {
    entry: Arc<ClusterEntry>,
    lb: LoadBalancer,
    /// The outlier detector's generation `lb` was built at (ejected hosts marked unhealthy).
    outlier_generation: u64,
    /// Active requests (connections, for TCP) per host on this worker.
    active: Rc<[Cell<u32>]>,
}

/// A chosen host, holding its active count up while alive.
pub struct PickedHost {
    pub host: Host,
    pub address: SocketAddr,
    /// The TLS context the host's transport socket match selects (`None`: plaintext).
    pub tls: Option<Arc<TlsContext>>,
    active: Option<(Rc<[Cell<u32>]>, usize)>,
}

impl PickedHost {
    /// What a connection pool needs to reach this host.
    pub fn destination(&self) -> Destination {
        Destination {
            address: self.address,
            stats: self.host.stats.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// Where an upstream connection goes, how, and whose counters it moves.
#[derive(Clone)]
pub struct Destination {
    pub address: SocketAddr,
    pub stats: Arc<HostStats>,
    pub tls: Option<Arc<TlsContext>>,
}

impl Drop for PickedHost {
    fn drop(&mut self) {
        if let Some((active, i)) = &self.active {
            active[*i].set(active[*i].get().saturating_sub(1));
        }
    }
}

/// Why no host was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoHost {
    /// The balancer found no usable host (empty cluster, all unhealthy).
    NoneHealthy,
    /// An ORIGINAL_DST cluster with no original destination to go to.
    NoOriginalDestination,
}

impl WorkerClusters {
    /// Picks a host of `cluster`, avoiding indices in `avoid` when possible (retries).
    /// `original_destination` feeds ORIGINAL_DST clusters.
    pub fn pick(
        &self,
        cluster: &Arc<ClusterEntry>,
        hash: Option<u64>,
        avoid: &[SocketAddr],
        reselect: u32,
        original_destination: Option<SocketAddr>,
    ) -> Result<PickedHost, NoHost> {
        if cluster.config.discovery == Discovery::OriginalDst {
            let address = original_destination.ok_or(NoHost::NoOriginalDestination)?;
            return Ok(original_dst_host(address));
        }
        let mut balancers = self.balancers.borrow_mut();
        // Looked up by name first: the entry API would copy the name on every pick.
        if let Some(state) = balancers.get_mut(cluster.config.name.as_str()) {
            return state.pick(cluster, hash, avoid, reselect);
        }
        balancers
            .entry(cluster.config.name.clone())
            .or_insert_with(|| WorkerCluster::new(cluster.clone()))
            .pick(cluster, hash, avoid, reselect)
    }
}

impl WorkerCluster {
    /// [`WorkerClusters::pick`] with this worker's state for `cluster`.
    fn pick(
        &mut self,
        cluster: &Arc<ClusterEntry>,
        hash: Option<u64>,
        avoid: &[SocketAddr],
        reselect: u32,
    ) -> Result<PickedHost, NoHost> {
        let state = self;
        if !Arc::ptr_eq(&state.entry, cluster) {
            *state = WorkerCluster::new(cluster.clone());
        } else if let Some(detector) = &cluster.outlier
            && detector.generation() != state.outlier_generation
        {
            (state.lb, state.outlier_generation) = balancer(cluster);
        }
        let active = state.active.clone();
        let hosts = &state.entry.hosts;
        let ctx = PickContext { hash };
        let load = |i: usize| active.get(i).map_or(0, Cell::get);
        let reject = |i: usize| {
            hosts[i]
                .endpoint
                .address
                .socket()
                .is_some_and(|a| avoid.contains(&a))
        };
        let index = state
            .lb
            .pick_with_retry(&ctx, &load, &reject, reselect)
            .ok_or(NoHost::NoneHealthy)?;
        let host = hosts[index].clone();
        if state
            .lb
            .priority_load()
            .in_panic(host.endpoint.priority as usize)
        {
            state.entry.stats.lb_healthy_panic.inc();
        }
        let address = host.endpoint.address.socket().ok_or(NoHost::NoneHealthy)?;
        active[index].set(active[index].get() + 1);
        let tls = match cluster
            .config
            .transport
            .select(host.endpoint.socket_match.as_deref())
        {
            (_, TransportSocket::Tls(tls)) => Some(tls.clone()),
            (_, TransportSocket::Plaintext) => None,
        };
        Ok(PickedHost {
            host,
            address,
            tls,
            active: Some((active, index)),
        })
    }

    fn new(entry: Arc<ClusterEntry>) -> Self {
        let (lb, outlier_generation) = balancer(&entry);
        let active = (0..entry.hosts.len()).map(|_| Cell::new(0)).collect();
        WorkerCluster {
            entry,
            lb,
            outlier_generation,
            active,
        }
    }
}

/// A balancer over the entry's hosts, outlier-ejected ones marked unhealthy (as Envoy's
/// FAILED_OUTLIER_CHECK does), with the detector generation it reflects. The generation is read
/// before the hosts, so an ejection racing with the build only causes one more rebuild.
fn balancer(entry: &ClusterEntry) -> (LoadBalancer, u64) {
    let generation = entry.outlier.as_ref().map_or(0, |d| d.generation());
    let infos: Vec<HostInfo> = entry
        .hosts
        .iter()
        .map(|h| HostInfo {
            weight: h.endpoint.weight,
            priority: h.endpoint.priority,
            locality: h.endpoint.locality,
            health: if entry.is_ejected(h) {
                crate::lb::HostHealth::Unhealthy
            } else {
                h.endpoint.health
            },
            hash_key: h.endpoint.address.to_string(),
        })
        .collect();
    let mut lb_config = entry.config.lb.clone();
    if lb_config.locality_weights.is_some() {
        lb_config.locality_weights = Some(entry.config.load_assignment.locality_weights.clone());
    }
    (LoadBalancer::new(&lb_config, &infos), generation)
}

fn original_dst_host(address: SocketAddr) -> PickedHost {
    let endpoint = crate::config::cluster::Endpoint {
        address: Address::Socket(address),
        hostname: String::new(),
        weight: 1,
        priority: 0,
        locality: 0,
        health: crate::lb::HostHealth::Healthy,
        socket_match: None,
    };
    PickedHost {
        host: Host {
            endpoint,
            stats: Default::default(),
            outlier: Default::default(),
        },
        address,
        // ORIGINAL_DST hosts carry no metadata: the cluster's default transport socket.
        tls: None,
        active: None,
    }
}

/// Why an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timeout after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    /// The endpoint's transport socket is TLS, which Tern does not originate yet.
    #[error(
        "connect failed: the endpoint's transport socket is TLS, and TLS origination is not supported yet"
    )]
    TlsNotSupported,
}

impl ConnectError {
    /// The same error again, for each request that a failed connect fails.
    pub fn replicate(&self) -> ConnectError {
        match self {
            ConnectError::Timeout(d) => ConnectError::Timeout(*d),
            ConnectError::Io(e) => ConnectError::Io(std::io::Error::new(e.kind(), e.to_string())),
            ConnectError::TlsNotSupported => ConnectError::TlsNotSupported,
        }
    }
}

/// Connects to `address` within `timeout`, from `source` when it is of the same family.
///
/// A destination whose transport socket is TLS fails at once, before any socket is opened, and
/// callers count it as the connect failure it is for the request (Envoy's `UF`). TLS origination
/// (Istio's mTLS to `tlsMode: istio` endpoints) comes with the mTLS work; until then a plaintext
/// connection to such an endpoint would be refused by its sidecar or, worse, accepted unsecured.
pub async fn connect(
    address: SocketAddr,
    source: Option<SocketAddr>,
    timeout: Duration,
    tls: Option<&TlsContext>,
) -> Result<TcpStream, ConnectError> {
    if tls.is_some() {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(%address, "upstream connection refused: the endpoint's transport socket is TLS, which Tern does not originate yet (counted as upstream_cx_connect_fail; later ones are logged at debug)");
        } else {
            tracing::debug!(%address, "upstream connection refused: TLS origination is not supported yet");
        }
        return Err(ConnectError::TlsNotSupported);
    }
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source.filter(|s| s.is_ipv4() == address.is_ipv4()) {
        socket.bind(SocketAddr::new(source.ip(), 0))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(address))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Keeps a host's and its cluster's active-connection counts right however a connection ends,
/// and records the connection's length when it does. It owns its stats handles, so it can live
/// in a spawned connection task.
pub struct UpstreamConnection {
    cluster: Arc<ClusterStats>,
    host: Arc<HostStats>,
    opened: tokio::time::Instant,
}

impl UpstreamConnection {
    pub fn open(cluster: &ClusterEntry, host: &Arc<HostStats>) -> Self {
        cluster.stats.upstream_cx_total.inc();
        cluster.stats.upstream_cx_active.inc();
        host.cx_total.fetch_add(1, Ordering::Relaxed);
        host.cx_active.fetch_add(1, Ordering::Relaxed);
        UpstreamConnection {
            cluster: cluster.stats.clone(),
            host: host.clone(),
            opened: tokio::time::Instant::now(),
        }
    }
}

impl Drop for UpstreamConnection {
    fn drop(&mut self) {
        self.cluster.upstream_cx_active.dec();
        self.cluster.upstream_cx_destroy.inc();
        self.cluster
            .upstream_cx_length_ms
            .record_duration(self.opened.elapsed());
        self.host.cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}
