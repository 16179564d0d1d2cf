//! Tern inside the test process: a bootstrap in, a running server (with its own worker threads)
//! out, shut down when dropped.

use crate::http_backend::http_request;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tern::config::bootstrap::Bootstrap;
use tern::server::{self, ServerHandle, ServerOptions};
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::proto_json::{self, ReadOptions};

/// How long the waits below may take.
const WAIT_DEADLINE: Duration = Duration::from_secs(20);

/// Waits until the admin server at `admin` answers `/ready` with 200 `LIVE`.
pub async fn wait_live(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
    loop {
        let r = http_request(admin, "GET", "admin", "/ready", &[])
            .await
            .expect("admin answers");
        if r.status == 200 {
            assert_eq!(r.text().trim(), "LIVE");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not LIVE within {WAIT_DEADLINE:?}: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /config_dump<query>` from the admin server at `admin`, which must answer 200 with JSON.
pub async fn config_dump(admin: SocketAddr, query: &str) -> Value {
    let r = http_request(admin, "GET", "admin", &format!("/config_dump{query}"), &[])
        .await
        .expect("admin answers");
    assert_eq!(r.status, 200);
    r.json.expect("config_dump is JSON")
}

/// The config_dump section whose `@type` is `envoy.admin.v3.<kind>` (e.g. `ClustersConfigDump`).
pub fn section<'a>(dump: &'a Value, kind: &str) -> &'a Value {
    dump["configs"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|s| {
                // The whole type name: `RoutesConfigDump` is not `ScopedRoutesConfigDump`.
                s["@type"]
                    .as_str()
                    .is_some_and(|t| t.rsplit('.').next() == Some(kind))
            })
        })
        .unwrap_or_else(|| panic!("no {kind} in {dump}"))
}

/// A running in-process server; dropping it shuts it down.
pub struct Running {
    pub handle: ServerHandle,
}

impl Running {
    /// Starts Tern from YAML with `concurrency` workers (drain time 5 s). Call inside a tokio
    /// runtime; panics with the reason if the bootstrap is invalid.
    pub async fn start(yaml: &str, concurrency: usize) -> Running {
        let source: bootstrap_proto::Bootstrap =
            proto_json::from_text(yaml, "bootstrap.yaml", ReadOptions::default())
                .expect("bootstrap parses");
        let bootstrap = Bootstrap::new(source, None, None).expect("bootstrap validates");
        let options = ServerOptions {
            concurrency,
            drain_time: Duration::from_secs(5),
            ..Default::default()
        };
        let (handle, manager) = server::start(bootstrap, options).expect("server starts");
        tokio::spawn(manager);
        Running { handle }
    }

    /// The bound address of listener `name`.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        *self
            .handle
            .listener_addresses()
            .await
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// The bound address of listener `name`, waiting (with a deadline) until a snapshot has it:
    /// for listeners that arrive over xDS.
    pub async fn wait_listener(&self, name: &str) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
        loop {
            if let Some(address) = self.handle.listener_addresses().await.get(name) {
                return *address;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "listener {name} never became active"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Serves the admin endpoints on an ephemeral loopback port (until the test's runtime ends)
    /// and returns their address.
    pub async fn admin(&self) -> SocketAddr {
        let logs = tern::admin::LogControl::new("info", None);
        let (address, serve) = tern::admin::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            self.handle.clone(),
            logs,
        )
        .await
        .expect("admin binds");
        tokio::spawn(serve);
        address
    }

    /// A stat's value, or -1 when it does not exist.
    pub fn stat(&self, name: &str) -> i64 {
        self.handle
            .store()
            .samples()
            .into_iter()
            .find(|s| s.name == name)
            .map_or(-1, |s| s.value)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle
            .send(server::Command::Shutdown { graceful: false });
    }
}
