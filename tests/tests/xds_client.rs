//! Conformance of Tern's ADS/SDS client (`xds_client::ads`) against the test control plane, for
//! both protocols: initial fetch, incremental update, removal, NACK then correction, a response
//! mixing good and bad resources, hostile input, reconnect and resume, a restarted control plane,
//! EDS before CDS, unsupported types, and SDS.
//!
//! The consumer here accepts everything except a Cluster whose `lb_policy` is 99, and publishes
//! what it holds through a watch channel; tests wait on that and on the server's ACK/NACK record.

#[path = "xds/resources.rs"]
mod resources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tern_tests::xds_server::{Recorded, Request, Snapshot, Verdict, XdsServer, describe};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use xds_client::ads::{
    AdsClient, AdsConfig, AdsHandle, Backoff, Handler, Protocol, Rejection, Update, XdsAddress,
};
use xds_client::any::{pack, unpack};
use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::core::v3::Node;
use xds_client::pb::envoy::config::route::v3::{ScopedRouteConfiguration, VirtualHost};
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use xds_client::pb::google::protobuf::Any;
use xds_client::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceType, SCOPED_ROUTE};

const DEADLINE: Duration = Duration::from_secs(20);

type Held = BTreeMap<(ResourceType, String), Any>;

/// Accepts everything but clusters with `lb_policy: 99`; publishes what it holds.
struct Consumer {
    held: watch::Sender<Held>,
}

impl Handler for Consumer {
    async fn apply(&mut self, update: Update) -> Vec<Rejection> {
        let ty = update.resource_type;
        let mut rejected = Vec::new();
        self.held.send_modify(|held| {
            for name in &update.removed {
                held.remove(&(ty, name.clone()));
            }
            for resource in update.resources {
                let refused = ty == ResourceType::Cluster
                    && unpack::<Cluster>(&resource.body).is_ok_and(|c| c.lb_policy == 99);
                if refused {
                    rejected.push(Rejection::new(
                        resource.name,
                        "lb_policy 99 is not a policy",
                    ));
                } else {
                    held.insert((ty, resource.name), resource.body);
                }
            }
        });
        rejected
    }
}

/// A running client and what its consumer holds.
struct Client {
    handle: AdsHandle,
    held: watch::Receiver<Held>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn node() -> Node {
    Node {
        id: "sidecar~127.0.0.1~client.test~test.svc.cluster.local".into(),
        cluster: "test".into(),
        ..Default::default()
    }
}

fn fast(mut config: AdsConfig) -> AdsConfig {
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config
}

fn start_client(config: AdsConfig) -> Client {
    let (tx, held) = watch::channel(Held::new());
    let (client, handle) =
        AdsClient::new(fast(config), Consumer { held: tx }).expect("valid client config");
    Client {
        handle,
        held,
        task: tokio::spawn(client.run()),
    }
}

fn ads(server: &XdsServer, protocol: Protocol) -> Client {
    start_client(AdsConfig::ads(server.address().clone(), protocol, node()))
}

impl Client {
    async fn wait(&mut self, what: &str, predicate: impl Fn(&Held) -> bool) {
        let reached = tokio::time::timeout(DEADLINE, self.held.wait_for(|h| predicate(h)))
            .await
            .is_ok();
        if !reached {
            let names: Vec<_> = self.held.borrow().keys().cloned().collect();
            panic!("consumer never reached: {what}; it holds {names:?}");
        }
    }

    fn holds(&self, ty: ResourceType, name: &str) -> Option<Any> {
        self.held.borrow().get(&(ty, name.to_string())).cloned()
    }
}

fn has(held: &Held, ty: ResourceType, name: &str) -> bool {
    held.contains_key(&(ty, name.to_string()))
}

fn bad_cluster(name: &str) -> Cluster {
    let mut cluster = resources::static_cluster(name, 9);
    cluster.lb_policy = 99;
    cluster
}

fn unix_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tern-xds-{tag}-{}.sock", std::process::id()))
}

