//! `iptables-init`: the istio-init replacement. Parse istio-iptables' flags and env vars,
//! validate, then print (`--dry-run`), apply or clean up the capture rules.
//!
//! Any failure prints one line naming what went wrong and exits non-zero; validation happens
//! before anything touches the kernel.

use anyhow::{Context as _, Result};
use clap::Parser as _;
use iptables_init::CaptureConfig;
use iptables_init::apply::{self, Action, Backend, SystemRunner};
use iptables_init::cli::{Flags, Invocation};
use iptables_init::config::HostFacts;

fn main() {
    if let Err(err) = run() {
        eprintln!("iptables-init: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let flags = Flags::parse();
    let env = |name: &str| std::env::var(name).ok();
    let Invocation { raw, options } =
        flags.resolve(&env, |q| HostFacts::read(&q.envoy_user, q.dual_stack))?;
    let cfg = CaptureConfig::try_from(raw)?;
    let backend = if options.native_nftables {
        Backend::Nftables
    } else {
        Backend::Iptables
    };
    if options.trace_logging {
        eprintln!(
            "iptables-init: --iptables-trace-logging is not supported; continuing without trace rules"
        );
    }
    if options.dry_run {
        print!("{}", apply::render_dry_run(&cfg, backend));
    } else if !options.skip_rule_apply {
        let action = if options.cleanup_only {
            Action::Cleanup
        } else {
            Action::Apply
        };
        let runner = SystemRunner {
            netns: options.network_namespace.clone(),
        };
        let done = apply::run(
            &runner,
            &cfg,
            backend,
            action,
            options.force_iptables_binary.as_deref(),
        )
        .context(if options.cleanup_only {
            "cleanup failed"
        } else {
            "applying rules failed"
        })?;
        done.iter()
            .for_each(|line| eprintln!("iptables-init: {line}"));
    }
    if options.run_validation {
        eprintln!("iptables-init: --run-validation is not implemented yet; skipping validation");
    }
    Ok(())
}
