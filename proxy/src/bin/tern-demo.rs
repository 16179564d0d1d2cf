//! `tern-demo`: Tern on a bundled bootstrap, with nothing else needed.
//!
//! Starts two small upstream servers ("blue" and "green"), starts Tern with a static bootstrap
//! that load-balances a TCP listener over them with weights 3:1, sends 100 connections through
//! it, and prints what each upstream received and where the admin API is. It then keeps running
//! (Ctrl-C stops it) so the admin endpoints can be explored; `--exit` stops after the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tern::config::bootstrap::Bootstrap;
use tern::server::{self, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use xds_client::pb::envoy::config::bootstrap::v3 as proto;
use xds_client::proto_json::{self, ReadOptions};

const BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: demo
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: demo
          cluster: colours
  clusters:
  - name: colours
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: colours
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: BLUE_PORT}}}
          load_balancing_weight: 3
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: GREEN_PORT}}}
          load_balancing_weight: 1
"#;

/// An upstream that answers every connection with its name and counts them.
async fn upstream(name: &'static str) -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let _ = stream.read_to_end(&mut request).await;
                let reply = format!("{name} got {} bytes", request.len());
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok((address, served))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let exit_after_report = std::env::args().any(|a| a == "--exit");
    let (blue, blue_served) = upstream("blue").await?;
    let (green, green_served) = upstream("green").await?;
    let yaml = BOOTSTRAP
        .replace("BLUE_PORT", &blue.port().to_string())
        .replace("GREEN_PORT", &green.port().to_string());
    let source: proto::Bootstrap =
        proto_json::from_text(&yaml, "demo.yaml", ReadOptions::default())?;
    let bootstrap = Bootstrap::new(source, None, None)?;
    let admin = bootstrap
        .admin
        .as_ref()
        .and_then(|a| a.socket())
        .ok_or_else(|| anyhow::anyhow!("no admin"))?;
    let options = ServerOptions {
        concurrency: 2,
        drain_time: Duration::from_secs(1),
        ..Default::default()
    };
    let (handle, manager) = server::start(bootstrap, options)?;
    let manager = tokio::spawn(manager);
    let logs = tern::admin::LogControl::new("info", None);
    let (admin, serve_admin) = tern::admin::bind(admin, handle.clone(), logs).await?;
    tokio::spawn(serve_admin);
    let proxy = handle.listener_addresses().await["demo"];

    println!(
        "Tern demo: listener 'demo' on {proxy}, weighted 3:1 over blue ({blue}) and green ({green})"
    );
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..100 {
        let mut stream = TcpStream::connect(proxy).await?;
        stream.write_all(format!("request {i}").as_bytes()).await?;
        stream.shutdown().await?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await?;
        let colour = reply.split_whitespace().next().unwrap_or("?").to_string();
        *replies.entry(colour).or_insert(0) += 1;
    }
    println!("sent 100 connections through Tern:");
    println!(
        "  blue  received {:3} connections",
        blue_served.load(Ordering::SeqCst)
    );
    println!(
        "  green received {:3} connections",
        green_served.load(Ordering::SeqCst)
    );
    println!("  (replies seen by the client: {replies:?})");
    println!("admin API: http://{admin}/  (try /stats?usedonly, /clusters, /config_dump, /ready)");
    if exit_after_report {
        handle.send(server::Command::Shutdown { graceful: false });
    } else {
        println!("running; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        handle.send(server::Command::Shutdown { graceful: true });
    }
    let _ = manager.await;
    Ok(())
}
