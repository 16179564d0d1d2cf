//! istio-iptables' command line and environment, resolved into a `RawConfig` plus run options.
//!
//! Flag names, short forms and env vars are Istio's (`tools/istio-iptables/pkg/cmd/root.go`,
//! `pkg/flag`): every flag except `--envoy-port` may also be set by the env var named after it
//! (`--istio-inbound-ports` -> `ISTIO_INBOUND_PORTS`); `--redirect-dns`, `--drop-invalid` and
//! `--dual-stack` additionally read `ISTIO_META_DNS_CAPTURE`, `INVALID_DROP`, `ISTIO_DUAL_STACK`.
//! Precedence: flag > additional env var > env var > default. Env-only Istio settings
//! (`ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`, `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, `ENVOY_USER`)
//! are honoured; Tern adds flags for them and for IPv6 and DNS servers (see docs/iptables-init.md).

use clap::Parser;

use crate::config::{HostFacts, RawConfig};

/// Flags as parsed; `None` means "not given" so env vars and defaults can apply.
#[derive(Debug, Default, Parser)]
#[command(
    name = "iptables-init",
    about = "Set up istio-iptables compatible traffic capture for the Tern sidecar"
)]
pub struct Flags {
    /// Port to which all outbound TCP traffic is redirected (default 15001).
    #[arg(short = 'p', long = "envoy-port")]
    pub envoy_port: Option<String>,
    /// Port to which all inbound TCP traffic is redirected (default 15006).
    #[arg(short = 'z', long = "inbound-capture-port")]
    pub inbound_capture_port: Option<String>,
    /// Inbound tunnel (HBONE) port, never captured (default 15008).
    #[arg(short = 'e', long = "inbound-tunnel-port")]
    pub inbound_tunnel_port: Option<String>,
    /// UIDs whose traffic is not captured (comma list; default: ENVOY_USER's uid, else 1337).
    #[arg(short = 'u', long = "proxy-uid")]
    pub proxy_uid: Option<String>,
    /// GIDs whose traffic is not captured (comma list; default: the uids).
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT or TPROXY.
    #[arg(short = 'm', long = "istio-inbound-interception-mode")]
    pub interception_mode: Option<String>,
    /// Inbound ports to capture ("*" for all; empty disables inbound capture).
    #[arg(short = 'b', long = "istio-inbound-ports")]
    pub inbound_ports: Option<String>,
    /// Inbound ports not captured when -b is "*".
    #[arg(short = 'd', long = "istio-local-exclude-ports")]
    pub local_exclude_ports: Option<String>,
    /// Interfaces on which nothing is captured.
    #[arg(short = 'c', long = "istio-exclude-interfaces")]
    pub exclude_interfaces: Option<String>,
    /// Outbound CIDRs to capture ("*" for all; empty disables outbound capture).
    #[arg(short = 'i', long = "istio-service-cidr")]
    pub service_cidr: Option<String>,
    /// Outbound CIDRs never captured.
    #[arg(short = 'x', long = "istio-service-exclude-cidr")]
    pub service_exclude_cidr: Option<String>,
    /// Outbound ports always captured.
    #[arg(short = 'q', long = "istio-outbound-ports")]
    pub outbound_ports: Option<String>,
    /// Outbound ports never captured.
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude")]
    pub local_outbound_ports_exclude: Option<String>,
    /// Virtual interfaces whose inbound traffic is treated as outbound.
    #[arg(short = 'k', long = "kube-virt-interfaces")]
    pub kube_virt_interfaces: Option<String>,
    /// TPROXY packet mark (default 1337).
    #[arg(short = 't', long = "istio-inbound-tproxy-mark")]
    pub tproxy_mark: Option<String>,
    /// TPROXY policy routing table (default 133).
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table")]
    pub tproxy_route_table: Option<String>,
    /// Print the rules instead of applying them.
    #[arg(short = 'n', long = "dry-run", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dry_run: Option<String>,
    /// Remove the rules this tool creates, and nothing else.
    #[arg(long = "cleanup-only", alias = "cleanup", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cleanup_only: Option<String>,
    /// Use native nftables (`nft -f`) instead of iptables.
    #[arg(long = "native-nftables", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub native_nftables: Option<String>,
    /// Capture DNS to the agent's resolver on 15053 (env also ISTIO_META_DNS_CAPTURE).
    #[arg(long = "redirect-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub redirect_dns: Option<String>,
    /// Capture all port-53 traffic, not only to the configured resolvers.
    #[arg(long = "capture-all-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub capture_all_dns: Option<String>,
    /// Drop conntrack-INVALID packets (env also INVALID_DROP).
    #[arg(long = "drop-invalid", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub drop_invalid: Option<String>,
    /// Dual-stack pod: IPv6 rules when any IPv6 address exists (env also ISTIO_DUAL_STACK).
    #[arg(long = "dual-stack", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dual_stack: Option<String>,
    /// Tern: force IPv6 rules on or off instead of detecting from the pod's addresses.
    #[arg(long = "enable-ipv6", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_ipv6: Option<String>,
    /// Tern: resolvers for DNS capture (comma list) instead of /etc/resolv.conf.
    #[arg(long = "dns-servers")]
    pub dns_servers: Option<String>,
    /// Tern: same as env ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR (default 127.0.0.1/32).
    #[arg(long = "host-ipv4-loopback-cidr")]
    pub host_ipv4_loopback_cidr: Option<String>,
    /// Tern: same as env ISTIO_OUTBOUND_OWNER_GROUPS (default "*").
    #[arg(long = "outbound-owner-groups")]
    pub owner_groups: Option<String>,
    /// Tern: same as env ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE.
    #[arg(long = "outbound-owner-groups-exclude")]
    pub owner_groups_exclude: Option<String>,
    /// Build the rules but do not apply them (Istio CNI validation mode).
    #[arg(long = "skip-rule-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub skip_rule_apply: Option<String>,
    /// Validate that capture works (not implemented: a warning is printed).
    #[arg(long = "run-validation", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub run_validation: Option<String>,
    /// Network namespace (path) to apply the rules in.
    #[arg(long = "network-namespace")]
    pub network_namespace: Option<String>,
    /// Use this iptables binary (iptables, iptables-legacy, iptables-nft) instead of detecting.
    #[arg(long = "force-iptables-binary")]
    pub force_iptables_binary: Option<String>,
    /// Accepted for compatibility; re-apply always reconciles.
    #[arg(long = "reconcile", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub reconcile: Option<String>,
    /// Accepted for compatibility; re-apply always replaces.
    #[arg(long = "force-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub force_apply: Option<String>,
    /// Accepted for compatibility (ignored).
    #[arg(long = "cni-mode", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cni_mode: Option<String>,
    /// Accepted for compatibility (ignored: no NFLOG trace rules are added).
    #[arg(long = "iptables-trace-logging", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub trace_logging: Option<String>,
    /// Accepted for compatibility (validation is not implemented).
    #[arg(long = "iptables-probe-port")]
    pub probe_port: Option<String>,
    /// Accepted for compatibility (validation is not implemented).
    #[arg(long = "probe-timeout")]
    pub probe_timeout: Option<String>,
    /// Istio logging flag, accepted and ignored.
    #[arg(long = "log_output_level")]
    pub log_output_level: Option<String>,
    /// Istio logging flag, accepted and ignored.
    #[arg(long = "log_as_json", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub log_as_json: Option<String>,
}

