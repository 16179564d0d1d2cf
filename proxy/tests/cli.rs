//! The `tern` binary as pilot-agent and operators use it: flags, `--mode validate`, signals.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/istio/xds")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(TERN).args(args).output().expect("tern runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn validate_accepts_istio_rendered_bootstrap() {
    let path = fixture("default_golden.json");
    let out = run(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("configuration '{}' OK\n", path.display())
    );
}

#[test]
fn validate_names_a_typo_in_one_line_and_exits_1() {
    let path = temp_file(
        "typo.json",
        r#"{"static_resources": {"clusters": [{"name": "a", "conect_timeout": "1s"}]}}"#,
    );
    let out = run(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "tern: {}: static_resources.clusters[0]: unrecognized field name 'conect_timeout'\n",
            path.display()
        )
    );
    // --allow-unknown-static-fields lets it through, as in Envoy.
    let out = run(&[
        "--mode",
        "validate",
        "--allow-unknown-static-fields",
        "-c",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn validate_reports_semantic_errors_with_the_resource() {
    let path = temp_file(
        "semantic.yaml",
        "static_resources:\n  clusters:\n  - name: c\n    type: ORIGINAL_DST\n",
    );
    let out = run(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "tern: cluster \"c\": static_resources.clusters[0].lb_policy: ORIGINAL_DST clusters require CLUSTER_PROVIDED\n"
    );
}

#[test]
fn config_yaml_merges_over_the_file() {
    let path = fixture("default_golden.json");
    let out = run(&[
        "--mode",
        "validate",
        "-c",
        path.to_str().unwrap(),
        "--config-yaml",
        "static_resources: {clusters: [{name: extra, type: ORIGINAL_DST}]}",
    ]);
    // The merged cluster is validated like the rest: proof the overlay was applied.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cluster \"extra\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_flag_and_missing_config_fail_in_one_line() {
    let out = run(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "tern: unexpected argument '--frobnicate' found\n"
    );
    let out = run(&["--mode", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "tern: no configuration: give -c/--config-path or --config-yaml\n"
    );
}

/// A running tern with one TCP listener (port 0) to an echo-less backend that holds connections.
struct Running {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tern(extra: &[&str], backend: SocketAddr) -> Running {
    let bootstrap = format!(
        r#"
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: b}}
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          access_log: [{{name: file, typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {}}}}}]
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config: {{virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]}}
  clusters:
  - name: b
    load_assignment: {{cluster_name: b, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}
"#,
        access_log_path(backend).display(),
        backend.port()
    );
    let config = temp_file(&format!("signals-{}.yaml", backend.port()), &bootstrap);
    let admin_file = config.with_extension("admin");
    let _ = std::fs::remove_file(&admin_file);
    let child = Command::new(TERN)
        .args([
            "-c",
            config.to_str().unwrap(),
            "--concurrency",
            "1",
            "-l",
            "error",
        ])
        .args(["--admin-address-path", admin_file.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = loop {
        if let Some(addr) = std::fs::read_to_string(&admin_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break addr;
        }
        assert!(Instant::now() < deadline, "tern wrote no admin address");
        std::thread::yield_now();
    };
    Running { child, admin }
}

fn http(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: a\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// Where `start_tern`'s HTTP listener writes its access log.
fn access_log_path(backend: SocketAddr) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tern-cli-access-{}.log", backend.port()))
}

fn listener_address(admin: SocketAddr) -> SocketAddr {
    named_listener(admin, "tcp")
}

fn named_listener(admin: SocketAddr, name: &str) -> SocketAddr {
    let (_, body) = http(admin, "GET", "/listeners");
    let prefix = format!("{name}::");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|a| a.parse().ok())
        .expect("tcp listener")
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// A backend that accepts and replies "hi" to whatever it reads, per read.
fn backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(b"hi").is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[test]
fn sigterm_stops_accepting_lets_open_connections_finish_then_exits() {
    let mut tern = start_tern(&["--drain-time-s", "30"], backend());
    let proxy = listener_address(tern.admin);
    let mut open = TcpStream::connect(proxy).unwrap();
    open.write_all(b"x").unwrap();
    let mut reply = [0u8; 2];
    open.read_exact(&mut reply).unwrap();
    signal(&tern.child, nix::sys::signal::Signal::SIGTERM);
    // Draining: the listener closes, the server reports DRAINING, the open connection still works.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(proxy).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::yield_now();
    }
    assert_eq!(
        http(tern.admin, "GET", "/ready"),
        (503, "DRAINING\n".to_string())
    );
    open.write_all(b"y").unwrap();
    open.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hi");
    assert!(
        tern.child.try_wait().unwrap().is_none(),
        "exited while a connection was open"
    );
    // When the last connection closes, tern exits well before the 30 s drain time.
    drop(open);
    let status = wait_exit(&mut tern.child, Duration::from_secs(10))
        .expect("exits after the last connection");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigint_exits_at_once_even_with_open_connections() {
    let mut tern = start_tern(&["--drain-time-s", "600"], backend());
    let proxy = listener_address(tern.admin);
    let mut open = TcpStream::connect(proxy).unwrap();
    open.write_all(b"x").unwrap();
    let mut reply = [0u8; 2];
    open.read_exact(&mut reply).unwrap();
    signal(&tern.child, nix::sys::signal::Signal::SIGINT);
    let status =
        wait_exit(&mut tern.child, Duration::from_secs(10)).expect("SIGINT exits promptly");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigusr1_reopens_logs_and_keeps_serving() {
    let upstream = backend();
    let log = access_log_path(upstream);
    let _ = std::fs::remove_file(&log);
    let tern = start_tern(&[], upstream);
    let proxy = named_listener(tern.admin, "http");
    assert_eq!(
        http(proxy, "GET", "/before").0,
        426,
        "HTTP/1.0 is refused, and logged"
    );
    // Log rotation: the file is moved away, SIGUSR1 makes Tern open a new one at the path.
    let rotated = log.with_extension("log.1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "first line never written");
        std::thread::yield_now();
    }
    std::fs::rename(&log, &rotated).unwrap();
    signal(&tern.child, nix::sys::signal::Signal::SIGUSR1);
    loop {
        http(proxy, "GET", "/after");
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/after")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGUSR1 did not reopen {}",
            log.display()
        );
        std::thread::yield_now();
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("\"GET /before HTTP/1.0\" 426"), "{old}");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
    assert_eq!(
        http(tern.admin, "GET", "/ready"),
        (200, "LIVE\n".to_string())
    );
}

#[test]
fn drain_listeners_needs_post_and_inboundonly_spares_outbound() {
    let tern = start_tern(&[], backend());
    let proxy = listener_address(tern.admin);
    let (status, body) = http(tern.admin, "GET", "/drain_listeners");
    assert_eq!(
        (status, body.as_str()),
        (405, "Method GET not allowed, POST required.")
    );
    // The listener has no traffic_direction, so inboundonly leaves it alone.
    assert_eq!(
        http(tern.admin, "POST", "/drain_listeners?inboundonly").0,
        200
    );
    assert!(TcpStream::connect(proxy).is_ok());
    assert_eq!(http(tern.admin, "POST", "/drain_listeners").0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(proxy).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after drain_listeners"
        );
        std::thread::yield_now();
    }
}
