//! Apply logic against a scripted fake `Runner` (the real kernel is exercised by
//! `tests/netns_apply.rs`).

use std::cell::RefCell;

use super::*;
use crate::config::RawConfig;

/// Answers by program name; records every call as `program args… [<stdin>]`.
struct FakeRunner {
    saves: Vec<(&'static str, String)>,
    failing: Vec<&'static str>,
    missing: Vec<&'static str>,
    calls: RefCell<Vec<String>>,
}

impl FakeRunner {
    fn new() -> Self {
        Self {
            saves: Vec::new(),
            failing: Vec::new(),
            missing: Vec::new(),
            calls: RefCell::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl Runner for FakeRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, ApplyError> {
        if !self.exists(program) {
            return Err(ApplyError::MissingBinary {
                program: program.into(),
            });
        }
        let mut call = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(input) = stdin {
            call.push_str(&format!(" <{input}>"));
        }
        self.calls.borrow_mut().push(call.clone());
        let failing = self.failing.iter().any(|f| call.starts_with(f));
        let stdout = self
            .saves
            .iter()
            .find(|(p, _)| *p == program)
            .map(|(_, out)| out.clone())
            .unwrap_or_default();
        Ok(Output {
            success: !failing,
            stdout,
            stderr: if failing {
                "iptables-restore: line 3 failed\n".into()
            } else {
                String::new()
            },
        })
    }

    fn exists(&self, program: &str) -> bool {
        !self.missing.contains(&program)
    }
}

fn injector_config() -> CaptureConfig {
    CaptureConfig::try_from(RawConfig {
        inbound_interception_mode: "REDIRECT".into(),
        outbound_ip_ranges_include: "*".into(),
        inbound_ports_include: "*".into(),
        inbound_ports_exclude: "15090,15021,15020".into(),
        ..RawConfig::default()
    })
    .expect("valid")
}

fn restores(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| c.starts_with("iptables-restore --noflush <"))
        .collect()
}

#[test]
fn apply_on_clean_kernel_tests_then_commits_istio_rules() {
    let runner = FakeRunner::new();
    let cfg = injector_config();
    run(&runner, &cfg, Backend::Iptables, Action::Apply, None).expect("applies");
    let calls = runner.calls();
    let expected = format!(
        "iptables-restore --noflush <{}>",
        iptables::render_restore(&iptables::build(&cfg).v4)
    );
    assert_eq!(restores(&calls), [&expected]);
    let test_at = calls
        .iter()
        .position(|c| c.starts_with("iptables-restore --noflush --test"));
    let commit_at = calls.iter().position(|c| *c == expected);
    assert!(test_at < commit_at, "tested before commit: {calls:#?}");
}

#[test]
fn reapply_replaces_previous_run_instead_of_duplicating() {
    let mut runner = FakeRunner::new();
    let previous = "*nat\n:PREROUTING ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_OUTPUT - [0:0]\n\
        -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n";
    runner.saves.push(("iptables-save", previous.into()));
    run(
        &runner,
        &injector_config(),
        Backend::Iptables,
        Action::Apply,
        None,
    )
    .expect("applies");
    let calls = runner.calls();
    let commit = restores(&calls)[0];
    assert!(
        commit.contains("-D PREROUTING -p tcp -j ISTIO_INBOUND\n"),
        "{commit}"
    );
    assert!(commit.contains("-F ISTIO_OUTPUT\n"), "{commit}");
    assert!(
        !commit.contains("-N ISTIO_OUTPUT\n"),
        "existing chain is reused: {commit}"
    );
    assert!(commit.contains("-N ISTIO_REDIRECT\n"), "{commit}");
}

#[test]
fn cleanup_of_clean_kernel_changes_nothing() {
    let runner = FakeRunner::new();
    run(
        &runner,
        &injector_config(),
        Backend::Iptables,
        Action::Cleanup,
        None,
    )
    .expect("ok");
    assert!(
        restores(&runner.calls()).is_empty(),
        "{:#?}",
        runner.calls()
    );
}

#[test]
fn failed_test_commits_nothing() {
    let mut runner = FakeRunner::new();
    runner.failing.push("ip6tables-restore --noflush --test");
    let mut cfg = injector_config();
    cfg.enable_ipv6 = true;
    let err = run(&runner, &cfg, Backend::Iptables, Action::Apply, None).expect_err("fails");
    assert!(
        err.to_string()
            .contains("ip6tables-restore --noflush --test"),
        "{err}"
    );
    assert!(restores(&runner.calls()).is_empty(), "nothing committed");
}

#[test]
fn missing_restore_binary_is_reported_by_name() {
    let mut runner = FakeRunner::new();
    runner.missing.push("iptables-save");
    let err = run(
        &runner,
        &injector_config(),
        Backend::Iptables,
        Action::Apply,
        None,
    )
    .expect_err("fails");
    assert!(
        err.to_string()
            .starts_with("`iptables-save` not found on PATH"),
        "{err}"
    );
}

#[test]
fn nftables_apply_replaces_tables_in_one_transaction() {
    let runner = FakeRunner::new();
    run(
        &runner,
        &injector_config(),
        Backend::Nftables,
        Action::Apply,
        None,
    )
    .expect("applies");
    let calls = runner.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].starts_with(
        "nft -f - <add table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\n"
    ));
}