/// How to run, as opposed to what to capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub dry_run: bool,
    pub cleanup_only: bool,
    pub native_nftables: bool,
    pub skip_rule_apply: bool,
    pub run_validation: bool,
    pub trace_logging: bool,
    pub network_namespace: Option<String>,
    pub force_iptables_binary: Option<String>,
}

/// Everything the command line and environment asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub raw: RawConfig,
    pub options: RunOptions,
}

/// What `resolve` needs to learn from the host (see `HostFacts::read`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostQuery {
    pub envoy_user: String,
    pub dual_stack: bool,
}

/// A flag or env var that is not a valid boolean.
#[derive(Debug, thiserror::Error)]
#[error("invalid boolean {value:?} for {source_name} (expected true or false)")]
pub struct CliError {
    pub source_name: String,
    pub value: String,
}

/// Go's `strconv.ParseBool`, which Istio's flags use.
fn parse_bool(source_name: &str, value: &str) -> Result<bool, CliError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(CliError {
            source_name: source_name.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Looks settings up in flags first, then env vars.
struct Lookup<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Lookup<'_> {
    /// flag > extra env > env named after the flag.
    fn string(&self, flag: &Option<String>, long: &str, extra_env: &[&str]) -> Option<String> {
        let from_env = || {
            let mut names: Vec<String> = extra_env.iter().map(|n| (*n).to_owned()).collect();
            names.push(long.to_uppercase().replace('-', "_"));
            names.iter().find_map(|name| (self.env)(name))
        };
        flag.clone().or_else(from_env)
    }

    fn bool(
        &self,
        flag: &Option<String>,
        long: &str,
        extra_env: &[&str],
    ) -> Result<bool, CliError> {
        match (flag, self.string(&None, long, extra_env)) {
            (Some(value), _) => parse_bool(&format!("--{long}"), value),
            (None, Some(value)) => parse_bool(&format!("env for --{long}"), &value),
            (None, None) => Ok(false),
        }
    }

    fn optional_bool(
        &self,
        flag: &Option<String>,
        long: &str,
        env: &str,
    ) -> Result<Option<bool>, CliError> {
        match flag.clone().or_else(|| (self.env)(env)) {
            Some(value) => parse_bool(&format!("--{long}"), &value).map(Some),
            None => Ok(None),
        }
    }

    fn env_only(&self, flag: &Option<String>, env: &str) -> Option<String> {
        flag.clone().or_else(|| (self.env)(env))
    }
}

impl Flags {
    /// Resolves flags, env vars (`env`) and host facts (`host`) into an `Invocation`.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        host: impl FnOnce(&HostQuery) -> HostFacts,
    ) -> Result<Invocation, CliError> {
        let look = Lookup { env };
        let options = self.run_options(&look)?;
        let dual_stack = look.bool(&self.dual_stack, "dual-stack", &["ISTIO_DUAL_STACK"])?;
        let envoy_user = env("ENVOY_USER").unwrap_or_else(|| "istio-proxy".into());
        let facts = host(&HostQuery {
            envoy_user,
            dual_stack,
        });
        let mut raw = self.capture_settings(&look)?;
        if raw.proxy_uid.is_empty() {
            raw.proxy_uid = facts.proxy_uid.unwrap_or_else(|| "1337".into());
        }
        raw.enable_ipv6 = look
            .optional_bool(&self.enable_ipv6, "enable-ipv6", "ENABLE_INBOUND_IPV6")?
            .unwrap_or(facts.ipv6);
        raw.dns_servers = match look.string(&self.dns_servers, "dns-servers", &[]) {
            Some(list) => crate::config::split_list(&list)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            None if raw.redirect_dns && !raw.capture_all_dns => facts.dns_servers,
            None => Vec::new(),
        };
        Ok(Invocation { raw, options })
    }

    fn run_options(&self, look: &Lookup<'_>) -> Result<RunOptions, CliError> {
        Ok(RunOptions {
            dry_run: look.bool(&self.dry_run, "dry-run", &[])?,
            cleanup_only: look.bool(&self.cleanup_only, "cleanup-only", &[])?,
            native_nftables: look.bool(&self.native_nftables, "native-nftables", &[])?,
            skip_rule_apply: look.bool(&self.skip_rule_apply, "skip-rule-apply", &[])?,
            run_validation: look.bool(&self.run_validation, "run-validation", &[])?,
            trace_logging: look.bool(&self.trace_logging, "iptables-trace-logging", &[])?,
            network_namespace: look
                .string(&self.network_namespace, "network-namespace", &[])
                .filter(|ns| !ns.is_empty()),
            force_iptables_binary: look
                .string(&self.force_iptables_binary, "force-iptables-binary", &[])
                .filter(|bin| !bin.is_empty()),
        })
    }

    /// Ports, owners and the interception mode.
    fn capture_settings(&self, look: &Lookup<'_>) -> Result<RawConfig, CliError> {
        let d = RawConfig::default();
        let s = |flag: &Option<String>, long: &str, default: &str| {
            look.string(flag, long, &[])
                .unwrap_or_else(|| default.to_owned())
        };
        let mut raw = RawConfig {
            proxy_port: self.envoy_port.clone().unwrap_or(d.proxy_port.clone()),
            inbound_capture_port: s(
                &self.inbound_capture_port,
                "inbound-capture-port",
                &d.inbound_capture_port,
            ),
            inbound_tunnel_port: s(
                &self.inbound_tunnel_port,
                "inbound-tunnel-port",
                &d.inbound_tunnel_port,
            ),
            proxy_uid: s(&self.proxy_uid, "proxy-uid", ""),
            proxy_gid: s(&self.proxy_gid, "proxy-gid", ""),
            inbound_interception_mode: s(
                &self.interception_mode,
                "istio-inbound-interception-mode",
                "",
            ),
            inbound_tproxy_mark: s(
                &self.tproxy_mark,
                "istio-inbound-tproxy-mark",
                &d.inbound_tproxy_mark,
            ),
            inbound_tproxy_route_table: s(
                &self.tproxy_route_table,
                "istio-inbound-tproxy-route-table",
                &d.inbound_tproxy_route_table,
            ),
            ..d
        };
        self.traffic_selection(look, &mut raw);
        raw.redirect_dns = look.bool(
            &self.redirect_dns,
            "redirect-dns",
            &["ISTIO_META_DNS_CAPTURE"],
        )?;
        raw.capture_all_dns = look.bool(&self.capture_all_dns, "capture-all-dns", &[])?;
        raw.drop_invalid = look.bool(&self.drop_invalid, "drop-invalid", &["INVALID_DROP"])?;
        Ok(raw)
    }

    /// Which ports, ranges, interfaces and groups are captured or exempt.
    fn traffic_selection(&self, look: &Lookup<'_>, raw: &mut RawConfig) {
        let s =
            |flag: &Option<String>, long: &str| look.string(flag, long, &[]).unwrap_or_default();
        raw.inbound_ports_include = s(&self.inbound_ports, "istio-inbound-ports");
        raw.inbound_ports_exclude = s(&self.local_exclude_ports, "istio-local-exclude-ports");
        raw.outbound_ports_include = s(&self.outbound_ports, "istio-outbound-ports");
        raw.outbound_ports_exclude = s(
            &self.local_outbound_ports_exclude,
            "istio-local-outbound-ports-exclude",
        );
        raw.outbound_ip_ranges_include = s(&self.service_cidr, "istio-service-cidr");
        raw.outbound_ip_ranges_exclude =
            s(&self.service_exclude_cidr, "istio-service-exclude-cidr");
        raw.reroute_virtual_interfaces = s(&self.kube_virt_interfaces, "kube-virt-interfaces");
        raw.exclude_interfaces = s(&self.exclude_interfaces, "istio-exclude-interfaces");
        let env_only = |flag: &Option<String>, env: &str| look.env_only(flag, env);
        if let Some(groups) = env_only(&self.owner_groups, "ISTIO_OUTBOUND_OWNER_GROUPS") {
            raw.owner_groups_include = groups;
        }
        let exclude = env_only(
            &self.owner_groups_exclude,
            "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
        );
        raw.owner_groups_exclude = exclude.unwrap_or_default();
        let loopback = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
        if let Some(cidr) = env_only(&self.host_ipv4_loopback_cidr, loopback) {
            raw.host_ipv4_loopback_cidr = cidr;
        }
    }
}

#[cfg(test)]
mod tests;
