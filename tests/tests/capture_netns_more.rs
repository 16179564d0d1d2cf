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

use tern_tests::netns::{Netns, fetch_in, veth};
use tern_tests::sidecar::{
    Sidecar, at, config, have_prerequisites, injector_args, install_capture, serve_who,
};

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
