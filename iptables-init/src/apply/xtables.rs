//! The iptables back end: choosing legacy or nf_tables tools, and turning a rule set into one
//! `iptables-restore --noflush` transaction per address family that replaces any earlier run.

use super::ApplyError;
use super::command::{Runner, run_ok};
use crate::iptables::{Residue, is_builtin_chain, jump_target, parse_save, render_restore_over};
use crate::rules::RuleSet;

/// The programs for one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyTools {
    pub iptables: String,
    pub save: String,
    pub restore: String,
}

impl FamilyTools {
    fn new(base: &str, variant: &str) -> Self {
        Self {
            iptables: format!("{base}{variant}"),
            save: format!("{base}{variant}-save"),
            restore: format!("{base}{variant}-restore"),
        }
    }
}

/// The iptables front end in use: IPv4 and IPv6 tools of the same variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xtables {
    /// "" (system default), "-legacy" or "-nft".
    pub variant: &'static str,
    pub v4: FamilyTools,
    pub v6: FamilyTools,
}

impl Xtables {
    fn of(variant: &'static str) -> Self {
        Self {
            variant,
            v4: FamilyTools::new("iptables", variant),
            v6: FamilyTools::new("ip6tables", variant),
        }
    }

    /// `--force-iptables-binary`, else the variant that already holds rules (legacy only when
    /// nf_tables holds none, as a node's kubelet/kube-proxy pick the back end), else the
    /// system default `iptables`.
    pub fn detect(runner: &dyn Runner, forced: Option<&str>) -> Result<Self, ApplyError> {
        if let Some(binary) = forced {
            return Self::forced(binary);
        }
        let has_rules = |variant: &str| {
            let save = FamilyTools::new("iptables", variant).save;
            runner.exists(&save)
                && runner.run(&save, &[], None).is_ok_and(|out| {
                    out.success && out.stdout.lines().any(|l| l.starts_with("-A "))
                })
        };
        Ok(if has_rules("-nft") {
            Self::of("-nft")
        } else if has_rules("-legacy") {
            Self::of("-legacy")
        } else {
            Self::of("")
        })
    }

    fn forced(binary: &str) -> Result<Self, ApplyError> {
        let variant = binary
            .strip_prefix("ip6tables")
            .or_else(|| binary.strip_prefix("iptables"));
        match variant {
            Some("") => Ok(Self::of("")),
            Some("-legacy") => Ok(Self::of("-legacy")),
            Some("-nft") => Ok(Self::of("-nft")),
            _ => Err(ApplyError::UnsupportedBinary {
                binary: binary.to_owned(),
            }),
        }
    }
}

/// The restore input that makes the kernel hold exactly `install` for this family, removing
/// what an earlier run (with rules `ours`) left behind. Empty when nothing needs to change
/// for a cleanup of a clean kernel.
pub fn transaction(
    runner: &dyn Runner,
    tools: &FamilyTools,
    ours: &RuleSet,
    install: &RuleSet,
) -> Result<String, ApplyError> {
    let save = run_ok(runner, &tools.save, &[], None)?;
    let mut residue = parse_save(&save);
    add_present_builtin_rules(runner, tools, ours, &mut residue)?;
    Ok(render_restore_over(install, &residue))
}

/// Our non-jump rules in built-in chains (interface RETURNs, TPROXY marks) cannot be recognised
/// in `iptables-save` output, whose rule text the kernel normalises; `iptables -C` finds them.
fn add_present_builtin_rules(
    runner: &dyn Runner,
    tools: &FamilyTools,
    ours: &RuleSet,
    residue: &mut Residue,
) -> Result<(), ApplyError> {
    let candidates = ours
        .rules()
        .iter()
        .filter(|r| is_builtin_chain(r.chain) && jump_target(&r.body).is_none());
    for rule in candidates {
        let mut args = vec!["-w", "-t", rule.table, "-C", rule.chain];
        args.extend(rule.body.split_whitespace());
        if runner.run(&tools.iptables, &args, None)?.success {
            residue.add_builtin_rule(rule.table, format!("{} {}", rule.chain, rule.body));
        }
    }
    Ok(())
}

/// Checks a transaction without committing it.
pub fn test(runner: &dyn Runner, tools: &FamilyTools, text: &str) -> Result<(), ApplyError> {
    run_ok(runner, &tools.restore, &["--noflush", "--test"], Some(text)).map(drop)
}

/// Commits a transaction atomically.
pub fn commit(runner: &dyn Runner, tools: &FamilyTools, text: &str) -> Result<(), ApplyError> {
    run_ok(runner, &tools.restore, &["--noflush"], Some(text)).map(drop)
}
