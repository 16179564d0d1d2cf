//! Warming, rejection and subscription behaviour of the xDS view, without a stream.

use super::*;
use crate::xds::settings::XdsSettings;
use xds_client::ads::{Protocol, XdsAddress};
use xds_client::proto_json::{ReadOptions, from_text};

fn settings() -> XdsSettings {
    XdsSettings {
        address: XdsAddress::Unix("/x".into()),
        protocol: Protocol::Delta,
        node: Default::default(),
        node_on_first_message_only: true,
        lds: true,
        cds: true,
        lds_initial_fetch_timeout: None,
        cds_initial_fetch_timeout: None,
        static_eds: Vec::new(),
    }
}

fn resource<M: prost::Message + prost::Name + Default>(name: &str, yaml: &str) -> Resource {
    let message: M = from_text(yaml, "r.yaml", ReadOptions::default()).expect("parses");
    Resource {
        name: name.into(),
        version: "1".into(),
        body: any::pack(&message),
    }
}

fn eds_cluster(name: &str, timeout: &str) -> Resource {
    resource::<cluster_proto::Cluster>(
        name,
        &format!(
            "name: {name}\ntype: EDS\neds_cluster_config: {{eds_config: {{ads: {{}}, initial_fetch_timeout: {timeout}}}}}"
        ),
    )
}

fn cla(name: &str) -> Resource {
    resource::<ClusterLoadAssignment>(
        name,
        &format!(
            "cluster_name: {name}\nendpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}}}]}}]"
        ),
    )
}

fn update(ty: ResourceType, resources: Vec<Resource>, removed: &[&str]) -> Update {
    Update {
        resource_type: ty,
        version: "v".into(),
        resources,
        removed: removed.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn eds_cluster_warms_until_its_endpoints_arrive_then_goes_live() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings(), &store, now);
    let rejected = state.apply(
        update(ResourceType::Cluster, vec![eds_cluster("c", "0s")], &[]),
        now,
    );
    assert!(rejected.is_empty());
    state.apply(update(ResourceType::Listener, vec![], &[]), now);
    let subs = state.sync_subscriptions();
    assert_eq!(
        subs.subscribe,
        vec![(ResourceType::Endpoint, vec!["c".to_string()])]
    );
    let change = state.take_change();
    assert!(change.clusters.is_none(), "a warming cluster is not served");
    assert!(!change.live, "not LIVE while a cluster warms");
    assert_eq!(state.next_deadline(), None, "0s waits forever");

    state.apply(update(ResourceType::Endpoint, vec![cla("c")], &[]), now);
    state.sync_subscriptions();
    let change = state.take_change();
    assert_eq!(change.clusters.map(|c| c.len()), Some(1));
    assert_eq!(change.assignments.len(), 1);
    assert!(change.live);
}

#[test]
fn initial_fetch_timeout_ends_warming_without_endpoints() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings(), &store, now);
    state.apply(
        update(ResourceType::Cluster, vec![eds_cluster("c", "2s")], &[]),
        now,
    );
    assert_eq!(state.next_deadline(), Some(now + Duration::from_secs(2)));
    state.expire(now + Duration::from_secs(1));
    assert!(state.take_change().clusters.is_none());
    state.expire(now + Duration::from_secs(2));
    assert_eq!(state.take_change().clusters.map(|c| c.len()), Some(1));
}

#[test]
fn rejected_cluster_keeps_the_last_good_version_and_counts() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings(), &store, now);
    let good =
        resource::<cluster_proto::Cluster>("c", "name: c\ntype: STATIC\nconnect_timeout: 1s");
    state.apply(update(ResourceType::Cluster, vec![good], &[]), now);
    let first = state.take_change().clusters.expect("served");
    let bad =
        resource::<cluster_proto::Cluster>("c", "name: c\ntype: STATIC\nconnect_timeout: -1s");
    let other = resource::<cluster_proto::Cluster>("d", "name: d\ntype: STATIC");
    let rejected = state.apply(update(ResourceType::Cluster, vec![bad, other], &[]), now);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].name, "c");
    assert!(
        rejected[0].reason.contains("connect_timeout"),
        "{}",
        rejected[0].reason
    );
    let served = state.take_change().clusters.expect("d added");
    assert_eq!(served.len(), 2);
    assert!(served.contains(&first[0]), "c keeps its last good version");
    let sample = |n: &str| {
        store
            .samples()
            .into_iter()
            .find(|s| s.name == n)
            .map(|s| s.value)
    };
    assert_eq!(sample("cluster_manager.cds.update_rejected"), Some(1));
    assert_eq!(sample("cluster_manager.cds.update_success"), Some(1));
    assert_eq!(sample("cluster_manager.cds.update_attempt"), Some(2));
}

#[test]
fn non_ads_rds_source_is_rejected_naming_the_field() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings(), &store, now);
    let listener = resource::<listener_proto::Listener>(
        "l",
        r#"
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: hcm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: l
      rds: {route_config_name: r, config_source: {path_config_source: {path: /r.yaml}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#,
    );
    let rejected = state.apply(update(ResourceType::Listener, vec![listener], &[]), now);
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]
            .reason
            .contains("filter_chains[0].filters[0].rds.config_source"),
        "{}",
        rejected[0].reason
    );
}

#[test]
fn removed_listener_unsubscribes_its_routes() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings(), &store, now);
    let listener = resource::<listener_proto::Listener>(
        "l",
        r#"
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: hcm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: l
      rds: {route_config_name: r, config_source: {ads: {}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#,
    );
    state.apply(update(ResourceType::Listener, vec![listener], &[]), now);
    let subs = state.sync_subscriptions();
    assert_eq!(
        subs.subscribe,
        vec![(ResourceType::Route, vec!["r".to_string()])]
    );
    assert_eq!(
        store
            .samples()
            .into_iter()
            .find(|s| s.name == "listener_manager.total_listeners_warming")
            .map(|s| s.value),
        Some(1)
    );
    state.apply(update(ResourceType::Listener, vec![], &["l"]), now);
    let subs = state.sync_subscriptions();
    assert_eq!(
        subs.unsubscribe,
        vec![(ResourceType::Route, vec!["r".to_string()])]
    );
}
