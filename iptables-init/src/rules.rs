//! The rule model shared by the iptables and nftables back ends: an ordered list of rules, each
//! naming its table and chain, whether it is appended or inserted, and its body in the back end's
//! own syntax.
//!
//! Why a flat ordered list rather than a tree of tables and chains: Istio's generated rules are an
//! *ordered program* (appends and inserts interleave, e.g. `-I PREROUTING 1` after later appends),
//! and both renderers must replay that order exactly to reproduce Istio's golden files. Grouping by
//! table happens at render time.
//!
//! Invariant: a `RuleSet` only ever grows; rules keep the order in which the builder emitted them.

/// Where a rule goes in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// At the end of the chain (`-A`, `add rule`).
    Append,
    /// Before the rule at this position (`-I CHAIN n` is 1-based, nft `index n` is 0-based; the
    /// builder stores whatever its back end uses).
    Insert(u32),
}

/// One rule: table, chain, position and the back-end specific body (matches + target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub position: Position,
    pub body: String,
}

/// An ordered list of rules for one address family (iptables) or for the whole `inet` family
/// (nftables).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn append(&mut self, table: &'static str, chain: &'static str, body: String) {
        self.push(table, chain, Position::Append, body);
    }

    pub fn insert(&mut self, table: &'static str, chain: &'static str, at: u32, body: String) {
        self.push(table, chain, Position::Insert(at), body);
    }

    fn push(&mut self, table: &'static str, chain: &'static str, position: Position, body: String) {
        self.rules.push(Rule {
            table,
            chain,
            position,
            body,
        });
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules of one table, in emission order.
    pub fn in_table<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |rule| rule.table == table)
    }

    /// Whether any rule lives in `table`.
    pub fn uses_table(&self, table: &str) -> bool {
        self.in_table(table).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_keep_emission_order_across_tables() {
        let mut set = RuleSet::default();
        set.append("nat", "OUTPUT", "-j ISTIO_OUTPUT".into());
        set.insert("mangle", "ISTIO_INBOUND", 1, "-j RETURN".into());
        set.append("nat", "ISTIO_OUTPUT", "-j RETURN".into());
        let nat: Vec<_> = set.in_table("nat").map(|r| r.chain).collect();
        assert_eq!(nat, ["OUTPUT", "ISTIO_OUTPUT"]);
        assert_eq!(set.rules()[1].position, Position::Insert(1));
        assert!(set.uses_table("mangle"));
        assert!(!set.uses_table("raw"));
    }
}
