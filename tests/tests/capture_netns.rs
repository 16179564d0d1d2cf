//! Transparent capture end to end: a "pod" network namespace with Istio's iptables rules (applied
//! by our `iptables-init` with the injector's flags) and `tern` running as uid 1337 with
//! Istio-style listeners, a peer namespace across a veth pair.
//!
//! Shows: outbound capture with SO_ORIGINAL_DST and the `use_original_dst` hand-off to the
//! `bind_to_port: false` listener of the original destination (else the catch-all chain); Tern's
//! own upstream connections are not captured again (uid 1337); inbound capture on 15006 with the
//! original port, forwarded to the app from 127.0.0.6; excluded ports bypass Tern.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tern_tests::netns::{KillOnDrop, Netns, fetch_in, http_get_in, serve_in, veth};
use tern_tests::prereq::{is_root, require};

const POD_IP: &str = "10.250.7.1";
const PEER_IP: &str = "10.250.7.2";

fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

fn tcp_proxy(stat_prefix: &str, cluster: &str) -> String {
    format!(
        r#"{{name: envoy.filters.network.tcp_proxy, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {stat_prefix}, cluster: "{cluster}"}}}}"#
    )
}

fn original_dst_cluster(name: &str, bind: Option<&str>) -> String {
    let bind = bind
        .map(|ip| {
            format!("upstream_bind_config: {{source_address: {{address: {ip}, port_value: 0}}}}")
        })
        .unwrap_or_default();
    format!(
        "  - {{name: \"{name}\", type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 2s, {bind}}}\n"
    )
}

fn bootstrap() -> String {
    let original_dst = r#"{name: envoy.filters.listener.original_dst, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}"#;
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15001}}}}
    use_original_dst: true
    traffic_direction: OUTBOUND
    listener_filters: [{original_dst}]
    filter_chains:
    - filters: [{passthrough}]
  - name: {PEER_IP}_8080
    address: {{socket_address: {{address: {PEER_IP}, port_value: 8080}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND
    filter_chains:
    - filters: [{handoff}]
  - name: virtualInbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15006}}}}
    traffic_direction: INBOUND
    listener_filters: [{original_dst}]
    filter_chains:
    - filter_chain_match: {{destination_port: 8080}}
      filters: [{inbound}]
    - filters: [{inbound_passthrough}]
  clusters:
{c1}{c2}{c3}"#,
        passthrough = tcp_proxy("passthrough", "PassthroughCluster"),
        handoff = tcp_proxy("handoff", "PassthroughCluster"),
        inbound = tcp_proxy("inbound_8080", "inbound|8080||"),
        inbound_passthrough = tcp_proxy("inbound_passthrough", "InboundPassthroughClusterIpv4"),
        c1 = original_dst_cluster("PassthroughCluster", None),
        c2 = original_dst_cluster("inbound|8080||", Some("127.0.0.6")),
        c3 = original_dst_cluster("InboundPassthroughClusterIpv4", Some("127.0.0.6")),
    )
}

/// Polls `/ready` inside the pod until LIVE (or fails after the deadline).
fn wait_ready(pod: &Netns, admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = http_get_in(pod, admin, "/ready") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tern in {} did not become ready",
            pod.name
        );
        std::thread::yield_now();
    }
}

fn stat(pod: &Netns, admin: SocketAddr, name: &str) -> i64 {
    let (_, body) = http_get_in(
        pod,
        admin,
        &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
    )
    .expect("admin reachable");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn outbound_handoff_inbound_capture_and_exclusions() {
    if !require(is_root(), "network namespace capture test needs root") {
        return;
    }
    let have_iptables = std::process::Command::new("iptables-restore")
        .arg("--version")
        .output()
        .is_ok();
    if !require(
        have_iptables,
        "iptables is not installed (scripts/install-test-deps.sh)",
    ) {
        return;
    }
    let pod = Netns::create("pod").unwrap();
    let peer = Netns::create("peer").unwrap();
    veth(
        &pod,
        &[&format!("{POD_IP}/24")],
        &peer,
        &[&format!("{PEER_IP}/24")],
    )
    .unwrap();
    let at = |ip: &str, port: u16| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };

    // The outside world: a server with two ports. The app in the pod: port 8080 (captured
    // inbound) and 15020 (excluded from capture); it reports who connected.
    serve_in(&peer, at("0.0.0.0", 8080), |_| "server:8080\n".into());
    serve_in(&peer, at("0.0.0.0", 9090), |_| "server:9090\n".into());
    serve_in(&pod, at("0.0.0.0", 8080), |peer| {
        format!("app saw {}\n", peer.ip())
    });
    serve_in(&pod, at("0.0.0.0", 15020), |peer| {
        format!("app saw {}\n", peer.ip())
    });

    // Tern as uid 1337, as the sidecar runs.
    let dir = std::env::temp_dir().join(format!("tern-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let config = dir.join("bootstrap.yaml");
    std::fs::write(&config, bootstrap()).unwrap();
    let tern = pod
        .command_as(1337, workspace_binary("tern"))
        .args([
            "-c",
            config.to_str().unwrap(),
            "--concurrency",
            "1",
            "-l",
            "warning",
        ])
        .spawn()
        .unwrap();
    let _tern = KillOnDrop(tern);
    let admin = at("127.0.0.1", 15000);
    wait_ready(&pod, admin);

    // Istio's injector flags.
    let status = pod
        .command(workspace_binary("iptables-init"))
        .args(iptables_init::ISTIO_INJECTOR_ARGS)
        .status()
        .unwrap();
    assert!(status.success(), "iptables-init failed");

    // Outbound to a destination with its own listener: handed off to it.
    assert_eq!(fetch_in(&pod, at(PEER_IP, 8080)).unwrap(), "server:8080\n");
    assert_eq!(stat(&pod, admin, "tcp.handoff.downstream_cx_total"), 1);
    // Outbound elsewhere: virtualOutbound's own chain (PassthroughCluster).
    assert_eq!(fetch_in(&pod, at(PEER_IP, 9090)).unwrap(), "server:9090\n");
    assert_eq!(stat(&pod, admin, "tcp.passthrough.downstream_cx_total"), 1);
    assert_eq!(stat(&pod, admin, "tcp.handoff.downstream_cx_total"), 1);

    // Inbound to 8080: captured on 15006, original port known, delivered from 127.0.0.6.
    assert_eq!(
        fetch_in(&peer, at(POD_IP, 8080)).unwrap(),
        "app saw 127.0.0.6\n"
    );
    assert_eq!(stat(&pod, admin, "tcp.inbound_8080.downstream_cx_total"), 1);
    // Inbound to an excluded port: the app sees the real client, Tern sees nothing.
    assert_eq!(
        fetch_in(&peer, at(POD_IP, 15020)).unwrap(),
        format!("app saw {PEER_IP}\n")
    );
    assert_eq!(
        stat(&pod, admin, "tcp.inbound_passthrough.downstream_cx_total"),
        0
    );
    assert_eq!(
        stat(&pod, admin, "listener.0.0.0.0_15006.downstream_cx_total"),
        1
    );

    let _ = std::fs::remove_dir_all(&dir);
}
