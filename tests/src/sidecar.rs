//! A captured pod in a few lines: Istio-shaped sidecar bootstraps, Tern running as uid 1337 in
//! a pod namespace, and `iptables-init` installing Istio's rules there.
//!
//! - [`config`] builds the listeners and clusters istiod would give a sidecar (`virtualOutbound`
//!   with hand-off, per-destination listeners, `virtualInbound` with chains by port,
//!   ORIGINAL_DST clusters binding 127.0.0.6 or `::6`).
//! - [`Sidecar`] runs `tern` from such a bootstrap inside a [`Netns`], waits for readiness, reads
//!   stats, and stops it on drop.
//! - [`injector_args`] and [`install_capture`] apply Istio's injector flags, with changes.

use crate::netns::{KillOnDrop, Netns, http_get_in, serve_in};
use crate::prereq::{is_root, require};
use crate::process::{tern_binary, workspace_binary};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("an IP address literal"), port)
}

/// Root and both iptables front ends, or skip (fail under `CI=true`).
pub fn have_prerequisites() -> bool {
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

/// A server in `ns` on `[::]:port` (both families: std leaves `IPV6_V6ONLY` off) that answers
/// `<name> saw <client address>`, IPv4 clients shown as IPv4.
pub fn serve_who(ns: &Netns, port: u16, name: &'static str) {
    serve_in(ns, at("::", port), move |peer| {
        format!("{name} saw {}\n", peer.ip().to_canonical())
    });
}

/// Istio's injector flags with some values replaced (`("-b", "8080")`) and more flags appended.
pub fn injector_args(overrides: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
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
pub fn install_capture(pod: &Netns, args: &[String]) {
    let out = pod
        .command(workspace_binary("iptables-init"))
        .args(args)
        .output()
        .expect("iptables-init runs");
    assert!(
        out.status.success(),
        "iptables-init {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub mod config {
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
pub struct Sidecar<'a> {
    pod: &'a Netns,
    dir: PathBuf,
    pub admin: SocketAddr,
    _process: KillOnDrop,
}

impl<'a> Sidecar<'a> {
    /// Starts Tern in `pod` with `bootstrap` and waits until it reports ready.
    pub fn start(pod: &'a Netns, bootstrap: &str) -> Sidecar<'a> {
        let dir = std::env::temp_dir().join(format!("tern-capture-{}", pod.name));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod temp dir");
        let config = dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap).expect("write bootstrap");
        let process = pod
            .command_as(1337, tern_binary())
            .args([
                "-c",
                config.to_str().expect("utf-8 temp path"),
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .spawn()
            .expect("tern starts");
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
    pub fn wait_ready(&self) {
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
    pub fn stat(&self, name: &str) -> i64 {
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