async fn expect_nack(server: &XdsServer, version: &str, type_url: &str) -> String {
    match server
        .wait_verdict(version, type_url)
        .await
        .expect("an answer")
    {
        Verdict::Nack(detail) => detail,
        Verdict::Ack => panic!("{type_url} {version} was ACKed"),
    }
}

/// Runs an async test body once per protocol.
macro_rules! both_protocols {
    ($delta:ident, $sotw:ident, $body:ident) => {
        #[tokio::test]
        async fn $delta() {
            $body(Protocol::Delta).await;
        }
        #[tokio::test]
        async fn $sotw() {
            $body(Protocol::StateOfTheWorld).await;
        }
    };
}

async fn fetch_update_remove(protocol: Protocol) {
    let server = XdsServer::start_tcp().await.expect("control plane");
    let mut v1 = Snapshot::new();
    v1.add(&resources::static_cluster("a", 1))
        .add(&resources::static_cluster("b", 2))
        .add(&resources::http_listener("l1", "r1"))
        .add(&resources::route_to("r1", "a"))
        .add(&resources::route_to("r2", "b"));
    let v1 = server.push(v1).await;
    let mut client = ads(&server, protocol);
    client
        .wait("initial clusters and listener", |h| {
            has(h, ResourceType::Cluster, "a")
                && has(h, ResourceType::Cluster, "b")
                && has(h, ResourceType::Listener, "l1")
        })
        .await;
    server
        .wait_acked(&v1, &[CLUSTER, LISTENER])
        .await
        .expect("ACKed");
    assert!(
        client.holds(ResourceType::Route, "r1").is_none(),
        "routes are named, not wildcard"
    );

    // Named subscription, sent as its own request.
    client.handle.subscribe(ResourceType::Route, ["r1"]);
    client
        .wait("route r1", |h| has(h, ResourceType::Route, "r1"))
        .await;
    server.wait_acked(&v1, &[ROUTE]).await.expect("ACKed");
    assert!(
        client.holds(ResourceType::Route, "r2").is_none(),
        "r2 was not asked for"
    );

    // Incremental update: a changed, b removed, c added.
    let mut v2 = Snapshot::new();
    v2.add(&resources::static_cluster("a", 11))
        .add(&resources::static_cluster("c", 3))
        .add(&resources::http_listener("l1", "r1"))
        .add(&resources::route_to("r1", "a"));
    let v2 = server.push(v2).await;
    server.wait_acked(&v2, &[CLUSTER]).await.expect("ACKed");
    let new_a = pack(&resources::static_cluster("a", 11));
    client
        .wait("a updated, b removed, c added", |h| {
            h.get(&(ResourceType::Cluster, "a".into())) == Some(&new_a)
                && !has(h, ResourceType::Cluster, "b")
                && has(h, ResourceType::Cluster, "c")
        })
        .await;
    assert!(client.holds(ResourceType::Listener, "l1").is_some());

    // Unsubscribing is sent to the server, and the route is forgotten by the client.
    client.handle.unsubscribe(ResourceType::Route, ["r1"]);
    server
        .wait_request(|r| match &r.request {
            Request::Delta(q) => q.resource_names_unsubscribe == ["r1"],
            Request::StateOfTheWorld(q) => {
                q.type_url == ROUTE && q.resource_names.is_empty() && !q.response_nonce.is_empty()
            }
        })
        .await
        .expect("request seen");

    // The node rides on the stream's first request only.
    let requests = server.requests().await;
    assert!(requests[0].request.has_node(), "{}", describe(&requests));
    assert!(
        requests[1..].iter().all(|r| !r.request.has_node()),
        "{}",
        describe(&requests)
    );
}
both_protocols!(
    delta_initial_fetch_update_and_removal,
    sotw_initial_fetch_update_and_removal,
    fetch_update_remove
);

