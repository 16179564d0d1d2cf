//! Policy routing that TPROXY needs (packets marked `-t` are delivered locally via route table
//! `-r`) and the `::6` loopback address IPv6 inbound passthrough binds to. Istio does these with
//! netlink; we use `ip`, idempotently: an existing rule is not added twice, `replace` is used for
//! routes and addresses.

use super::ApplyError;
use super::command::{Runner, run_ok};
use crate::config::CaptureConfig;

/// `ip rule add fwmark <mark> lookup <table>` and a local default route in that table, per family.
pub fn install_tproxy(runner: &dyn Runner, cfg: &CaptureConfig) -> Result<(), ApplyError> {
    let (mark, table) = (
        cfg.tproxy_mark.to_string(),
        cfg.tproxy_route_table.to_string(),
    );
    for (family, default) in families(cfg) {
        let present = run_ok(
            runner,
            "ip",
            &[family, "rule", "show", "fwmark", &mark, "lookup", &table],
            None,
        )?;
        if present.trim().is_empty() {
            run_ok(
                runner,
                "ip",
                &[family, "rule", "add", "fwmark", &mark, "lookup", &table],
                None,
            )?;
        }
        let route = [
            family, "route", "replace", "local", default, "dev", "lo", "table", &table,
        ];
        run_ok(runner, "ip", &route, None)?;
    }
    Ok(())
}

/// Removes what `install_tproxy` added; absent entries are fine.
pub fn remove_tproxy(runner: &dyn Runner, cfg: &CaptureConfig) -> Result<(), ApplyError> {
    let (mark, table) = (
        cfg.tproxy_mark.to_string(),
        cfg.tproxy_route_table.to_string(),
    );
    for (family, _) in families(cfg) {
        let rule = [family, "rule", "del", "fwmark", &mark, "lookup", &table];
        // Deleting one at a time; stop when none is left (bounded in case `ip` misbehaves).
        for _ in 0..16 {
            if !runner.run("ip", &rule, None)?.success {
                break;
            }
        }
        let _ = runner.run("ip", &[family, "route", "flush", "table", &table], None)?;
    }
    Ok(())
}

/// `ip -6 addr replace ::6/128 dev lo`: the source of inbound passthrough connections.
pub fn install_ipv6_passthrough_addr(runner: &dyn Runner) -> Result<(), ApplyError> {
    run_ok(
        runner,
        "ip",
        &["-6", "addr", "replace", "::6/128", "dev", "lo"],
        None,
    )
    .map(drop)
}

fn families(cfg: &CaptureConfig) -> Vec<(&'static str, &'static str)> {
    let mut families = vec![("-4", "0.0.0.0/0")];
    if cfg.enable_ipv6 {
        families.push(("-6", "::/0"));
    }
    families
}
