//! `nft -f` input for a rule program, in the form Istio's transaction prints.
//!
//! Per table with rules: `add table`, `flush table`, the chains that have rules (fixed order,
//! base chains with their hooks), then the rules in emission order. An insert at an index the
//! chain has not reached yet becomes an append, as nft rejects it (Istio does the same).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{MANGLE_TABLE, NAT_TABLE, RAW_TABLE, TABLES};
use crate::rules::{Position, RuleSet};

/// A chain and, for base chains, its `{ type … hook … priority … ; }` spec.
type ChainDef = (&'static str, Option<&'static str>);

fn chains_of(table: &str) -> &'static [ChainDef] {
    const NAT: &[ChainDef] = &[
        ("prerouting", Some("type nat hook prerouting priority -100")),
        ("output", Some("type nat hook output priority -100")),
        ("istio-inbound", None),
        ("istio-redirect", None),
        ("istio-in-redirect", None),
        ("istio-output", None),
        ("istio-output-dns", None),
    ];
    const MANGLE: &[ChainDef] = &[
        (
            "prerouting",
            Some("type filter hook prerouting priority -150"),
        ),
        ("output", Some("type route hook output priority -150")),
        ("istio-divert", None),
        ("istio-tproxy", None),
        ("istio-inbound", None),
        ("istio-drop", None),
    ];
    const RAW: &[ChainDef] = &[
        (
            "prerouting",
            Some("type filter hook prerouting priority -300"),
        ),
        ("output", Some("type filter hook output priority -300")),
        ("istio-inbound", None),
        ("istio-output-dns", None),
    ];
    match table {
        NAT_TABLE => NAT,
        MANGLE_TABLE => MANGLE,
        RAW_TABLE => RAW,
        _ => &[],
    }
}

/// Istio's rendering of `rules` (what `--dry-run` prints and the goldens pin).
pub fn render(rules: &RuleSet) -> String {
    let mut out = String::new();
    for table in TABLES.into_iter().filter(|t| rules.uses_table(t)) {
        render_table(&mut out, rules, table);
    }
    out
}

/// Deletes all our tables, whether or not they exist (`add` first makes `delete` safe).
pub fn render_cleanup() -> String {
    TABLES
        .iter()
        .map(|t| format!("add table inet {t}\ndelete table inet {t}\n"))
        .collect()
}

/// One transaction that removes any previous run's tables and installs `rules`.
pub fn render_replacing(rules: &RuleSet) -> String {
    render_cleanup() + &render(rules)
}

fn render_table(out: &mut String, rules: &RuleSet, table: &str) {
    let _ = writeln!(out, "add table inet {table}");
    let _ = writeln!(out, "flush table inet {table}");
    let used = |chain: &str| rules.in_table(table).any(|r| r.chain == chain);
    for (chain, spec) in chains_of(table).iter().filter(|(c, _)| used(c)) {
        match spec {
            Some(spec) => writeln!(out, "add chain inet {table} {chain} {{ {spec} ; }}"),
            None => writeln!(out, "add chain inet {table} {chain}"),
        }
        .unwrap_or_default();
    }
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for rule in rules.in_table(table) {
        let count = counts.entry(rule.chain).or_default();
        let (chain, body) = (rule.chain, &rule.body);
        let _ = match rule.position {
            Position::Insert(at) if at < *count => {
                writeln!(out, "insert rule inet {table} {chain} index {at} {body}")
            }
            _ => writeln!(out, "add rule inet {table} {chain} {body}"),
        };
        *count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_into_short_chain_becomes_append() {
        let mut rules = RuleSet::default();
        rules.insert(
            NAT_TABLE,
            "prerouting",
            0,
            "iifname eth0 counter return".into(),
        );
        rules.insert(
            NAT_TABLE,
            "prerouting",
            0,
            "iifname eth1 counter return".into(),
        );
        rules.insert(
            NAT_TABLE,
            "prerouting",
            5,
            "iifname eth2 counter return".into(),
        );
        let expected = "add table inet istio-proxy-nat\nflush table inet istio-proxy-nat\n\
            add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -100 ; }\n\
            add rule inet istio-proxy-nat prerouting iifname eth0 counter return\n\
            insert rule inet istio-proxy-nat prerouting index 0 iifname eth1 counter return\n\
            add rule inet istio-proxy-nat prerouting iifname eth2 counter return\n";
        assert_eq!(render(&rules), expected);
    }

    #[test]
    fn cleanup_deletes_every_istio_table() {
        let text = render_cleanup();
        for table in TABLES {
            assert!(
                text.contains(&format!("delete table inet {table}\n")),
                "{table}"
            );
        }
    }
}
