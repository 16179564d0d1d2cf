//! Istio's own pilot-agent in front of the proxy: `pilot-agent proxy sidecar` (built from the
//! Istio version istiod-standalone runs) in a pod's network namespace renders Istio's bootstrap
//! template, starts Envoy 1.40.0 or Tern as its `binaryPath` with its own command line, serves
//! the workload certificates over its SDS socket, proxies istiod's xDS through `./etc/istio/
//! proxy/XDS`, answers readiness on 15020 (and, through the proxy's static listener, on 15021),
//! and on SIGTERM drains the proxy (`POST /drain_listeners?inboundonly&graceful`) and kills it.
//!
//! The same test runs with Envoy (the reference) and with Tern. istiod runs inside the pod's
//! namespace on a loopback TCP port (the agent's `discoveryAddress` must be `host:port`), with
//! the stock-Envoy profile for Envoy (no Istio contrib filters) and a default install's for Tern.
//! The kit is tests/src/pilot_agent.rs; how the agent runs without Kubernetes is in docs/istio.md.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_tests::envoy::envoy_binary;
use tern_tests::istiod::{self, Interception, Istiod, PRODUCTPAGE, Profile, Workload};
use tern_tests::netns::{Netns, connect_in};
use tern_tests::pilot_agent::{AgentOptions, PilotAgent, bootstrap_template, pilot_agent_binary};
use tern_tests::prereq::require;
use tern_tests::process::{ProxyKind, tern_binary};

const MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/istiod");
/// The agent's start-up, the proxy's and istiod's first push, on a loaded 2-core machine.
const READY_DEADLINE: Duration = Duration::from_secs(90);
/// `ProxyConfig.drainDuration` (the proxy's `--drain-time-s`): short, so the end of the inbound
/// drain (listeners stop) falls inside the termination drain.
const DRAIN_S: u32 = 1;
/// `ProxyConfig.terminationDrainDuration`: how long the agent waits before it kills the proxy.
const TERMINATION_DRAIN_S: u32 = 6;

/// A client pod of no service whose sidecar binds its outbound listeners (no capture), so a test
/// can hold a connection to `127.0.0.1:9080` without iptables.
const CLIENT: Workload<'static> = Workload {
    pod: "client-5f8b9c7d6-abcde",
    namespace: "default",
    ip: "10.10.0.3",
    labels: &[("app", "client"), ("version", "v1")],
    service_account: "client",
    interception: Interception::None,
};

fn prerequisites(kind: ProxyKind) -> bool {
    istiod::prerequisites(&[kind])
        && require(
            pilot_agent_binary().is_some() && bootstrap_template().is_some(),
            "pilot-agent is not built (scripts/install-test-deps.d/pilot-agent.sh, needs Go)",
        )
}

fn scratch(kind: ProxyKind, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tern-pilot-agent-{test}-{}-{}",
        kind.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pod")).expect("scratch dir");
    dir
}

