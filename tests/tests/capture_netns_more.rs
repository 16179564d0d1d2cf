//! Transparent capture end to end, beyond the IPv4 basics of `capture_netns.rs`: the same pod
//! namespace with rules from our `iptables-init`, `tern` as uid 1337 with Istio-style listeners,
//! and peer namespaces across veth pairs.
//!
//! Shows: a dual-stack pod (`--dual-stack`, as Istio's `ISTIO_DUAL_STACK`) captures both families,
//! with IPv6 outbound handed off to the `[::]` wildcard listener of its port and IPv6 inbound
//! delivered from `::6`; `-x` excluded CIDRs never reach Tern while other destinations still do;
//! `-b <ports>` captures inbound only on those ports.
//!
//! Every server here answers with the address it saw the client connect from, so each assertion
//! says which path a connection took; Tern's stats say whether it passed through Tern at all.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tern_tests::netns::{KillOnDrop, Netns, fetch_in, http_get_in, serve_in, veth};
use tern_tests::prereq::{is_root, require};

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Root and both iptables front ends, or skip (fail under `CI=true`).
fn have_prerequisites() -> bool {
    if !require(is_root(), "network namespace capture test needs root") {
        return false;
    }
    let have_iptables = ["iptables-restore", "ip6tables-restore"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    require(
        have_iptables,
        "iptables is not installed (scripts/install-test-deps.sh)",
    )
}

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

/// A server in `ns` on `[::]:port` (both families: std leaves `IPV6_V6ONLY` off) that answers
/// `<name> saw <client address>`, IPv4 clients shown as IPv4.
fn serve_who(ns: &Netns, port: u16, name: &'static str) {
    serve_in(ns, at("::", port), move |peer| {
        format!("{name} saw {}\n", peer.ip().to_canonical())
    });
}

/// Istio's injector flags with some values replaced (`("-b", "8080")`) and more flags appended.
fn injector_args(overrides: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = iptables_init::ISTIO_INJECTOR_ARGS
        .iter()
        .map(|a| a.to_string())
        .collect();
    for (flag, value) in overrides {
        let index = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} is not one of the injector's flags"));
        args[index + 1] = value.to_string();
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Runs `iptables-init` in `pod` and insists it succeeds.
fn install_capture(pod: &Netns, args: &[String]) {
    let out = pod
        .command(workspace_binary("iptables-init"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iptables-init {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

mod config {
    //! Istio-shaped bootstrap pieces, in YAML flow style.

    use std::net::SocketAddr;

    const ORIGINAL_DST: &str = r#"{name: envoy.filters.listener.original_dst, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}"#;

    fn address(at: SocketAddr) -> String {
        format!(
            r#"{{socket_address: {{address: "{}", port_value: {}}}}}"#,
            at.ip(),
            at.port()
        )
    }

    fn tcp_proxy(stat_prefix: &str, cluster: &str) -> String {
        format!(
            r#"[{{name: envoy.filters.network.tcp_proxy, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {stat_prefix}, cluster: "{cluster}"}}}}]"#
        )
    }

    /// `virtualOutbound`: takes what iptables redirected, hands it to the listener of its original
    /// destination, or else proxies it through its own chain (`tcp.<stat_prefix>.*`).
    pub fn virtual_outbound(name: &str, at: SocketAddr, stat_prefix: &str) -> String {
        format!(
            "  - name: {name}\n    address: {}\n    use_original_dst: true\n    traffic_direction: OUTBOUND\n    listener_filters: [{ORIGINAL_DST}]\n    filter_chains:\n    - filters: {}\n",
            address(at),
            tcp_proxy(stat_prefix, "PassthroughCluster"),
        )
    }

    /// A per-destination outbound listener that only receives hand-offs (named as Istio does).
    pub fn outbound_port(at: SocketAddr, stat_prefix: &str) -> String {
        format!(
            "  - name: \"{}\"\n    address: {}\n    bind_to_port: false\n    traffic_direction: OUTBOUND\n    filter_chains:\n    - filters: {}\n",
            at.to_string().replace(':', "_"),
            address(at),
            tcp_proxy(stat_prefix, "PassthroughCluster"),
        )
    }

    /// `virtualInbound`: one chain per `(port, stat_prefix, cluster)`, then a passthrough chain.
    pub fn virtual_inbound(
        name: &str,
        at: SocketAddr,
        ports: &[(u16, &str, &str)],
        passthrough: (&str, &str),
    ) -> String {
        let mut chains = String::new();
        for (port, stat_prefix, cluster) in ports {
            chains.push_str(&format!(
                "    - filter_chain_match: {{destination_port: {port}}}\n      filters: {}\n",
                tcp_proxy(stat_prefix, cluster)
            ));
        }
        format!(
            "  - name: {name}\n    address: {}\n    traffic_direction: INBOUND\n    listener_filters: [{ORIGINAL_DST}]\n    filter_chains:\n{chains}    - filters: {}\n",
            address(at),
            tcp_proxy(passthrough.0, passthrough.1),
        )
    }

    /// An ORIGINAL_DST cluster, optionally binding its upstream connections to `bind`.
    pub fn original_dst_cluster(name: &str, bind: Option<&str>) -> String {
        let bind = bind
            .map(|ip| {
                format!(
                    r#"upstream_bind_config: {{source_address: {{address: "{ip}", port_value: 0}}}}"#
                )
            })
            .unwrap_or_default();
        format!(
            "  - {{name: \"{name}\", type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 2s, {bind}}}\n"
        )
    }

    /// A bootstrap with admin on 127.0.0.1:15000 (inside the pod).
    pub fn bootstrap(listeners: &[String], clusters: &[String]) -> String {
        format!(
            "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}}}\nstatic_resources:\n  listeners:\n{}  clusters:\n{}",
            listeners.concat(),
            clusters.concat()
        )
    }
}

/// Tern running as uid 1337 in a pod namespace, as the sidecar runs; stopped on drop.
struct Sidecar<'a> {
    pod: &'a Netns,
    dir: PathBuf,
    admin: SocketAddr,
    _process: KillOnDrop,
}

impl<'a> Sidecar<'a> {
    /// Starts Tern in `pod` with `bootstrap` and waits until it reports ready.
    fn start(pod: &'a Netns, bootstrap: &str) -> Sidecar<'a> {
        let dir = std::env::temp_dir().join(format!("tern-capture-{}", pod.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let config = dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let process = pod
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
        let sidecar = Sidecar {
            pod,
            dir,
            admin: at("127.0.0.1", 15000),
            _process: KillOnDrop(process),
        };
        sidecar.wait_ready();
        sidecar
    }

    /// Polls `/ready` until LIVE (or fails after the deadline).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get_in(self.pod, self.admin, "/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tern in {} did not become ready",
                self.pod.name
            );
            std::thread::yield_now();
        }
    }

    /// The value of stat `name` (exact), or -1 when Tern does not have it.
    fn stat(&self, name: &str) -> i64 {
        let (status, body) = http_get_in(self.pod, self.admin, "/stats").expect("admin reachable");
        assert_eq!(status, 200, "/stats: {body}");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    }
}

impl Drop for Sidecar<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Istio's sidecar listeners for a dual-stack pod with one service port, 8080.
fn dual_stack_bootstrap() -> String {
    // Tern's sockets are IPv6-only, so each family has its own listeners and, since an upstream
    // bind address of the other family is skipped, its own inbound clusters.
    config::bootstrap(
        &[
            config::virtual_outbound("virtualOutbound", at("0.0.0.0", 15001), "passthrough"),
            config::virtual_outbound("virtualOutbound6", at("::", 15001), "passthrough6"),
            config::outbound_port(at("0.0.0.0", 8080), "handoff"),
            config::outbound_port(at("::", 8080), "handoff6"),
            config::virtual_inbound(
                "virtualInbound",
                at("0.0.0.0", 15006),
                &[(8080, "inbound_8080", "inbound|8080||")],
                ("inbound_passthrough", "InboundPassthroughClusterIpv4"),
            ),
            config::virtual_inbound(
                "virtualInbound6",
                at("::", 15006),
                &[(8080, "inbound6_8080", "inbound6|8080||")],
                ("inbound6_passthrough", "InboundPassthroughClusterIpv6"),
            ),
        ],
        &[
            config::original_dst_cluster("PassthroughCluster", None),
            config::original_dst_cluster("inbound|8080||", Some("127.0.0.6")),
            config::original_dst_cluster("InboundPassthroughClusterIpv4", Some("127.0.0.6")),
            config::original_dst_cluster("inbound6|8080||", Some("::6")),
            config::original_dst_cluster("InboundPassthroughClusterIpv6", Some("::6")),
        ],
    )
}

#[test]
fn dual_stack_pod_captures_ipv4_and_ipv6() {
    if !have_prerequisites() {
        return;
    }
    const POD_V4: &str = "10.250.17.1";
    const PEER_V4: &str = "10.250.17.2";
    const POD_V6: &str = "fd00:250:17::1";
    const PEER_V6: &str = "fd00:250:17::2";
    let pod = Netns::create("pod6").unwrap();
    let peer = Netns::create("peer6").unwrap();
    veth(
        &pod,
        &[&format!("{POD_V4}/24"), &format!("{POD_V6}/64")],
        &peer,
        &[&format!("{PEER_V4}/24"), &format!("{PEER_V6}/64")],
    )
    .unwrap();

    // Outside: a server on two ports. In the pod: the app on 8080. All dual-stack sockets.
    serve_who(&peer, 8080, "server:8080");
    serve_who(&peer, 9090, "server:9090");
    serve_who(&pod, 8080, "app");

    let tern = Sidecar::start(&pod, &dual_stack_bootstrap());

    // Istio's dual-stack mode: IPv6 rules because the pod has an IPv6 address (and `::6` on lo).
    install_capture(&pod, &injector_args(&[], &["--dual-stack"]));

    // Outbound to a port with its own listener: each family handed off to its wildcard.
    assert_eq!(
        fetch_in(&pod, at(PEER_V4, 8080)).unwrap(),
        format!("server:8080 saw {POD_V4}\n")
    );
    assert_eq!(
        fetch_in(&pod, at(PEER_V6, 8080)).unwrap(),
        format!("server:8080 saw {POD_V6}\n")
    );
    assert_eq!(tern.stat("tcp.handoff.downstream_cx_total"), 1);
    assert_eq!(tern.stat("tcp.handoff6.downstream_cx_total"), 1);
    assert_eq!(tern.stat("listener.[__]_8080.downstream_cx_total"), 1);
    // Outbound elsewhere: each family's virtualOutbound chain.
    assert_eq!(
        fetch_in(&pod, at(PEER_V6, 9090)).unwrap(),
        format!("server:9090 saw {POD_V6}\n")
    );
    assert_eq!(tern.stat("tcp.passthrough6.downstream_cx_total"), 1);
    assert_eq!(tern.stat("tcp.passthrough.downstream_cx_total"), 0);
    assert_eq!(
        fetch_in(&pod, at(PEER_V4, 9090)).unwrap(),
        format!("server:9090 saw {POD_V4}\n")
    );
    assert_eq!(tern.stat("tcp.passthrough.downstream_cx_total"), 1);
    assert_eq!(tern.stat("listener.[__]_15001.downstream_cx_total"), 1);
    assert_eq!(tern.stat("listener.0.0.0.0_15001.downstream_cx_total"), 1);

    // Inbound: each family captured on its own 15006 and delivered from its passthrough source.
    assert_eq!(fetch_in(&peer, at(POD_V6, 8080)).unwrap(), "app saw ::6\n");
    assert_eq!(tern.stat("tcp.inbound6_8080.downstream_cx_total"), 1);
    assert_eq!(
        fetch_in(&peer, at(POD_V4, 8080)).unwrap(),
        "app saw 127.0.0.6\n"
    );
    assert_eq!(tern.stat("tcp.inbound_8080.downstream_cx_total"), 1);
    assert_eq!(tern.stat("listener.[__]_15006.downstream_cx_total"), 1);
    assert_eq!(tern.stat("listener.0.0.0.0_15006.downstream_cx_total"), 1);
}

#[test]
fn excluded_cidr_bypasses_tern() {
    if !have_prerequisites() {
        return;
    }
    const POD_IP: &str = "10.250.18.1";
    const CAPTURED_IP: &str = "10.250.18.2";
    const EXCLUDED_IP: &str = "10.250.18.3";
    let pod = Netns::create("podx").unwrap();
    let peer = Netns::create("peerx").unwrap();
    veth(
        &pod,
        &[&format!("{POD_IP}/24")],
        &peer,
        &[&format!("{CAPTURED_IP}/24"), &format!("{EXCLUDED_IP}/24")],
    )
    .unwrap();
    serve_who(&peer, 8080, "server");

    let tern = Sidecar::start(
        &pod,
        &config::bootstrap(
            &[config::virtual_outbound(
                "virtualOutbound",
                at("0.0.0.0", 15001),
                "passthrough",
            )],
            &[config::original_dst_cluster("PassthroughCluster", None)],
        ),
    );
    install_capture(
        &pod,
        &injector_args(&[("-x", &format!("{EXCLUDED_IP}/32"))], &[]),
    );

    // The excluded address: straight from the pod to the server, Tern never sees it.
    assert_eq!(
        fetch_in(&pod, at(EXCLUDED_IP, 8080)).unwrap(),
        format!("server saw {POD_IP}\n")
    );
    assert_eq!(tern.stat("listener.0.0.0.0_15001.downstream_cx_total"), 0);
    assert_eq!(tern.stat("tcp.passthrough.downstream_cx_total"), 0);
    // Its neighbour on the same server and subnet is still captured.
    assert_eq!(
        fetch_in(&pod, at(CAPTURED_IP, 8080)).unwrap(),
        format!("server saw {POD_IP}\n")
    );
    assert_eq!(tern.stat("listener.0.0.0.0_15001.downstream_cx_total"), 1);
    assert_eq!(tern.stat("tcp.passthrough.downstream_cx_total"), 1);
}

#[test]
fn inbound_ports_list_limits_inbound_capture() {
    if !have_prerequisites() {
        return;
    }
    const POD_IP: &str = "10.250.19.1";
    const PEER_IP: &str = "10.250.19.2";
    let pod = Netns::create("podb").unwrap();
    let peer = Netns::create("peerb").unwrap();
    veth(
        &pod,
        &[&format!("{POD_IP}/24")],
        &peer,
        &[&format!("{PEER_IP}/24")],
    )
    .unwrap();
    serve_who(&pod, 8080, "app:8080");
    serve_who(&pod, 9000, "app:9000");

    let tern = Sidecar::start(
        &pod,
        &config::bootstrap(
            &[config::virtual_inbound(
                "virtualInbound",
                at("0.0.0.0", 15006),
                &[(8080, "inbound_8080", "inbound|8080||")],
                ("inbound_passthrough", "InboundPassthroughClusterIpv4"),
            )],
            &[
                config::original_dst_cluster("inbound|8080||", Some("127.0.0.6")),
                config::original_dst_cluster("InboundPassthroughClusterIpv4", Some("127.0.0.6")),
            ],
        ),
    );
    install_capture(&pod, &injector_args(&[("-b", "8080")], &[]));

    // A listed port: through Tern, delivered from 127.0.0.6.
    assert_eq!(
        fetch_in(&peer, at(POD_IP, 8080)).unwrap(),
        "app:8080 saw 127.0.0.6\n"
    );
    assert_eq!(tern.stat("tcp.inbound_8080.downstream_cx_total"), 1);
    // Any other port: straight to the app, which sees the real client.
    assert_eq!(
        fetch_in(&peer, at(POD_IP, 9000)).unwrap(),
        format!("app:9000 saw {PEER_IP}\n")
    );
    assert_eq!(tern.stat("tcp.inbound_passthrough.downstream_cx_total"), 0);
    assert_eq!(tern.stat("listener.0.0.0.0_15006.downstream_cx_total"), 1);
}
