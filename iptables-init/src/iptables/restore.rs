//! `iptables-restore` input: the clean-state rendering Istio prints (and its goldens pin), and the
//! rendering over a previous run's residue that makes re-apply and cleanup one atomic transaction.
//!
//! Residue handling: rules in built-in chains that jump to our chains are found in
//! `iptables-save` output and deleted with the saved spec (which `iptables-restore` accepts
//! verbatim); our non-jump rules in built-in chains are added by the caller after `iptables -C`
//! confirms them; our chains are flushed (kept when re-applying, removed when not planned).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{ISTIO_CHAINS, TABLES};
use crate::rules::{Position, Rule, RuleSet};

const BUILTIN_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

pub fn is_builtin_chain(chain: &str) -> bool {
    BUILTIN_CHAINS.contains(&chain)
}

/// What a previous run left in one address family, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Residue {
    tables: BTreeMap<String, TableResidue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TableResidue {
    /// Our chains that exist.
    chains: Vec<String>,
    /// Built-in chain rules to delete, as `CHAIN spec` (without `-A`/`-D`).
    builtin_rules: Vec<String>,
}

impl Residue {
    pub fn is_empty(&self) -> bool {
        self.tables
            .values()
            .all(|t| t.chains.is_empty() && t.builtin_rules.is_empty())
    }

    /// Records a built-in chain rule (`CHAIN spec`) to delete.
    pub fn add_builtin_rule(&mut self, table: &str, chain_and_spec: String) {
        let residue = self.tables.entry(table.to_owned()).or_default();
        if !residue.builtin_rules.contains(&chain_and_spec) {
            residue.builtin_rules.push(chain_and_spec);
        }
    }

    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.chains.iter().any(|c| c == chain))
    }

    fn table(&self, table: &str) -> Option<&TableResidue> {
        self.tables.get(table)
    }
}

/// Parses `iptables-save` output into our residue: our chains and the built-in chain rules that
/// jump to them.
pub fn parse_save(save: &str) -> Residue {
    let mut residue = Residue::default();
    let mut table = String::new();
    for line in save.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_owned();
        } else if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if ISTIO_CHAINS.contains(&chain) {
                let entry = residue.tables.entry(table.clone()).or_default();
                entry.chains.push(chain.to_owned());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            if is_builtin_chain(chain) && jump_target(rule).is_some() {
                residue.add_builtin_rule(&table, rule.to_owned());
            }
        }
    }
    residue
}

/// Istio's rendering for a clean kernel: per table, `-N` for each chain, then the rules.
pub fn render_restore(rules: &RuleSet) -> String {
    render_restore_over(rules, &Residue::default())
}

/// Renders `rules` so that applying them over `residue` leaves exactly `rules`: residual jumps
/// are deleted, residual chains flushed (and removed if no longer planned), missing chains created.
pub fn render_restore_over(rules: &RuleSet, residue: &Residue) -> String {
    let mut out = String::new();
    for table in TABLES {
        let planned = planned_chains(rules, table);
        let residual = residue.table(table);
        let rules_here: Vec<&Rule> = rules.in_table(table).collect();
        if rules_here.is_empty() && residual.is_none() {
            continue;
        }
        let mut lines = Vec::new();
        if let Some(residual) = residual {
            lines.extend(residual.builtin_rules.iter().map(|r| format!("-D {r}")));
            lines.extend(residual.chains.iter().map(|c| format!("-F {c}")));
            let unplanned = residual.chains.iter().filter(|c| !planned.contains(c));
            lines.extend(unplanned.map(|c| format!("-X {c}")));
        }
        let missing = planned.iter().filter(|c| !residue.has_chain(table, c));
        lines.extend(missing.map(|c| format!("-N {c}")));
        lines.extend(rules_here.iter().map(|r| rule_line(r)));
        if !lines.is_empty() {
            let _ = writeln!(out, "* {table}");
            lines.iter().for_each(|l| {
                let _ = writeln!(out, "{l}");
            });
            out.push_str("COMMIT\n");
        }
    }
    out
}

/// `-A CHAIN body` or `-I CHAIN n body`.
pub fn rule_line(rule: &Rule) -> String {
    match rule.position {
        Position::Append => format!("-A {} {}", rule.chain, rule.body),
        Position::Insert(at) => format!("-I {} {at} {}", rule.chain, rule.body),
    }
}

/// Our chains used in `table`: each chain with rules, in first-use order, then jump targets.
fn planned_chains(rules: &RuleSet, table: &str) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    let mut note = |chain: &str| {
        if !is_builtin_chain(chain) && !chains.iter().any(|c| c == chain) {
            chains.push(chain.to_owned());
        }
    };
    rules.in_table(table).for_each(|r| note(r.chain));
    rules
        .in_table(table)
        .filter_map(|r| jump_target(&r.body))
        .for_each(&mut note);
    chains
}

/// The chain a rule jumps to, if it is one of ours (`... -j ISTIO_X`).
pub fn jump_target(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace().rev();
    let target = words.next()?;
    (words.next() == Some("-j") && ISTIO_CHAINS.contains(&target)).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n\
        :OUTPUT ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_OUTPUT - [0:0]\n:KUBE-X - [0:0]\n\
        -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -j KUBE-X\n\
        -A ISTIO_OUTPUT -j RETURN\nCOMMIT\n";

    #[test]
    fn save_residue_lists_our_chains_and_jumps_only() {
        let residue = parse_save(SAVE);
        assert!(residue.has_chain("nat", "ISTIO_INBOUND"));
        assert!(!residue.has_chain("nat", "KUBE-X"));
        let nat = residue.table("nat").expect("nat residue");
        assert_eq!(
            nat.builtin_rules,
            [
                "PREROUTING -p tcp -j ISTIO_INBOUND",
                "OUTPUT -j ISTIO_OUTPUT"
            ]
        );
    }

    #[test]
    fn reapply_flushes_existing_chains_instead_of_creating_them() {
        let mut rules = RuleSet::default();
        rules.append("nat", "OUTPUT", "-j ISTIO_OUTPUT".into());
        rules.append("nat", "ISTIO_OUTPUT", "-j ISTIO_REDIRECT".into());
        let text = render_restore_over(&rules, &parse_save(SAVE));
        let expected = "* nat\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -j ISTIO_OUTPUT\n\
            -F ISTIO_INBOUND\n-F ISTIO_OUTPUT\n-X ISTIO_INBOUND\n-N ISTIO_REDIRECT\n\
            -A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn cleanup_over_nothing_renders_nothing() {
        assert_eq!(
            render_restore_over(&RuleSet::default(), &Residue::default()),
            ""
        );
    }
}