/// The `name: value` lines of a plain-text `/stats` answer.
fn stat(stats: &str, name: &str) -> Option<i64> {
    stats.lines().find_map(|line| {
        let (n, v) = line.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// The listener names in `/listeners?format=json`.
fn listener_names(json: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(json).expect("listeners JSON");
    let mut names: Vec<String> = value["listener_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A scratch directory for test `test`, the pod's network namespace, and istiod serving the
/// mesh on TCP inside it (the agent takes a `host:port` discovery address only). Envoy gets
/// stock Envoy's profile, Tern a default install's.
async fn agent_pod(kind: ProxyKind, test: &str) -> (PathBuf, Netns, Istiod) {
    let dir = scratch(kind, test);
    let pod = Netns::create("agent").expect("pod namespace");
    let profile = match kind {
        ProxyKind::Envoy => Profile::StockEnvoy,
        ProxyKind::Tern => Profile::IstioDefault,
    };
    let istiod = Istiod::start_in(&pod, Path::new(MESH), &dir, profile)
        .await
        .expect("istiod starts in the pod");
    (dir, pod, istiod)
}

/// Whether a TCP connection to `127.0.0.1:port` in `pod` is accepted.
async fn accepts(pod: &Netns, port: u16) -> bool {
    connect_in(&pod.name, ([127, 0, 0, 1], port).into())
        .await
        .is_ok()
}

async fn pilot_agent_runs_the_proxy_and_drains_it_on_sigterm(kind: ProxyKind, proxy: &Path) {
    let (dir, pod, istiod) = agent_pod(kind, "sigterm").await;
    let options = AgentOptions {
        proxy,
        discovery: &istiod.address,
        drain_duration_s: DRAIN_S,
        termination_drain_s: TERMINATION_DRAIN_S,
        cpu_limit: Some(2),
        env: &[],
    };
    let mut agent =
        PilotAgent::start(&pod, &dir.join("pod"), &PRODUCTPAGE, &options).expect("agent starts");

    // Ready as the kubelet sees it: the agent's probe on 15020, and through the proxy's static
    // listener 15021 (route /healthz/ready -> cluster `agent`, 127.0.0.1:15020).
    agent
        .wait_for(15020, "/healthz/ready", 200, READY_DEADLINE)
        .await
        .expect("the agent reports the proxy ready");
    agent
        .wait_for(15021, "/healthz/ready", 200, READY_DEADLINE)
        .await
        .expect("15021 forwards the agent's ready");
    let log = agent.log();
    // The agent's own command line, derived from ProxyConfig and ISTIO_CPU_LIMIT.
    let expected = format!(
        "Envoy command: [-c etc/istio/proxy/envoy-rev.json --drain-time-s {DRAIN_S} \
         --drain-strategy immediate --local-address-ip-version v4 --file-flush-interval-msec \
         1000 --disable-hot-restart --allow-unknown-static-fields -l warning \
         --skip-deprecated-logs --concurrency 2]"
    );
    assert!(
        log.contains(&expected),
        "{expected} not in the agent's log:\n{log}"
    );
    let proxies = agent.proxy_pids();
    assert_eq!(proxies.len(), 1, "the agent runs one proxy: {proxies:?}");

    let (status, stats) = agent
        .get(15000, "/stats?usedonly&filter=^(server\\.(state|concurrency)|listener_manager\\.(workers_started|lds\\.update_(success|rejected))|cluster_manager\\.cds\\.update_(success|rejected))$")
        .await
        .expect("admin answers");
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stat(&stats, "server.state"), Some(0), "{stats}");
    assert_eq!(stat(&stats, "server.concurrency"), Some(2), "{stats}");
    assert_eq!(stat(&stats, "listener_manager.workers_started"), Some(1));
    assert!(stat(&stats, "cluster_manager.cds.update_success") >= Some(1));
    assert!(stat(&stats, "listener_manager.lds.update_success") >= Some(1));
    for rejected in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(
            stat(&stats, rejected).unwrap_or(0),
            0,
            "{rejected}: {stats}"
        );
    }

    // istiod's listeners arrived through the agent's XDS proxy.
    let (_, listeners) = agent
        .get(15000, "/listeners?format=json")
        .await
        .expect("admin answers");
    let names = listener_names(&listeners);
    for name in ["virtualInbound", "virtualOutbound", "0.0.0.0_9080"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    // The agent's SDS server (file-mounted certificates) served both secrets, which the mTLS
    // filter chains and clusters wait for.
    let (_, secrets) = agent
        .get(
            15000,
            "/config_dump?mask=dynamic_active_secrets,dynamic_warming_secrets",
        )
        .await
        .expect("admin answers");
    let dump: serde_json::Value = serde_json::from_str(&secrets).expect("config_dump JSON");
    let active: Vec<&str> = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["dynamic_active_secrets"].as_array().into_iter().flatten())
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        active.contains(&"default") && active.contains(&"ROOTCA"),
        "active secrets {active:?} in {secrets}"
    );
    assert!(accepts(&pod, 15006).await && accepts(&pod, 15001).await);

    // SIGTERM: the agent drains inbound listeners (`drain_listeners?inboundonly&graceful`);
    // after --drain-time-s the inbound listener stops accepting while outbound still does, and
    // after terminationDrainDuration the agent kills the proxy and exits.
    agent.terminate().expect("SIGTERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(TERMINATION_DRAIN_S as u64);
    loop {
        if !accepts(&pod, 15006).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "virtualInbound still accepts {TERMINATION_DRAIN_S}s after SIGTERM; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        agent.proxy_pids(),
        proxies,
        "the proxy is still running while its inbound listener is stopped"
    );
    assert!(accepts(&pod, 15001).await, "outbound keeps accepting");
    let (_, stopped) = agent
        .get(15000, "/stats?filter=^listener_manager\\.listener_stopped$")
        .await
        .expect("admin answers during the drain");
    assert_eq!(
        stat(&stopped, "listener_manager.listener_stopped"),
        Some(1),
        "only virtualInbound stops: {stopped}"
    );
    let exit = agent
        .wait_for_exit(Duration::from_secs(TERMINATION_DRAIN_S as u64 + 20))
        .await
        .expect("wait");
    let status = exit.unwrap_or_else(|| panic!("the agent did not exit; log:\n{}", agent.log()));
    assert!(
        status.success(),
        "agent exit {status}; log:\n{}",
        agent.log()
    );
    for pid in proxies {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "the proxy {pid} outlived the agent"
        );
    }
    let log = agent.log();
    for line in [
        "Agent draining Proxy for termination",
        "Graceful termination period complete, terminating remaining proxies.",
        "Agent has successfully terminated",
    ] {
        assert!(
            log.contains(line),
            "{line:?} not in the agent's log:\n{log}"
        );
    }
    drop(agent);
    drop(istiod);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_runs_envoy_serves_it_certs_and_config_and_drains_it_on_sigterm() {
    if !prerequisites(ProxyKind::Envoy) {
        return;
    }
    let envoy = envoy_binary().expect("checked");
    pilot_agent_runs_the_proxy_and_drains_it_on_sigterm(ProxyKind::Envoy, &envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_runs_tern_serves_it_certs_and_config_and_drains_it_on_sigterm() {
    if !prerequisites(ProxyKind::Tern) {
        return;
    }
    pilot_agent_runs_the_proxy_and_drains_it_on_sigterm(ProxyKind::Tern, &tern_binary()).await;
}

/// `EXIT_ON_ZERO_ACTIVE_CONNECTIONS=true`: after SIGTERM and `MINIMUM_DRAIN_DURATION` the agent
/// polls `/stats?usedonly&filter=downstream_cx_active$` every second, summing the
/// `listener.<name>.downstream_cx_active` gauges (not `worker_*`, not 15021/15090), and kills the
/// proxy once they are 0. A proxy that did not report them would be killed at once ("not
/// available"); one that miscounted would be killed with connections open or never.
async fn pilot_agent_waits_for_the_last_connection(kind: ProxyKind, proxy: &Path) {
    let (dir, pod, istiod) = agent_pod(kind, "zero").await;
    let options = AgentOptions {
        proxy,
        discovery: &istiod.address,
        drain_duration_s: 45,
        termination_drain_s: 5,
        cpu_limit: Some(2),
        env: &[
            ("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "true"),
            ("MINIMUM_DRAIN_DURATION", "1s"),
        ],
    };
    let mut agent =
        PilotAgent::start(&pod, &dir.join("pod"), &CLIENT, &options).expect("agent starts");
    agent
        .wait_for(15021, "/healthz/ready", 200, READY_DEADLINE)
        .await
        .expect("ready");
    // istiod's outbound listener for the mesh's port 9080, bound on 127.0.0.1 (no capture).
    let held = connect_in(&pod.name, ([127, 0, 0, 1], 9080).into())
        .await
        .expect("the outbound listener accepts");
    let proxies = agent.proxy_pids();
    assert_eq!(proxies.len(), 1, "{proxies:?}");

    agent.terminate().expect("SIGTERM");
    agent
        .wait_for_log(
            "There are still 1 active connections",
            Duration::from_secs(20),
        )
        .await
        .expect("the agent counts the held connection");
    assert_eq!(
        agent.proxy_pids(),
        proxies,
        "the proxy runs while a connection is open"
    );
    assert!(
        !agent
            .log()
            .contains("downstream_cx_active are not available"),
        "{}",
        agent.log()
    );
    drop(held);
    let exit = agent
        .wait_for_exit(Duration::from_secs(20))
        .await
        .expect("wait");
    let status = exit.unwrap_or_else(|| panic!("the agent did not exit; log:\n{}", agent.log()));
    assert!(
        status.success(),
        "agent exit {status}; log:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("There are no more active connections. terminating proxy..."),
        "{log}"
    );
    drop(agent);
    drop(istiod);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_exit_on_zero_active_connections_waits_for_envoys_last_connection() {
    if !prerequisites(ProxyKind::Envoy) {
        return;
    }
    let envoy = envoy_binary().expect("checked");
    pilot_agent_waits_for_the_last_connection(ProxyKind::Envoy, &envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_exit_on_zero_active_connections_waits_for_terns_last_connection() {
    if !prerequisites(ProxyKind::Tern) {
        return;
    }
    pilot_agent_waits_for_the_last_connection(ProxyKind::Tern, &tern_binary()).await;
}

/// A native sidecar's preStop hook (`pilot-agent request --debug-port=15020 POST drain`): the
/// agent's `/drain` sends `drain_listeners?inboundonly&graceful&skip_exit`, so the proxy drains
/// but keeps its listeners past the drain time; the SIGTERM that follows kills it at once.
async fn pilot_agent_prestop_drain_keeps_listeners_and_sigterm_kills_at_once(
    kind: ProxyKind,
    proxy: &Path,
) {
    let (dir, pod, istiod) = agent_pod(kind, "prestop").await;
    let options = AgentOptions {
        proxy,
        discovery: &istiod.address,
        drain_duration_s: DRAIN_S,
        termination_drain_s: 30,
        cpu_limit: Some(2),
        env: &[],
    };
    let mut agent =
        PilotAgent::start(&pod, &dir.join("pod"), &PRODUCTPAGE, &options).expect("agent starts");
    agent
        .wait_for(15021, "/healthz/ready", 200, READY_DEADLINE)
        .await
        .expect("ready");
    let (status, body) = agent.post(15020, "/drain").await.expect("agent answers");
    assert_eq!((status, body.as_str()), (200, "OK"));
    agent
        .wait_for_log("Agent draining proxy", Duration::from_secs(10))
        .await
        .expect("the agent drains");
    // Three drain times later the inbound listener still accepts (skip_exit): nothing stopped.
    let until = tokio::time::Instant::now() + Duration::from_secs(3 * DRAIN_S as u64);
    while tokio::time::Instant::now() < until {
        assert!(
            accepts(&pod, 15006).await,
            "virtualInbound stopped despite skip_exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, stopped) = agent
        .get(15000, "/stats?filter=^listener_manager\\.listener_stopped$")
        .await
        .expect("admin answers");
    assert_eq!(
        stat(&stopped, "listener_manager.listener_stopped"),
        Some(0),
        "{stopped}"
    );

    let terminated = tokio::time::Instant::now();
    agent.terminate().expect("SIGTERM");
    let exit = agent
        .wait_for_exit(Duration::from_secs(20))
        .await
        .expect("wait")
        .unwrap_or_else(|| panic!("the agent did not exit; log:\n{}", agent.log()));
    assert!(
        terminated.elapsed() < Duration::from_secs(10),
        "no second drain (terminationDrainDuration is 30s): {:?}",
        terminated.elapsed()
    );
    assert!(exit.success(), "agent exit {exit}; log:\n{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("Agent already drained, exiting immediately"),
        "{log}"
    );
    drop(agent);
    drop(istiod);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_prestop_drain_keeps_envoys_listeners_and_sigterm_kills_it_at_once() {
    if !prerequisites(ProxyKind::Envoy) {
        return;
    }
    let envoy = envoy_binary().expect("checked");
    pilot_agent_prestop_drain_keeps_listeners_and_sigterm_kills_at_once(ProxyKind::Envoy, &envoy)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_prestop_drain_keeps_terns_listeners_and_sigterm_kills_it_at_once() {
    if !prerequisites(ProxyKind::Tern) {
        return;
    }
    pilot_agent_prestop_drain_keeps_listeners_and_sigterm_kills_at_once(
        ProxyKind::Tern,
        &tern_binary(),
    )
    .await;
}
