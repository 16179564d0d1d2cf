//! `tern-bench`: measures Tern against the direct path, in the same run and on the same machine.
//!
//! This is the first scenario of the harness that BENCHMARKS.md describes. It covers TCP through
//! `tcp_proxy` only: connection rate (connect, one small exchange, close) and bulk throughput
//! (one connection, 64 MiB each way). Tern runs in-process with one worker. Results are printed
//! as a table and, with `--json PATH`, written as JSON. Comparators (Envoy, nginx, haproxy), load
//! pinning and CPU accounting arrive with the benchmark issue.

use std::net::SocketAddr;
use std::time::Instant;
use tern::config::bootstrap::Bootstrap;
use tern::server::{self, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use xds_client::pb::envoy::config::bootstrap::v3 as proto;
use xds_client::proto_json::{self, ReadOptions};

const CONNECTIONS: usize = 2000;
const BULK_BYTES: usize = 64 << 20;

/// An upstream that answers each read with the same bytes (an echo).
async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(address)
}

async fn start_tern(upstream: SocketAddr) -> anyhow::Result<(server::ServerHandle, SocketAddr)> {
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: bench, cluster: echo}}
  clusters:
  - name: echo
    load_assignment: {{cluster_name: echo, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}
"#,
        upstream.port()
    );
    let source: proto::Bootstrap =
        proto_json::from_text(&yaml, "bench.yaml", ReadOptions::default())?;
    let bootstrap = Bootstrap::new(source, None, None)?;
    let options = ServerOptions {
        concurrency: 1,
        ..Default::default()
    };
    let (handle, manager) = server::start(bootstrap, options)?;
    tokio::spawn(manager);
    let address = handle.listener_addresses().await["bench"];
    Ok((handle, address))
}

/// Connections per second: connect, write 64 bytes, read them back, close.
async fn connection_rate(target: SocketAddr) -> anyhow::Result<f64> {
    let payload = [7u8; 64];
    let started = Instant::now();
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(target).await?;
        stream.write_all(&payload).await?;
        let mut back = [0u8; 64];
        stream.read_exact(&mut back).await?;
    }
    Ok(CONNECTIONS as f64 / started.elapsed().as_secs_f64())
}

/// MiB/s through one connection, writing and reading concurrently.
async fn bulk_throughput(target: SocketAddr) -> anyhow::Result<f64> {
    let stream = TcpStream::connect(target).await?;
    let (mut r, mut w) = stream.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 << 10];
        let mut sent = 0;
        while sent < BULK_BYTES {
            w.write_all(&chunk).await?;
            sent += chunk.len();
        }
        w.shutdown().await?;
        anyhow::Ok(())
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut received = 0;
    while received < BULK_BYTES {
        let n = r.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "stream ended after {received} bytes");
        received += n;
    }
    writer.await??;
    Ok(BULK_BYTES as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let json_path = std::env::args().skip_while(|a| a != "--json").nth(1);
    let upstream = echo_server().await?;
    let (handle, proxy) = start_tern(upstream).await?;
    let mut rows = Vec::new();
    for (path, target) in [("direct", upstream), ("tern", proxy)] {
        let rate = connection_rate(target).await?;
        let bulk = bulk_throughput(target).await?;
        rows.push((path, rate, bulk));
    }
    println!("{:<8} {:>14} {:>14}", "path", "conn/s", "bulk MiB/s");
    for (path, rate, bulk) in &rows {
        println!("{path:<8} {rate:>14.0} {bulk:>14.1}");
    }
    let (direct, tern) = (&rows[0], &rows[1]);
    println!(
        "tern/direct: connection rate {:.2}, bulk throughput {:.2}",
        tern.1 / direct.1,
        tern.2 / direct.2
    );
    if let Some(path) = json_path {
        let results: Vec<_> = rows
            .iter()
            .map(|(p, rate, bulk)| serde_json::json!({"path": p, "connections_per_second": rate, "bulk_mib_per_second": bulk}))
            .collect();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(
                &serde_json::json!({"scenario": "tcp", "results": results}),
            )?,
        )?;
    }
    handle.send(server::Command::Shutdown { graceful: false });
    Ok(())
}
