//! Real kernel test: the binary, run with the injector's flags inside a fresh network namespace,
//! installs Istio's rules; a second run changes nothing; `--cleanup-only` restores the tables
//! exactly (unrelated rules placed there first survive untouched).
//!
//! Needs root, `ip`, iptables and nftables. Without them it skips with one line, unless
//! `CI=true`, where a missing prerequisite fails the test.

use std::process::Command;

use iptables_init::config::RawConfig;
use iptables_init::{CaptureConfig, iptables, nftables};

const BIN: &str = env!("CARGO_BIN_EXE_iptables-init");
const INJECTOR_FLAGS: &[&str] = iptables_init::ISTIO_INJECTOR_ARGS;

/// A network namespace removed on drop, even when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("tern-ipt-{:x}{:x}", std::process::id(), nanos);
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics with its stderr on failure.
    fn exec(&self, command: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        run("ip", &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reason the test cannot run here, if any.
fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Some("not running as root".into());
    }
    let tools = ["ip", "iptables-save", "ip6tables-save", "iptables", "nft"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| format!("`{t}` not installed (scripts/install-test-deps.d/iptables.sh)"))
}

/// Skips (or fails under CI=true) when the prerequisites are missing.
fn prerequisites_met(test: &str) -> bool {
    let Some(reason) = missing_prerequisite() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
    false
}

/// `iptables-save` for both families without comments and counters, and without tables that
/// hold nothing (only built-in chains with ACCEPT policy): iptables-nft creates those on first
/// use and no iptables command can remove them; they have no effect on packets.
fn saved_tables(ns: &Netns) -> String {
    let mut out = String::new();
    for save in ["iptables-save", "ip6tables-save"] {
        let text = ns.exec(&[save]);
        for block in text.split("COMMIT").map(str::trim) {
            let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with('#')).collect();
            let empty = lines
                .iter()
                .all(|l| l.starts_with('*') || l.ends_with("ACCEPT [0:0]"));
            if !empty {
                let block = lines.join("\n");
                out += &format!("{save}\n{}\nCOMMIT\n", strip_counters(&block));
            }
        }
    }
    out
}

fn strip_counters(text: &str) -> String {
    text.lines()
        .map(|l| match l.rfind(" [") {
            Some(at) if l.starts_with(':') => &l[..at],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
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

fn run_binary(ns: &Netns, extra: &[&str]) {
    let mut command = vec![BIN];
    command.extend_from_slice(INJECTOR_FLAGS);
    command.extend_from_slice(extra);
    // IPv6 detection would depend on the namespace's addresses; pin it.
    command.push("--enable-ipv6=false");
    ns.exec(&command);
}

#[test]
fn iptables_apply_is_idempotent_and_cleanup_restores_tables() {
    if !prerequisites_met("iptables_apply_is_idempotent_and_cleanup_restores_tables") {
        return;
    }
    let ns = Netns::create();
    ns.exec(&["iptables", "-t", "nat", "-N", "KEEP_ME"]);
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        "192.0.2.1/32",
        "-j",
        "KEEP_ME",
    ]);
    ns.exec(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
    ]);
    let before = saved_tables(&ns);

    run_binary(&ns, &[]);
    let applied = saved_tables(&ns);
    let istio_rules = applied
        .lines()
        .filter(|l| l.starts_with("-A") && l.contains("ISTIO"))
        .count();
    let planned = iptables::build(&injector_config()).v4.rules().len();
    assert_eq!(
        istio_rules, planned,
        "every planned rule is installed:\n{applied}"
    );
    for expected in [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A OUTPUT -d 192.0.2.1/32 -j KEEP_ME",
    ] {
        assert!(
            applied.contains(expected),
            "missing {expected:?} in:\n{applied}"
        );
    }

    run_binary(&ns, &[]);
    assert_eq!(
        saved_tables(&ns),
        applied,
        "re-running must not duplicate rules"
    );

    run_binary(&ns, &["--cleanup-only"]);
    assert_eq!(
        saved_tables(&ns),
        before,
        "cleanup must restore the tables exactly"
    );
    run_binary(&ns, &["--cleanup-only"]);
    assert_eq!(
        saved_tables(&ns),
        before,
        "cleanup of a clean namespace is a no-op"
    );
}

/// `nft list ruleset` without packet/byte counts.
fn ruleset(ns: &Netns) -> String {
    let text = ns.exec(&["nft", "list", "ruleset"]);
    text.lines()
        .map(|l| match l.find("counter packets") {
            Some(at) => format!(
                "{}counter{}",
                &l[..at],
                l[at..]
                    .splitn(6, ' ')
                    .nth(5)
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            ),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nftables_apply_is_idempotent_and_cleanup_restores_ruleset() {
    if !prerequisites_met("nftables_apply_is_idempotent_and_cleanup_restores_ruleset") {
        return;
    }
    let ns = Netns::create();
    ns.exec(&["nft", "add table inet keep; add chain inet keep out { type filter hook output priority 0 ; }; add rule inet keep out ip daddr 192.0.2.1 counter"]);
    let before = ruleset(&ns);

    run_binary(&ns, &["--native-nftables"]);
    let applied = ruleset(&ns);
    let planned = nftables::build(&injector_config()).rules().len();
    let installed = applied.matches("counter").count() - before.matches("counter").count();
    assert_eq!(
        installed, planned,
        "every planned rule is installed:\n{applied}"
    );
    assert!(applied.contains("table inet istio-proxy-nat"), "{applied}");
    assert!(applied.contains("redirect to :15001"), "{applied}");

    run_binary(&ns, &["--native-nftables"]);
    assert_eq!(ruleset(&ns), applied, "re-running must not duplicate rules");

    run_binary(&ns, &["--native-nftables", "--cleanup-only"]);
    assert_eq!(
        ruleset(&ns),
        before,
        "cleanup must restore the ruleset exactly"
    );
}
