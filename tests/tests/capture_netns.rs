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

use tern_tests::netns::{Netns, fetch_in, serve_in, veth};
use tern_tests::sidecar::{
    Sidecar, at, config, have_prerequisites, injector_args, install_capture,
};

const POD_IP: &str = "10.250.7.1";
const PEER_IP: &str = "10.250.7.2";

fn bootstrap() -> String {
    config::bootstrap(
        &[
            config::virtual_outbound("virtualOutbound", at("0.0.0.0", 15001), "passthrough"),
            config::outbound_port(at(PEER_IP, 8080), "handoff"),
            config::virtual_inbound(
                "virtualInbound",
                at("0.0.0.0", 15006),
                &[(8080, "inbound_8080", "inbound|8080||")],
                ("inbound_passthrough", "InboundPassthroughClusterIpv4"),
            ),
        ],
        &[
            config::original_dst_cluster("PassthroughCluster", None),
            config::original_dst_cluster("inbound|8080||", Some("127.0.0.6")),
            config::original_dst_cluster("InboundPassthroughClusterIpv4", Some("127.0.0.6")),
        ],
    )
}

#[test]
fn outbound_handoff_inbound_capture_and_exclusions() {
    if !have_prerequisites() {
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

    // Tern as uid 1337, as the sidecar runs, then Istio's injector flags.
    let tern = Sidecar::start(&pod, &bootstrap());
    install_capture(&pod, &injector_args(&[], &[]));

    // Outbound to a destination with its own listener: handed off to it.
    assert_eq!(fetch_in(&pod, at(PEER_IP, 8080)).unwrap(), "server:8080\n");
    assert_eq!(tern.stat("tcp.handoff.downstream_cx_total"), 1);
    // Outbound elsewhere: virtualOutbound's own chain (PassthroughCluster).
    assert_eq!(fetch_in(&pod, at(PEER_IP, 9090)).unwrap(), "server:9090\n");
    assert_eq!(tern.stat("tcp.passthrough.downstream_cx_total"), 1);
    assert_eq!(tern.stat("tcp.handoff.downstream_cx_total"), 1);

    // Inbound to 8080: captured on 15006, original port known, delivered from 127.0.0.6.
    assert_eq!(
        fetch_in(&peer, at(POD_IP, 8080)).unwrap(),
        "app saw 127.0.0.6\n"
    );
    assert_eq!(tern.stat("tcp.inbound_8080.downstream_cx_total"), 1);
    // Inbound to an excluded port: the app sees the real client, Tern sees nothing.
    assert_eq!(
        fetch_in(&peer, at(POD_IP, 15020)).unwrap(),
        format!("app saw {PEER_IP}\n")
    );
    assert_eq!(tern.stat("tcp.inbound_passthrough.downstream_cx_total"), 0);
    assert_eq!(tern.stat("listener.0.0.0.0_15006.downstream_cx_total"), 1);
}
