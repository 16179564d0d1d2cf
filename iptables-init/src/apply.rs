//! Putting the rules into the kernel, taking them out again, or printing them.
//!
//! Invariants:
//! - each address family (iptables) or the whole ruleset (nftables) changes in one atomic
//!   transaction; every iptables transaction is checked with `--test` before any is committed,
//!   and if a later step fails the families already committed are cleaned up again, so a
//!   failure never leaves a partial rule set behind;
//! - applying twice leaves the same rules as applying once: each transaction first removes what
//!   an earlier run created (our chains/tables and our rules in built-in chains), nothing else;
//! - cleanup removes exactly that set and succeeds on a clean kernel.

mod command;
mod routes;
mod xtables;

pub use command::{Output, Runner, SystemRunner};
pub use xtables::{FamilyTools, Xtables};

use crate::config::{CaptureConfig, InterceptionMode, PortSelection};
use crate::rules::RuleSet;
use crate::{iptables, nftables};

/// Why the kernel could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "`{program}` not found on PATH: install iptables and nftables (see scripts/install-test-deps.d/iptables.sh)"
    )]
    MissingBinary { program: String },
    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error(
        "unsupported --force-iptables-binary {binary:?} (expected iptables, iptables-legacy or iptables-nft)"
    )]
    UnsupportedBinary { binary: String },
}

/// Which back end writes the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

/// What to do with the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Apply,
    Cleanup,
}

/// The text `--dry-run` prints: what would be fed to the restore tools (clean kernel).
pub fn render_dry_run(cfg: &CaptureConfig, backend: Backend) -> String {
    match backend {
        Backend::Nftables => nftables::render(&nftables::build(cfg)),
        Backend::Iptables => {
            let plan = iptables::build(cfg);
            let mut out = format!(
                "# iptables-restore --noflush\n{}",
                iptables::render_restore(&plan.v4)
            );
            if cfg.enable_ipv6 {
                out.push_str("# ip6tables-restore --noflush\n");
                out.push_str(&iptables::render_restore(&plan.v6));
            }
            out
        }
    }
}

/// Applies or cleans up the rules for `cfg`, returning one line per change made.
pub fn run(
    runner: &dyn Runner,
    cfg: &CaptureConfig,
    backend: Backend,
    action: Action,
    forced_binary: Option<&str>,
) -> Result<Vec<String>, ApplyError> {
    let mut done = match backend {
        Backend::Nftables => vec![run_nftables(runner, cfg, action)?],
        Backend::Iptables => run_iptables(runner, cfg, action, forced_binary)?,
    };
    let tproxy = cfg.mode == InterceptionMode::Tproxy && cfg.inbound_ports != PortSelection::None;
    match action {
        Action::Apply => {
            if let Err(err) = install_routes(runner, cfg, tproxy) {
                // Leave nothing half-applied: take the rules out again.
                let _ = run(runner, cfg, backend, Action::Cleanup, forced_binary);
                return Err(err);
            }
            if tproxy {
                done.push("installed TPROXY policy routing".into());
            }
        }
        Action::Cleanup if cfg.mode == InterceptionMode::Tproxy => {
            routes::remove_tproxy(runner, cfg)?;
            done.push("removed TPROXY policy routing".into());
        }
        Action::Cleanup => {}
    }
    Ok(done)
}

fn install_routes(
    runner: &dyn Runner,
    cfg: &CaptureConfig,
    tproxy: bool,
) -> Result<(), ApplyError> {
    if cfg.enable_ipv6 {
        routes::install_ipv6_passthrough_addr(runner)?;
    }
    if tproxy {
        routes::install_tproxy(runner, cfg)?;
    }
    Ok(())
}

fn run_nftables(
    runner: &dyn Runner,
    cfg: &CaptureConfig,
    action: Action,
) -> Result<String, ApplyError> {
    let text = match action {
        Action::Apply => nftables::render_replacing(&nftables::build(cfg)),
        Action::Cleanup => nftables::render_cleanup(),
    };
    command::run_ok(runner, "nft", &["-f", "-"], Some(&text))?;
    Ok(match action {
        Action::Apply => "nft: installed istio-proxy-* tables".into(),
        Action::Cleanup => "nft: removed istio-proxy-* tables".into(),
    })
}

/// One family's prepared transaction.
struct Pending<'a> {
    tools: &'a FamilyTools,
    rules: &'a RuleSet,
    text: String,
}

fn run_iptables(
    runner: &dyn Runner,
    cfg: &CaptureConfig,
    action: Action,
    forced_binary: Option<&str>,
) -> Result<Vec<String>, ApplyError> {
    let xt = Xtables::detect(runner, forced_binary)?;
    let plan = iptables::build(cfg);
    let empty = RuleSet::default();
    let mut families = vec![(&xt.v4, &plan.v4)];
    // IPv6 residue is cleaned even when IPv6 is now off, if ip6tables exists at all.
    if cfg.enable_ipv6 || runner.exists(&xt.v6.save) {
        families.push((&xt.v6, &plan.v6));
    }
    let mut pending = Vec::new();
    for (tools, ours) in families {
        let install = if action == Action::Apply {
            ours
        } else {
            &empty
        };
        let text = xtables::transaction(runner, tools, ours, install)?;
        if !text.is_empty() {
            xtables::test(runner, tools, &text)?;
            pending.push(Pending {
                tools,
                rules: ours,
                text,
            });
        }
    }
    commit_all(runner, &pending)?;
    Ok(pending
        .iter()
        .map(|p| {
            format!(
                "{}: committed {} lines",
                p.tools.restore,
                p.text.lines().count()
            )
        })
        .collect())
}

/// Commits in order; if one fails, removes what the earlier ones installed.
fn commit_all(runner: &dyn Runner, pending: &[Pending<'_>]) -> Result<(), ApplyError> {
    for (i, step) in pending.iter().enumerate() {
        if let Err(err) = xtables::commit(runner, step.tools, &step.text) {
            for earlier in &pending[..i] {
                let empty = RuleSet::default();
                if let Ok(undo) = xtables::transaction(runner, earlier.tools, earlier.rules, &empty)
                {
                    let _ = xtables::commit(runner, earlier.tools, &undo);
                }
            }
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
