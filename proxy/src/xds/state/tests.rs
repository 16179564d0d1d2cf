//! Warming, rejection and subscription behaviour of the xDS view, without a stream.

use super::*;
use crate::xds::settings::XdsSettings;
use xds_client::ads::{Protocol, Resource, XdsAddress};
use xds_client::proto_json::{ReadOptions, from_text};

fn settings() -> XdsSettings {
    XdsSettings::plain(XdsAddress::Unix("/x".into()), Protocol::Delta)
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
    // The subscription's start counts as an attempt, as in Envoy.
    assert_eq!(sample("cluster_manager.cds.update_attempt"), Some(3));
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

fn settings_with_sds() -> XdsSettings {
    let mut s = settings();
    s.secret_sources.clusters.insert(
        "sds-grpc".into(),
        Ok(crate::xds::settings::ControlPlane {
            address: XdsAddress::Unix("/sds".into()),
            tls: None,
        }),
    );
    s.secret_sources
        .clusters
        .insert("tcp".into(), Err("cluster \"tcp\" must be STATIC".into()));
    s
}

/// A STATIC cluster whose `tlsMode: istio` endpoints take TLS with `default`/`ROOTCA` from
/// `sds_cluster`.
fn tls_cluster(name: &str, sds_cluster: &str) -> Resource {
    let sds = format!(
        "{{api_config_source: {{api_type: GRPC, grpc_services: [{{envoy_grpc: {{cluster_name: {sds_cluster}}}}}]}}, initial_fetch_timeout: 0s}}"
    );
    resource::<cluster_proto::Cluster>(
        name,
        &format!(
            r#"
name: {name}
type: STATIC
transport_socket_matches:
- name: tlsMode-istio
  match: {{tlsMode: istio}}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      common_tls_context:
        tls_certificate_sds_secret_configs: [{{name: default, sds_config: {sds}}}]
        combined_validation_context:
          default_validation_context: {{}}
          validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {sds}}}
- name: tlsMode-disabled
  match: {{}}
  transport_socket: {{name: envoy.transport_sockets.raw_buffer}}
"#
        ),
    )
}

fn certificate_secret(name: &str, chain: &str) -> Resource {
    use crate::config::secret::tests::KEY;
    resource::<SecretProto>(
        name,
        &format!(
            "name: {name}\ntls_certificate:\n  certificate_chain: {{inline_string: {chain:?}}}\n  private_key: {{inline_string: {KEY:?}}}"
        ),
    )
}

fn root_secret() -> Resource {
    use crate::config::secret::tests::CA;
    resource::<SecretProto>(
        "ROOTCA",
        &format!("name: ROOTCA\nvalidation_context: {{trusted_ca: {{inline_string: {CA:?}}}}}"),
    )
}

fn sds_source() -> SecretSource {
    SecretSource::Cluster("sds-grpc".into())
}

