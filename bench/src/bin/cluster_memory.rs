//! `cluster-memory`: where the heap bytes of one xDS cluster go, counted by the allocator.
//!
//! S7 measures RSS per cluster in a running proxy, which says how much but not what for. This
//! builds 1000 of S7's Istio-shaped EDS clusters (and their assignments) piece by piece in one
//! process, with a counting global allocator, and prints the live bytes each piece adds per
//! cluster: the received proto, its stats, the snapshot entry, the xDS state's copy, the
//! endpoints. Deterministic, so before/after comparisons of a memory change need no quiet
//! machine.

// A counting allocator has to implement the unsafe `GlobalAlloc`; it only forwards to `System`.
// This measuring tool is the one place in the workspace that allows it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;
use tern::snapshot::{ClusterStats, SnapshotBuilder};
use tern::stats::Store;
use tern::xds::{XdsSettings, XdsState};
use xds_client::ads::{Protocol, Resource, Update, XdsAddress};
use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_client::pb::google::protobuf::Any;
use xds_client::proto_json::{ReadOptions, from_text};
use xds_client::resource::ResourceType;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLUSTERS: usize = 1000;
const ENDPOINTS: usize = 10;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f` and prints the bytes it left allocated, per cluster.
fn measure<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let before = live();
    let out = f();
    let per = (live() - before) as f64 / CLUSTERS as f64;
    println!("{what:<55} {per:>9.0} B/cluster");
    out
}

fn cluster_yaml(name: &str) -> String {
    format!(
        "name: \"{name}\"\ntype: EDS\nconnect_timeout: 10s\nlb_policy: LEAST_REQUEST\n\
         eds_cluster_config: {{eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}, service_name: \"{name}\"}}\n\
         circuit_breakers:\n  thresholds:\n  - {{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295}}\n"
    )
}

fn assignment_yaml(name: &str, i: usize) -> String {
    let endpoints: String = (0..ENDPOINTS)
        .map(|e| {
            format!(
                "\n    - endpoint: {{address: {{socket_address: {{address: 10.{}.{}.{e}, port_value: 8080}}}}}}",
                i / 256,
                i % 256
            )
        })
        .collect();
    format!("cluster_name: \"{name}\"\nendpoints:\n  - lb_endpoints:{endpoints}\n")
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    // The descriptor pool that reads YAML is loaded once (about 10 MB): not a cluster's cost.
    let _: Cluster = from_text(&cluster_yaml("warm-up"), "c.yaml", ReadOptions::default())?;
    let names: Vec<String> = (0..CLUSTERS)
        .map(|i| format!("outbound|8080||svc-{i}.ns.svc.cluster.local"))
        .collect();
    let protos: Vec<Cluster> = measure("cluster protos (decoded)", || {
        names
            .iter()
            .map(|n| from_text(&cluster_yaml(n), "c.yaml", ReadOptions::default()))
            .collect::<Result<_, _>>()
    })?;
    let assignments: Vec<ClusterLoadAssignment> =
        measure("assignment protos (10 endpoints)", || {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| from_text(&assignment_yaml(n, i), "a.yaml", ReadOptions::default()))
                .collect::<Result<_, _>>()
        })?;

    let store = Store::for_threads(1);
    let stats = measure("ClusterStats (standalone store)", || {
        names
            .iter()
            .map(|n| ClusterStats::new(&store, n))
            .collect::<Vec<_>>()
    });
    drop(stats);

    let store = Store::for_threads(1);
    let settings = XdsSettings::plain(XdsAddress::Unix("/unused".into()), Protocol::Delta);
    let mut state = XdsState::new(&settings, &store, std::time::Instant::now());
    let resources = |ty_protos: Vec<(String, Any)>| -> Vec<Resource> {
        ty_protos
            .into_iter()
            .map(|(name, body)| Resource {
                name,
                version: "1".into(),
                body,
            })
            .collect()
    };
    let cluster_update = Update {
        resource_type: ResourceType::Cluster,
        version: "1".into(),
        resources: resources(
            protos
                .iter()
                .map(|p| (p.name.clone(), xds_client::any::pack(p)))
                .collect(),
        ),
        removed: Vec::new(),
    };
    let assignment_update = Update {
        resource_type: ResourceType::Endpoint,
        version: "1".into(),
        resources: resources(
            assignments
                .iter()
                .map(|a| (a.cluster_name.clone(), xds_client::any::pack(a)))
                .collect(),
        ),
        removed: Vec::new(),
    };
    measure("xDS state: clusters (proto kept, warming)", || {
        state.apply(cluster_update, std::time::Instant::now())
    });
    state.sync_subscriptions();
    measure("xDS state: assignments (proto + converted)", || {
        state.apply(assignment_update, std::time::Instant::now())
    });
    // The manager builds its entries from the protos the xDS state holds (shared, not copied).
    let change = state.take_change();
    let builder = SnapshotBuilder {
        store: &store,
        workers: 1,
    };
    let entries = measure("snapshot entries (config, stats, LB, no hosts)", || {
        change
            .clusters
            .iter()
            .flatten()
            .map(|p| builder.cluster(None, p, true))
            .collect::<Result<Vec<_>, _>>()
    })?;
    drop(entries);
    println!("({} clusters in {:?})", CLUSTERS, started.elapsed());
    Ok(())
}