async fn nack_then_correct(protocol: Protocol) {
    let server = XdsServer::start_tcp().await.expect("control plane");
    let mut mixed = Snapshot::new();
    mixed
        .add(&resources::static_cluster("good", 1))
        .add(&bad_cluster("bad-1"))
        .add(&resources::http_listener("l1", "r1"));
    let v1 = server.push(mixed).await;
    let mut client = ads(&server, protocol);
    let detail = expect_nack(&server, &v1, CLUSTER).await;
    assert!(
        detail.contains("bad-1: lb_policy 99 is not a policy"),
        "the NACK names the bad cluster and why: {detail}"
    );
    assert!(!detail.contains("good"), "{detail}");
    client
        .wait("the good cluster applied", |h| {
            has(h, ResourceType::Cluster, "good")
        })
        .await;
    assert!(client.holds(ResourceType::Cluster, "bad-1").is_none());
    // The same response's listener type is unaffected.
    server.wait_acked(&v1, &[LISTENER]).await.expect("ACKed");

    if protocol == Protocol::StateOfTheWorld {
        // A SotW NACK carries the last accepted version (none yet) and the response's nonce.
        let nack = server
            .wait_request(|r| r.request.error_detail().is_some())
            .await
            .expect("request seen");
        let Request::StateOfTheWorld(q) = &nack.request else {
            unreachable!()
        };
        assert_eq!(
            q.version_info, "",
            "nothing of CDS was accepted in full yet"
        );
        assert!(!q.response_nonce.is_empty());
    }

    let mut fixed = Snapshot::new();
    fixed
        .add(&resources::static_cluster("good", 1))
        .add(&resources::static_cluster("bad-1", 2))
        .add(&resources::http_listener("l1", "r1"));
    let v2 = server.push(fixed).await;
    server.wait_acked(&v2, &[CLUSTER]).await.expect("ACKed");
    client
        .wait("the corrected cluster", |h| {
            has(h, ResourceType::Cluster, "bad-1")
        })
        .await;
}
both_protocols!(
    delta_mixed_response_applies_good_nacks_bad_then_correction_is_acked,
    sotw_mixed_response_applies_good_nacks_bad_then_correction_is_acked,
    nack_then_correct
);

async fn hostile_input(protocol: Protocol) {
    let server = XdsServer::start_tcp().await.expect("control plane");
    let mut hostile = Snapshot::new();
    hostile
        .add(&resources::static_cluster("fine", 1))
        .insert_as(
            CLUSTER,
            "junk",
            Any {
                type_url: CLUSTER.into(),
                value: vec![0xff, 0xff, 0x01],
            },
        )
        .insert_as(
            CLUSTER,
            "listener-in-cds",
            pack(&resources::http_listener("x", "r")),
        );
    let v1 = server.push(hostile).await;
    let mut client = ads(&server, protocol);
    let detail = expect_nack(&server, &v1, CLUSTER).await;
    assert!(detail.contains("cannot decode Cluster"), "{detail}");
    assert!(
        detail.contains("has type type.googleapis.com/envoy.config.listener.v3.Listener"),
        "{detail}"
    );
    if protocol == Protocol::Delta {
        // Delta envelopes carry names, so the NACK can use them.
        assert!(
            detail.contains("junk: ") && detail.contains("listener-in-cds: "),
            "{detail}"
        );
    }
    client
        .wait("the decodable cluster applied", |h| {
            has(h, ResourceType::Cluster, "fine")
        })
        .await;

    // A type Tern does not take (SRDS) is refused as a whole, and the stream goes on.
    let mut with_srds = Snapshot::new();
    with_srds.add(&resources::static_cluster("fine", 1)).insert(
        "scoped",
        pack(&ScopedRouteConfiguration {
            name: "scoped".into(),
            ..Default::default()
        }),
    );
    let v2 = server.push(with_srds).await;
    server.offer(SCOPED_ROUTE).await;
    let detail = expect_nack(&server, &v2, SCOPED_ROUTE).await;
    assert!(detail.contains("is not supported"), "{detail}");
    let vh_url = pack(&VirtualHost::default()).type_url;
    server.offer(&vh_url).await;
    let detail = expect_nack(&server, &v2, &vh_url).await;
    assert!(detail.contains("(SRDS/VHDS) is not supported"), "{detail}");
    let v3 = server.push(Snapshot::new()).await;
    server.wait_acked(&v3, &[CLUSTER]).await.expect("ACKed");
    client
        .wait("everything removed", |h| {
            !has(h, ResourceType::Cluster, "fine")
        })
        .await;
}
both_protocols!(
    delta_hostile_resources_and_unsupported_types_are_nacked_with_detail,
    sotw_hostile_resources_and_unsupported_types_are_nacked_with_detail,
    hostile_input
);

