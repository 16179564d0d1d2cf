//! `xds-server`: the test control plane as a process, serving a directory of resource files.
//!
//! ```text
//! xds-server --dir <DIR> [--listen <IP:PORT> | --uds <PATH>] [--poll-ms <N>]
//! ```
//! Serves ADS (SotW and delta) and SDS from the Envoy proto3 JSON/YAML files in DIR (see
//! `tern_tests::xds_server::load_dir`), re-reading them when a file is added, removed or rewritten,
//! and `file-cert:`/`file-root:` secrets from the files they name, re-read on every poll.
//! Prints `listening on <address>` once bound; a bad file is reported and the last good snapshot
//! stays served.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_tests::xds_server::{Bind, XdsServer, fingerprint, load_dir};

struct Args {
    dir: PathBuf,
    bind: Bind,
    poll: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut dir = None;
    let mut bind = Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut poll = Duration::from_millis(500);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--listen" => bind = Bind::Tcp(value()?.parse().context("--listen")?),
            "--uds" => bind = Bind::Unix(PathBuf::from(value()?)),
            "--poll-ms" => poll = Duration::from_millis(value()?.parse().context("--poll-ms")?),
            other => bail!(
                "unknown argument {other}\nusage: xds-server --dir DIR [--listen IP:PORT | --uds PATH] [--poll-ms N]"
            ),
        }
    }
    Ok(Args {
        dir: dir.context("--dir is required")?,
        bind,
        poll,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let server = XdsServer::start(args.bind, "v").await?;
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
