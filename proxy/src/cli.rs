//! Envoy's command line, as pilot-agent and users invoke it.
//!
//! Every flag pilot-agent passes is accepted; flags about hot restart, core dumps and the like
//! are accepted and ignored, since Tern has no such machinery. An unknown flag is an error.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(name = "tern", version = crate::VERSION, about = "Tern: a sidecar proxy driven by Envoy's xDS APIs")]
pub struct Cli {
    /// Bootstrap file (JSON or YAML, Envoy v3).
    #[arg(short = 'c', long = "config-path", value_name = "PATH")]
    pub config_path: Option<PathBuf>,
    /// Bootstrap YAML merged over the file (protobuf MergeFrom).
    #[arg(long = "config-yaml", value_name = "YAML")]
    pub config_yaml: Option<String>,
    /// Worker threads; default: CPUs available to the process (0 means 1, as in Envoy).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Drain time in seconds.
    #[arg(long = "drain-time-s", default_value_t = 600, value_name = "SECONDS")]
    pub drain_time_s: u64,
    #[arg(long = "drain-strategy", value_enum, default_value_t = DrainStrategy::Gradual)]
    pub drain_strategy: DrainStrategy,
    #[arg(
        long = "parent-shutdown-time-s",
        default_value_t = 900,
        value_name = "SECONDS"
    )]
    pub parent_shutdown_time_s: u64,
    #[arg(long = "local-address-ip-version", value_enum, default_value_t = IpVersion::V4)]
    pub local_address_ip_version: IpVersion,
    #[arg(
        long = "file-flush-interval-msec",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub file_flush_interval_msec: u64,
    #[arg(long = "file-flush-min-size-kb", value_name = "KB")]
    pub file_flush_min_size_kb: Option<u64>,
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    /// Ignore unknown fields in the bootstrap instead of rejecting it.
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    #[arg(long = "ignore-unknown-dynamic-fields")]
    pub ignore_unknown_dynamic_fields: bool,
    /// trace, debug, info, warning/warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info", value_parser = parse_level)]
    pub log_level: String,
    /// Per-component levels, `component:level,...` (accepted; Tern logs by module).
    #[arg(long = "component-log-level", value_name = "LIST", value_parser = parse_component_levels)]
    pub component_log_level: Option<String>,
    #[arg(long = "skip-deprecated-logs")]
    pub skip_deprecated_logs: bool,
    #[arg(long = "log-path", value_name = "PATH")]
    pub log_path: Option<PathBuf>,
    #[arg(long = "log-format", value_name = "FORMAT")]
    pub log_format: Option<String>,
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,
    #[arg(long = "service-node")]
    pub service_node: Option<String>,
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,
    /// `serve` runs; `validate` checks the bootstrap and exits 0 or 1; `init_only` starts and exits.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    pub mode: Mode,
    /// Write the admin address (host:port) to this file once listening.
    #[arg(long = "admin-address-path", value_name = "PATH")]
    pub admin_address_path: Option<PathBuf>,
    #[arg(long = "base-id")]
    pub base_id: Option<u64>,
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    #[arg(long = "base-id-path")]
    pub base_id_path: Option<PathBuf>,
    #[arg(long = "restart-epoch")]
    pub restart_epoch: Option<u32>,
    #[arg(long = "enable-core-dump")]
    pub enable_core_dump: bool,
    #[arg(long = "cpuset-threads")]
    pub cpuset_threads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    Gradual,
    Immediate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpVersion {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
    #[value(name = "init_only")]
    InitOnly,
}

const LEVELS: &[&str] = &[
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

fn parse_level(level: &str) -> Result<String, String> {
    if LEVELS.contains(&level) {
        Ok(level.to_string())
    } else {
        Err(format!(
            "invalid log level {level:?}; expected one of {}",
            LEVELS.join(", ")
        ))
    }
}

fn parse_component_levels(list: &str) -> Result<String, String> {
    for part in list.split(',') {
        let (component, level) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not component:level"))?;
        if component.is_empty() {
            return Err(format!("{part:?} has no component name"));
        }
        parse_level(level)?;
    }
    Ok(list.to_string())
}

impl Cli {
    /// The worker count: `--concurrency` (at least 1: Envoy 1.40 runs one worker for
    /// `--concurrency 0`), else the CPUs this process may use (affinity, cgroup).
    pub fn workers(&self) -> usize {
        match self.concurrency {
            Some(n) => n.max(1),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Envoy's level names as tracing filter directives.
pub fn tracing_level(level: &str) -> &'static str {
    match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        _ => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PILOT_AGENT_ARGS: &[&str] = &[
        "tern",
        "-c",
        "etc/istio/proxy/envoy-rev.json",
        "--drain-time-s",
        "45",
        "--drain-strategy",
        "immediate",
        "--local-address-ip-version",
        "v4",
        "--file-flush-interval-msec",
        "1000",
        "--disable-hot-restart",
        "--allow-unknown-static-fields",
        "-l",
        "warning",
        "--component-log-level",
        "misc:error",
        "--skip-deprecated-logs",
        "--concurrency",
        "2",
    ];

    #[test]
    fn accepts_pilot_agent_command_line() {
        let cli = Cli::try_parse_from(PILOT_AGENT_ARGS).unwrap();
        assert_eq!(
            cli.config_path.as_deref(),
            Some(std::path::Path::new("etc/istio/proxy/envoy-rev.json"))
        );
        assert_eq!(cli.drain_time_s, 45);
        assert_eq!(cli.drain_strategy, DrainStrategy::Immediate);
        assert!(cli.allow_unknown_static_fields);
        assert_eq!(cli.log_level, "warning");
        assert_eq!(cli.workers(), 2);
    }

    #[test]
    fn concurrency_zero_is_one_worker_and_none_is_every_cpu() {
        let workers = |args: &[&str]| Cli::try_parse_from(args).unwrap().workers();
        assert_eq!(workers(&["tern", "--concurrency", "0"]), 1);
        assert_eq!(workers(&["tern", "--concurrency", "64"]), 64);
        assert_eq!(
            workers(&["tern"]),
            std::thread::available_parallelism().unwrap().get()
        );
    }

    #[test]
    fn rejects_unknown_flag_and_bad_values() {
        let err = Cli::try_parse_from(["tern", "--frobnicate"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let err = Cli::try_parse_from(["tern", "-l", "loud"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid log level \"loud\""), "{err}");
        let err = Cli::try_parse_from(["tern", "--component-log-level", "misc"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"misc\" is not component:level"), "{err}");
    }

    #[test]
    fn mode_validate_is_spelled_as_envoy_spells_it() {
        let cli = Cli::try_parse_from(["tern", "--mode", "validate", "-c", "x.json"]).unwrap();
        assert_eq!(cli.mode, Mode::Validate);
        assert_eq!(
            Cli::try_parse_from(["tern", "--mode", "init_only"])
                .unwrap()
                .mode,
            Mode::InitOnly
        );
    }
}