fn first_cds_request_of_stream(r: &Recorded, stream: u64) -> bool {
    r.stream == stream && r.request.type_url() == CLUSTER && r.request.nonce().is_empty()
}

async fn reconnect_resume(protocol: Protocol) {
    let server = XdsServer::start_tcp().await.expect("control plane");
    let mut v1 = Snapshot::new();
    v1.add(&resources::static_cluster("a", 1));
    let v1 = server.push(v1).await;
    let mut client = ads(&server, protocol);
    server.wait_acked(&v1, &[CLUSTER]).await.expect("ACKed");

    let mut v2 = Snapshot::new();
    v2.add(&resources::static_cluster("a", 1))
        .add(&resources::static_cluster("b", 2))
        .add(&bad_cluster("c"));
    let v2 = server.push(v2).await;
    expect_nack(&server, &v2, CLUSTER).await;
    client
        .wait("a and b held", |h| has(h, ResourceType::Cluster, "b"))
        .await;

    server.disconnect_all().await;
    let resumed = server
        .wait_request(|r| first_cds_request_of_stream(r, 2))
        .await
        .expect("request seen");
    assert!(
        resumed.request.has_node(),
        "a new stream sends the node again"
    );
    match &resumed.request {
        Request::Delta(q) => {
            let names: Vec<&str> = q
                .initial_resource_versions
                .keys()
                .map(String::as_str)
                .collect();
            let mut names = names;
            names.sort_unstable();
            assert_eq!(
                names,
                ["a", "b"],
                "accepted resources only, never the rejected c"
            );
            assert!(q.resource_names_subscribe.is_empty(), "legacy wildcard");
        }
        Request::StateOfTheWorld(q) => {
            assert_eq!(q.version_info, v1, "the last version accepted in full");
        }
    }
    // The new stream gets v2 again and NACKs it again; the client keeps what it had.
    let nacks_of_v2 = || async {
        server
            .requests()
            .await
            .iter()
            .filter(|r| r.stream == 2 && r.request.error_detail().is_some())
            .count()
    };
    server
        .wait_request(|r| r.stream == 2 && r.request.error_detail().is_some())
        .await
        .expect("request seen");
    assert_eq!(nacks_of_v2().await, 1);
    assert!(client.holds(ResourceType::Cluster, "a").is_some());
    assert!(client.holds(ResourceType::Cluster, "b").is_some());
}
both_protocols!(
    delta_reconnect_resumes_with_accepted_versions_only,
    sotw_reconnect_resumes_with_last_accepted_version,
    reconnect_resume
);

