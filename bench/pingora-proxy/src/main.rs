//! tern-bench's pingora comparator: pingora's reverse-proxy example (cloudflare/pingora
//! `docs/quick_start.md`, `pingora-proxy/examples/gateway.rs`) reduced to what the benchmark's
//! same-config rule asks of every proxy: one listener, every request to one plaintext HTTP/1.1
//! upstream, one worker thread, upstream keep-alive pooling (pingora's own pool, on by default),
//! and no access log (no `logging` callback, and no logger is installed for pingora's `log` calls).
//!
//! Usage: `pingora-proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--h2c]`.
//! `--h2c` also accepts HTTP/2 with prior knowledge downstream (S2); the upstream stays HTTP/1.1.
//! The pid file and upgrade socket go to the working directory, so instances don't collide.

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

/// Every request goes to `upstream` over plaintext HTTP/1.1.
struct OneUpstream {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for OneUpstream {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

struct Args {
    listen: String,
    upstream: SocketAddr,
    h2c: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream, mut h2c) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next(),
            "--upstream" => upstream = args.next(),
            "--h2c" => h2c = true,
            "--version" => {
                println!("pingora-proxy (pingora 0.9.1, tern-bench comparator)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    let upstream = upstream
        .ok_or("--upstream ADDR is required")?
        .parse()
        .map_err(|e| format!("--upstream: {e}"))?;
    Ok(Args {
        listen,
        upstream,
        h2c,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "pingora-proxy: {e}\nusage: pingora-proxy --listen ADDR --upstream ADDR [--h2c]"
            );
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads: 1,
        pid_file: "pingora.pid".into(),
        upgrade_sock: "pingora_upgrade.sock".into(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        OneUpstream {
            upstream: args.upstream,
        },
    );
    if args.h2c {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        if let Some(app) = proxy.app_logic_mut() {
            app.server_options = Some(options);
        }
    }
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever();
}
