//! The `tern` process: flags -> bootstrap -> server -> run until a signal -> drain.

use crate::admin::{self, LogControl};
use crate::cli::{Cli, DrainStrategy, Mode};
use crate::config::bootstrap::{self, Bootstrap};
use crate::server::{self, Command, ServerOptions};
use anyhow::Context;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};
use xds_client::proto_json::ReadOptions;

/// Runs `tern` with parsed flags; errors are printed by the caller as one line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let logs = init_logging(&cli.log_level);
    let read = ReadOptions {
        allow_unknown_fields: cli.allow_unknown_static_fields,
    };
    let source = bootstrap::load(cli.config_path.as_deref(), cli.config_yaml.as_deref(), read)?;
    let bootstrap = Bootstrap::new(
        source,
        cli.service_cluster.as_deref(),
        cli.service_node.as_deref(),
    )?;
    if cli.mode == Mode::Validate {
        let shown = cli
            .config_path
            .as_ref()
            .map_or_else(|| "--config-yaml".to_string(), |p| p.display().to_string());
        println!("configuration '{shown}' OK");
        return Ok(ExitCode::SUCCESS);
    }
    let options = ServerOptions {
        concurrency: cli.workers(),
        drain_time: Duration::from_secs(cli.drain_time_s),
        drain_immediate: cli.drain_strategy == DrainStrategy::Immediate,
        parent_shutdown_time: Duration::from_secs(cli.parent_shutdown_time_s),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(cli, bootstrap, options, logs))
}

async fn serve(
    cli: Cli,
    bootstrap: Bootstrap,
    options: ServerOptions,
    logs: LogControl,
) -> anyhow::Result<ExitCode> {
    let admin_address = bootstrap.admin.clone();
    let signals = Signals::install()?;
    let (handle, manager) = server::start(bootstrap, options)?;
    let admin = match admin_address.as_ref().and_then(|a| a.socket()) {
        Some(address) => {
            let (bound, serve) = admin::bind(address, handle.clone(), logs)
                .await
                .with_context(|| format!("admin.address: cannot bind {address}"))?;
            if let Some(path) = &cli.admin_address_path {
                std::fs::write(path, bound.to_string())
                    .with_context(|| format!("--admin-address-path {}", path.display()))?;
            }
            tracing::info!("admin address: {bound}");
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    if cli.mode == Mode::InitOnly {
        handle.send(Command::Shutdown { graceful: false });
    }
    let signals = signals.handle(handle.clone());
    tokio::select! {
        () = manager => {}
        result = signals => result?,
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    crate::http::access_log::flush_all();
    Ok(ExitCode::SUCCESS)
}

/// The signals Tern acts on, installed before anything is announced (the admin address file,
/// readiness), so an early signal is never met by the default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    /// SIGTERM drains then exits; SIGINT exits at once; SIGUSR1 reopens log files.
    async fn handle(mut self, handle: server::ServerHandle) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.term.recv() => handle.send(Command::Shutdown { graceful: true }),
                _ = self.int.recv() => handle.send(Command::Shutdown { graceful: false }),
                _ = self.usr1.recv() => {
                    crate::http::access_log::reopen_files();
                }
            }
        }
    }
}

fn init_logging(level: &str) -> LogControl {
    let level = crate::cli::tracing_level(level);
    let filter = EnvFilter::try_from_env("TERN_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, reload) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .is_ok();
    LogControl::new(level, installed.then_some(reload))
}