async fn restarted_control_plane(protocol: Protocol) {
    let path = unix_path(&format!("restart-{protocol:?}"));
    let first = XdsServer::start(tern_tests::xds_server::Bind::Unix(path.clone()), "a")
        .await
        .expect("control plane");
    let mut snapshot = Snapshot::new();
    snapshot
        .add(&resources::static_cluster("x", 1))
        .add(&resources::static_cluster("y", 2));
    let a1 = first.push(snapshot).await;
    let mut client = start_client(AdsConfig::ads(
        XdsAddress::Unix(path.clone()),
        protocol,
        node(),
    ));
    first.wait_acked(&a1, &[CLUSTER]).await.expect("ACKed");
    client
        .wait("x and y", |h| has(h, ResourceType::Cluster, "y"))
        .await;
    first.shutdown().await;

    let second = XdsServer::start(tern_tests::xds_server::Bind::Unix(path.clone()), "b")
        .await
        .expect("control plane");
    let mut snapshot = Snapshot::new();
    snapshot
        .add(&resources::static_cluster("x", 11))
        .add(&resources::static_cluster("z", 3));
    let b1 = second.push(snapshot).await;
    assert_eq!(b1, "b1");
    second.wait_acked(&b1, &[CLUSTER]).await.expect("ACKed");
    let new_x = pack(&resources::static_cluster("x", 11));
    client
        .wait("the new control plane's state", |h| {
            h.get(&(ResourceType::Cluster, "x".into())) == Some(&new_x)
                && !has(h, ResourceType::Cluster, "y")
                && has(h, ResourceType::Cluster, "z")
        })
        .await;
    drop(client);
    let _ = std::fs::remove_file(path);
}
both_protocols!(
    delta_restarted_control_plane_with_new_version_replaces_state,
    sotw_restarted_control_plane_with_new_version_replaces_state,
    restarted_control_plane
);

async fn eds_before_cds(protocol: Protocol) {
    let server = XdsServer::start_tcp().await.expect("control plane");
    let mut client = ads(&server, protocol);
    client.handle.subscribe(ResourceType::Endpoint, ["c1"]);
    let mut v1 = Snapshot::new();
    v1.add(&resources::endpoints("c1", 1))
        .add(&resources::endpoints("c2", 2));
    let v1 = server.push(v1).await;
    server.wait_acked(&v1, &[ENDPOINT]).await.expect("ACKed");
    client
        .wait("endpoints of c1 before its cluster", |h| {
            has(h, ResourceType::Endpoint, "c1")
        })
        .await;
    assert!(client.holds(ResourceType::Cluster, "c1").is_none());
    assert!(
        client.holds(ResourceType::Endpoint, "c2").is_none(),
        "c2 was not subscribed"
    );

    let mut v2 = Snapshot::new();
    v2.add(&resources::endpoints("c1", 1))
        .add(&resources::eds_cluster("c1"));
    let v2 = server.push(v2).await;
    server.wait_acked(&v2, &[CLUSTER]).await.expect("ACKed");
    client
        .wait("the cluster joins its endpoints", |h| {
            has(h, ResourceType::Cluster, "c1")
        })
        .await;
    assert!(
        client.holds(ResourceType::Endpoint, "c1").is_some(),
        "EDS was kept"
    );
}
both_protocols!(
    delta_eds_before_cds_is_kept,
    sotw_eds_before_cds_is_kept,
    eds_before_cds
);

#[tokio::test]
async fn sds_stream_secrets_delivers_and_rotates_over_unix_socket() {
    let path = unix_path("sds");
    let server = XdsServer::start_unix(&path).await.expect("control plane");
    let secret = |name: &str, marker: &str| {
        Secret {
            name: name.into(),
            r#type: None,
        }
        .clone_with_marker(marker)
    };
    let mut v1 = Snapshot::new();
    v1.add(&secret("default", "one"))
        .add(&secret("ROOTCA", "root"));
    let v1 = server.push(v1).await;
    // As an SDS config without set_node_on_first_message_only: the node rides on every request.
    let mut config = AdsConfig::sds(XdsAddress::Unix(path.clone()), node());
    config.node_on_first_message_only = false;
    let mut client = start_client(config);
    client
        .handle
        .subscribe(ResourceType::Secret, ["default", "ROOTCA"]);
    server
        .wait_acked(&v1, &[xds_client::resource::SECRET])
        .await
        .expect("ACKed");
    client
        .wait("both secrets", |h| {
            has(h, ResourceType::Secret, "default") && has(h, ResourceType::Secret, "ROOTCA")
        })
        .await;

    let mut v2 = Snapshot::new();
    v2.add(&secret("default", "two"))
        .add(&secret("ROOTCA", "root"));
    let v2 = server.push(v2).await;
    server
        .wait_acked(&v2, &[xds_client::resource::SECRET])
        .await
        .expect("ACKed");
    let rotated = pack(&secret("default", "two"));
    client
        .wait("the rotated certificate", |h| {
            h.get(&(ResourceType::Secret, "default".into())) == Some(&rotated)
        })
        .await;
    let requests = server.requests().await;
    assert!(
        requests
            .iter()
            .all(|r| r.kind == tern_tests::xds_server::StreamKind::Secrets)
    );
    let _ = std::fs::remove_file(path);
}

