//! Prerequisites: a test that cannot get what it needs skips with one clear line, except under
//! `CI=true`, where a missing prerequisite is a failure (CI installs everything).

/// True when running under CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `true` when the test may go on. Otherwise prints why and returns `false` (skip), or
/// panics under CI.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "prerequisite missing under CI=true: {what}");
    eprintln!("SKIPPED: {what}");
    false
}

/// Whether this process runs as root (network namespaces, iptables).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
