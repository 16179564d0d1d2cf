//! The pool against a real loopback backend: HTTP/1.1 connections are reused, an idle one is
//! closed after the cluster's idle timeout, and what the pool keeps alive for its idle
//! connections does not grow with the number of requests that went through them.

use super::*;
use crate::stats::Store;
use http_body_util::BodyExt;
use tokio::task::LocalSet;

/// A keep-alive HTTP/1.1 backend answering every request with `200 ok`.
async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::task::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(Response::new(super::super::local_reply::full(
                    "ok",
                )))
            });
            tokio::task::spawn_local(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

/// A STATIC cluster `c` with one host at `address` and the given upstream idle timeout.
fn cluster(address: SocketAddr, idle_timeout: &str) -> Arc<ClusterEntry> {
    let proto: xds_client::pb::envoy::config::cluster::v3::Cluster = xds_client::proto_json::from_value(
        serde_json::json!({
            "name": "c",
            "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": address.port()}}}}
            ]}]},
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"idle_timeout": idle_timeout},
                    "explicit_http_config": {"http_protocol_options": {}}
                }
            }
        }),
        xds_client::proto_json::ReadOptions::default(),
    )
    .unwrap();
    crate::snapshot::SnapshotBuilder {
        store: &Store::new(),
        workers: 1,
    }
    .cluster(None, &Arc::new(proto), false)
    .unwrap()
}

/// Sends `n` requests one after the other, reading each response to its end.
async fn send_sequentially(pools: &Rc<Pools>, cluster: &Arc<ClusterEntry>, n: usize) {
    let host = cluster.hosts[0].clone();
    let destination = crate::upstream::Destination {
        address: host.endpoint.address.socket().unwrap(),
        stats: host.stats.clone(),
        tls: None,
    };
    for _ in 0..n {
        let request = Request::get("/")
            .body(super::super::local_reply::empty())
            .unwrap();
        let response = pools
            .send(cluster, &destination, false, request, Box::new(()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
}

/// The only host pool of `pools`, once its connection is back on the idle list.
async fn idle_pool(pools: &Pools) -> Rc<HostPool> {
    let pool = pools.hosts.borrow().values().next().cloned().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.idle.borrow().is_empty() {
        assert!(Instant::now() < deadline, "the connection never went idle");
        tokio::task::yield_now().await;
    }
    pool
}

#[tokio::test(flavor = "current_thread")]
async fn idle_timers_do_not_grow_with_the_requests_a_connection_served() {
    LocalSet::new()
        .run_until(async {
            let cluster = cluster(backend().await, "3600s");
            let pools = Rc::new(Pools::default());
            send_sequentially(&pools, &cluster, 2000).await;
            let pool = idle_pool(&pools).await;
            assert_eq!(cluster.stats.http.upstream_cx_http1_total.value(), 1);
            assert_eq!(pool.idle.borrow().len(), 1);
            // Weak references to the pool: the connection's task and the pool's one idle reaper.
            // A timer per request would hold one each, for the whole idle timeout.
            assert_eq!(Rc::weak_count(&pool), 2);
            assert!(pool.reaping.get());
        })
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_is_closed_after_the_idle_timeout_and_the_reaper_stops() {
    LocalSet::new()
        .run_until(async {
            let cluster = cluster(backend().await, "0.05s");
            let pools = Rc::new(Pools::default());
            send_sequentially(&pools, &cluster, 10).await;
            let pool = idle_pool(&pools).await;
            let closed = &cluster.stats.http.upstream_cx_idle_timeout;
            let deadline = Instant::now() + Duration::from_secs(10);
            while closed.value() == 0 || pool.reaping.get() {
                assert!(
                    Instant::now() < deadline,
                    "the idle connection was never closed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(closed.value(), 1);
            assert!(pool.idle.borrow().is_empty());
            // The next request opens a new connection, and the reaper starts again.
            send_sequentially(&pools, &cluster, 1).await;
            let pool = idle_pool(&pools).await;
            assert_eq!(cluster.stats.http.upstream_cx_http1_total.value(), 2);
            assert!(pool.reaping.get());
        })
        .await;
}