/// A secret that differs by `marker` (in its certificate chain).
trait WithMarker {
    fn clone_with_marker(self, marker: &str) -> Secret;
}

impl WithMarker for Secret {
    fn clone_with_marker(mut self, marker: &str) -> Secret {
        use xds_client::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
        use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::{
            TlsCertificate, secret,
        };
        self.r#type = Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(DataSource {
                specifier: Some(Specifier::InlineString(marker.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        }));
        self
    }
}

#[tokio::test]
async fn concurrent_streams_each_get_their_own_subscriptions() {
    let server = XdsServer::start_tcp().await.expect("control plane");
    let mut v1 = Snapshot::new();
    v1.add(&resources::static_cluster("shared", 1))
        .add(&resources::route_to("r-delta", "shared"))
        .add(&resources::route_to("r-sotw", "shared"));
    let v1 = server.push(v1).await;
    let mut delta = ads(&server, Protocol::Delta);
    let mut sotw = ads(&server, Protocol::StateOfTheWorld);
    delta.handle.subscribe(ResourceType::Route, ["r-delta"]);
    sotw.handle.subscribe(ResourceType::Route, ["r-sotw"]);
    delta
        .wait("its route", |h| has(h, ResourceType::Route, "r-delta"))
        .await;
    sotw.wait("its route", |h| has(h, ResourceType::Route, "r-sotw"))
        .await;
    assert!(delta.holds(ResourceType::Route, "r-sotw").is_none());
    assert!(sotw.holds(ResourceType::Route, "r-delta").is_none());
    assert!(delta.holds(ResourceType::Cluster, "shared").is_some());
    assert!(sotw.holds(ResourceType::Cluster, "shared").is_some());

    for delta_stream in [true, false] {
        server
            .wait_request(|r| {
                r.request.type_url() == ROUTE
                    && !r.request.nonce().is_empty()
                    && matches!(r.request, Request::Delta(_)) == delta_stream
            })
            .await
            .expect("each stream ACKs its route");
    }

    // A change to one stream's route reaches that stream only.
    let mut v2 = Snapshot::new();
    v2.add(&resources::static_cluster("shared", 1))
        .add(&resources::route_to("r-delta", "shared"))
        .add(&resources::route_to("r-sotw", "elsewhere"));
    let v2 = server.push(v2).await;
    server.wait_acked(&v2, &[ROUTE]).await.expect("ACKed");
    let changed = pack(&resources::route_to("r-sotw", "elsewhere"));
    sotw.wait("the changed route", |h| {
        h.get(&(ResourceType::Route, "r-sotw".into())) == Some(&changed)
    })
    .await;
    let requests = server.requests().await;
    let streams: std::collections::BTreeSet<u64> = requests.iter().map(|r| r.stream).collect();
    assert_eq!(streams.len(), 2, "{}", describe(&requests));
    let v2_routes_answered = requests
        .iter()
        .filter(|r| r.request.type_url() == ROUTE && !r.request.nonce().is_empty())
        .count();
    // Each stream answered its first route response; only the SotW stream got (and answered) v2.
    assert_eq!(v2_routes_answered, 3, "{}", describe(&requests));
    server.wait_acked(&v1, &[CLUSTER]).await.expect("ACKed");
}
