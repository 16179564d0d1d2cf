//! `tern-bench`: Tern against Envoy, nginx, haproxy, pingora and the direct path, side by side in
//! one run on one machine (BENCHMARKS.md): S1 HTTP/1.1 (saturation and a fixed-rate matrix), S2
//! h2c, S3 gRPC unary, S4 TCP bulk, S5 sidecar pair, S6 connection churn, S7 config churn
//! (push-to-apply, memory per cluster and endpoint), S8 route-table scale, S9 footprint (idle RSS,
//! per idle connection, with 1k/10k clusters), worker scaling; instructions per request under
//! callgrind; and cross-checks of the in-tree generator with wrk, fortio and h2load.
//!
//! Parse flags -> pin to core 0 -> run the scenarios until done or a signal -> write JSON and
//! Markdown (with SVG plots beside it). On Ctrl-C or SIGTERM the run future is dropped, and with
//! it every running proxy (each is killed with its process group).

mod backend;
mod callgrind;
mod cli;
mod config_churn;
mod grpc;
mod load;
mod measure;
mod plots;
mod proxies;
mod report;
mod scenarios;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    measure::pin_self_to_core(0)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    // Registered before the run starts, so a signal at any point ends the run.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let results = tokio::select! {
        results = scenarios::run(&cli, command) => results?,
        _ = interrupt.recv() => anyhow::bail!("interrupted; every proxy was stopped"),
        _ = terminate.recv() => anyhow::bail!("terminated; every proxy was stopped"),
    };
    let markdown = results.markdown();
    println!("{markdown}");
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        eprintln!("[tern-bench] wrote {}", path.display());
    }
    if let Some(path) = &cli.report {
        let plots = plots::write_beside(&results, path)?;
        std::fs::write(
            path,
            format!("# tern-bench report\n\n{markdown}\n## Plots\n\n{plots}"),
        )?;
        eprintln!("[tern-bench] wrote {}", path.display());
    }
    Ok(())
}
