//! `xds-server`: the test control plane as a process, serving a directory of resource files.
//!
//! ```text
//! xds-server --dir <DIR> [--listen <IP:PORT> | --uds <PATH>] [--poll-ms <N>]
//!            [--tls-cert <PEM> --tls-key <PEM> [--client-ca <PEM>]]
//! ```
//! Serves ADS (SotW and delta) and SDS from the Envoy proto3 JSON/YAML files in DIR (see
//! `tern_tests::xds_server::load_dir`), re-reading them when a file is added, removed or rewritten,
//! and `file-cert:`/`file-root:` secrets from the files they name, re-read on every poll.
//! Prints `listening on <address>` once bound; a bad file is reported and the last good snapshot
//! stays served. With `--tls-cert`/`--tls-key` it serves TLS on TCP (the address printed is still
//! `http://ip:port`), and with `--client-ca` it requires client certificates signed by that CA.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_tests::xds_server::{Bind, ServerTls, XdsServer, fingerprint, load_dir};

struct Args {
    dir: PathBuf,
    bind: Bind,
    poll: Duration,
    tls: Option<ServerTls>,
}

const USAGE: &str = "usage: xds-server --dir DIR [--listen IP:PORT | --uds PATH] [--poll-ms N] [--tls-cert PEM --tls-key PEM [--client-ca PEM]]";

fn parse_args() -> anyhow::Result<Args> {
    let mut dir = None;
    let mut bind = Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut poll = Duration::from_millis(500);
    let (mut cert, mut key, mut client_ca) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--listen" => bind = Bind::Tcp(value()?.parse().context("--listen")?),
            "--uds" => bind = Bind::Unix(PathBuf::from(value()?)),
            "--poll-ms" => poll = Duration::from_millis(value()?.parse().context("--poll-ms")?),
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--client-ca" => client_ca = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let tls = match (cert, key) {
        (Some(certificate_chain), Some(private_key)) => Some(ServerTls {
            certificate_chain,
            private_key,
            client_ca,
        }),
        (None, None) if client_ca.is_none() => None,
        _ => bail!("--tls-cert and --tls-key go together (and --client-ca needs them)\n{USAGE}"),
    };
    Ok(Args {
        dir: dir.context("--dir is required")?,
        bind,
        poll,
        tls,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let server = XdsServer::start_with_tls(args.bind, "v", args.tls).await?;
    // The address is announced once the directory's first snapshot is served, so a client
    // started on that line never sees an empty first response.
    let mut served = refresh(&server, &args.dir, None).await;
    println!("listening on {}", server.address());
    let mut interval = tokio::time::interval(args.poll);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if let Some(version) = server.refresh_files().await {
            println!("serving version {version} (file-cert/file-root secrets changed)");
        }
        served = refresh(&server, &args.dir, served).await;
    }
    server.shutdown().await;
    Ok(())
}

/// What the served files were: path, modification time and length of each.
type Fingerprint = Vec<(PathBuf, std::time::SystemTime, u64)>;

/// Serves the directory again if it changed since `served` (its fingerprint); returns the
/// fingerprint now served or reported bad.
async fn refresh(
    server: &XdsServer,
    dir: &Path,
    served: Option<Fingerprint>,
) -> Option<Fingerprint> {
    let current = match fingerprint(dir) {
        Ok(current) => current,
        Err(e) => {
            eprintln!("xds-server: {e:#}");
            return served;
        }
    };
    if served.as_ref() == Some(&current) {
        return served;
    }
    match load_dir(dir) {
        Ok(snapshot) => {
            let count: usize = snapshot.resources.values().map(|m| m.len()).sum();
            let version = server.push(snapshot).await;
            println!("serving version {version} ({count} resources)");
        }
        Err(e) => eprintln!("xds-server: keeping the last good snapshot: {e:#}"),
    }
    Some(current)
}