#[test]
fn tls_cluster_warms_until_its_sds_secrets_arrive_and_rotation_touches_only_secrets() {
    use crate::config::secret::tests::CERT;
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings_with_sds(), &store, now);
    let rejected = state.apply(
        update(
            ResourceType::Cluster,
            vec![tls_cluster("c", "sds-grpc")],
            &[],
        ),
        now,
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    state.apply(update(ResourceType::Listener, vec![], &[]), now);
    let subs = state.sync_subscriptions();
    assert_eq!(
        subs.sds_subscribe,
        vec![(
            "sds-grpc".to_string(),
            vec!["ROOTCA".to_string(), "default".to_string()]
        )]
    );
    assert!(subs.subscribe.is_empty(), "nothing on the ADS stream");
    let change = state.take_change();
    assert!(
        change.clusters.is_none(),
        "warming while secrets are missing"
    );
    assert!(!change.live);
    assert_eq!(state.next_deadline(), None, "0s waits forever");
    assert_eq!(state.dump().wanted_secrets.len(), 2);

    let rejected = state.apply_secrets(
        &sds_source(),
        update(
            ResourceType::Secret,
            vec![certificate_secret("default", CERT)],
            &[],
        ),
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    state.sync_subscriptions();
    let change = state.take_change();
    assert!(change.clusters.is_none(), "ROOTCA still missing");
    assert_eq!(change.secrets.map(|s| s.len()), Some(1));

    state.apply_secrets(
        &sds_source(),
        update(ResourceType::Secret, vec![root_secret()], &[]),
    );
    state.sync_subscriptions();
    let change = state.take_change();
    assert_eq!(change.clusters.map(|c| c.len()), Some(1), "warm now");
    assert_eq!(change.secrets.map(|s| s.len()), Some(2));
    assert!(change.live);

    // A rotation: a new certificate changes the secrets and nothing else.
    let rotated = format!("{CERT}{}", crate::config::secret::tests::CA);
    state.apply_secrets(
        &sds_source(),
        update(
            ResourceType::Secret,
            vec![certificate_secret("default", &rotated)],
            &[],
        ),
    );
    let change = state.take_change();
    assert!(change.clusters.is_none() && change.listeners.is_none());
    assert_eq!(change.secrets.map(|s| s.len()), Some(2));
    let sample = |n: &str| {
        store
            .samples()
            .into_iter()
            .find(|s| s.name == n)
            .map(|s| s.value)
    };
    assert_eq!(sample("sds.default.update_success"), Some(2));

    // Nothing names them any more: unsubscribed and forgotten.
    state.apply(update(ResourceType::Cluster, vec![], &["c"]), now);
    let subs = state.sync_subscriptions();
    assert_eq!(subs.sds_unsubscribe.len(), 1);
    assert_eq!(state.sds_names("sds-grpc"), Vec::<String>::new());
    assert_eq!(state.take_change().secrets.map(|s| s.len()), Some(0));
}

#[test]
fn bad_secret_is_rejected_naming_it_and_the_last_good_one_stays() {
    use crate::config::secret::tests::CERT;
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings_with_sds(), &store, now);
    state.apply(
        update(
            ResourceType::Cluster,
            vec![tls_cluster("c", "sds-grpc")],
            &[],
        ),
        now,
    );
    state.sync_subscriptions();
    state.apply_secrets(
        &sds_source(),
        update(
            ResourceType::Secret,
            vec![certificate_secret("default", CERT), root_secret()],
            &[],
        ),
    );
    state.take_change();
    let rejected = state.apply_secrets(
        &sds_source(),
        update(
            ResourceType::Secret,
            vec![certificate_secret(
                "default",
                "-----BEGIN CERTIFICATE-----\ngarbage!\n-----END CERTIFICATE-----\n",
            )],
            &[],
        ),
    );
    assert_eq!(
        rejected,
        vec![Rejection::new(
            "default",
            "secret \"default\": tls_certificate.certificate_chain: malformed PEM: a block is not valid base64"
        )]
    );
    assert!(
        state.take_change().secrets.is_none(),
        "the last good one stays"
    );
    let key = SecretKey {
        name: "default".into(),
        source: sds_source(),
    };
    assert_eq!(state.dump().secrets[&key].version, "1");
    assert_eq!(
        store
            .samples()
            .into_iter()
            .find(|s| s.name == "sds.default.update_rejected")
            .map(|s| s.value),
        Some(1)
    );
}

#[test]
fn secrets_from_an_unusable_source_are_refused_with_the_resource() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings_with_sds(), &store, now);
    let rejected = state.apply(
        update(
            ResourceType::Cluster,
            vec![tls_cluster("a", "nope"), tls_cluster("b", "tcp")],
            &[],
        ),
        now,
    );
    let reasons: Vec<(&str, &str)> = rejected
        .iter()
        .map(|r| (r.name.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "a",
                "cluster \"a\": secret \"default\": SDS cluster \"nope\" is not a static cluster"
            ),
            (
                "b",
                "cluster \"b\": secret \"default\": cluster \"tcp\" must be STATIC"
            ),
        ]
    );
}

#[test]
fn ads_secrets_subscribe_on_the_ads_stream() {
    let store = Store::new();
    let now = Instant::now();
    let mut state = XdsState::new(&settings_with_sds(), &store, now);
    let listener = resource::<listener_proto::Listener>(
        "l",
        r#"
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificate_sds_secret_configs: [{name: cert, sds_config: {ads: {}, initial_fetch_timeout: 2s}}]
  filters:
  - name: tcp
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: x}
"#,
    );
    state.apply(update(ResourceType::Listener, vec![listener], &[]), now);
    let subs = state.sync_subscriptions();
    assert_eq!(
        subs.subscribe,
        vec![(ResourceType::Secret, vec!["cert".to_string()])]
    );
    assert_eq!(state.next_deadline(), Some(now + Duration::from_secs(2)));
    assert!(state.take_change().listeners.is_none(), "warming");
    // Its initial_fetch_timeout passes: the listener serves without it, as Envoy's does.
    state.expire(now + Duration::from_secs(2));
    assert_eq!(state.take_change().listeners.map(|l| l.len()), Some(1));
}
