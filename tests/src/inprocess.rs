//! Tern inside the test process: a bootstrap in, a running server (with its own worker threads)
//! out, shut down when dropped.

use std::net::SocketAddr;
use std::time::Duration;
use tern::config::bootstrap::Bootstrap;
use tern::server::{self, ServerHandle, ServerOptions};
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::proto_json::{self, ReadOptions};

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
