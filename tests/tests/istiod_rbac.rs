//! AuthorizationPolicies through a real istiod: the RBAC filters istiod generates for
//! productpage's sidecar (HTTP RBAC on the inbound HTTP chains, network RBAC on the TCP ones,
//! shadow rules for a dry-run policy) are accepted by Tern and enforced rather than failing
//! closed, and Tern sets up the same `rbac` counters as Envoy 1.40.0 does for the same config.
//! (What the filters decide is checked request by request against Envoy in `rbac.rs`.)
//!
//! Each proxy runs in a network namespace of its own (istiod's listeners bind fixed ports);
//! synchronisation is on istiod's `applied` line and the proxies' admin endpoints, with deadlines.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tern_tests::istiod::{self, Mesh, PRODUCTPAGE, Profile};
use tern_tests::netns::Netns;
use tern_tests::process::{ProxyKind, ProxyProcess};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);
const MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/istiod");

/// A DENY policy on a header and an IP block, an ALLOW policy on methods, paths, hosts, ports
/// and a source principal, and a dry-run ALLOW policy (shadow rules).
const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: DENY
  rules:
  - from: [{source: {ipBlocks: [203.0.113.0/24]}}]
  - when: [{key: "request.headers[x-evil]", values: ["*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-get, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET], paths: ["/productpage*", "/static/*"]}}]
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
    to: [{operation: {ports: ["9080"], hosts: ["productpage.local"], notPaths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
  - from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]
"#;

fn pod(tag: &str) -> Netns {
    let ns = Netns::create(tag).expect("network namespace");
    ns.ip(&[
        "addr",
        "add",
        &format!("{}/32", PRODUCTPAGE.ip),
        "dev",
        "lo",
    ])
    .expect("address on lo");
    ns
}

/// Waits until the proxy's config holds the policies' RBAC filters; returns its `/config_dump`.
async fn wait_for_rbac(proxy: &ProxyProcess) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, dump) = proxy.get("/config_dump").await.expect("admin answers");
        if status == 200
            && dump.contains("ns[default]-policy[productpage-get]-rule[0]")
            && dump.contains("envoy.filters.network.rbac")
        {
            return dump;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no RBAC filters from istiod in /config_dump",
            proxy.kind.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(name, value)` of every stat whose name has an `rbac.` segment, plus LDS's rejections.
async fn rbac_stats(proxy: &ProxyProcess) -> BTreeSet<(String, String)> {
    let (status, body) = proxy.get("/stats").await.expect("/stats");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| {
            n.contains(".rbac.")
                || n.starts_with("rbac.")
                || *n == "listener_manager.lds.update_rejected"
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_enforces_istiods_authorization_policies_with_envoys_counters() {
    if !istiod::prerequisites(&[ProxyKind::Envoy]) {
        return;
    }
    let mut mesh = Mesh::start("rbac", Path::new(MESH), &[], Profile::StockEnvoy).await;
    mesh.change("authorization.yaml", Some(POLICIES)).await;
    let (tern_ns, envoy_ns) = (pod("istiod-rbac-t"), pod("istiod-rbac-e"));
    let tern = mesh
        .sidecar(ProxyKind::Tern, &tern_ns, &PRODUCTPAGE, None)
        .await;
    let envoy = mesh
        .sidecar(ProxyKind::Envoy, &envoy_ns, &PRODUCTPAGE, None)
        .await;
    let dump = wait_for_rbac(&tern).await;
    wait_for_rbac(&envoy).await;
    for policy in [
        "ns[default]-policy[deny-evil]-rule[1]",
        "ns[default]-policy[productpage-get]-rule[1]",
        "ns[default]-policy[dry-run]-rule[0]",
    ] {
        assert!(dump.contains(policy), "no {policy} in Tern's config_dump");
    }
    let log = tern.log();
    assert!(
        !log.contains("fails closed"),
        "Tern failed closed on istiod's RBAC:\n{log}"
    );
    let (tern_stats, envoy_stats) = (rbac_stats(&tern).await, rbac_stats(&envoy).await);
    assert!(
        tern_stats
            .iter()
            .any(|(n, _)| n.contains("rbac.istio_dry_run_allow_.shadow_allowed")),
        "{tern_stats:?}"
    );
    assert!(
        tern_stats.contains(&("listener_manager.lds.update_rejected".into(), "0".into())),
        "{tern_stats:?}"
    );
    assert_eq!(tern_stats, envoy_stats);
    mesh.assert_no_nack();
}
