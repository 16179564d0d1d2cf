//! What a proxy costs, read from /proc: CPU time (utime + stime) and resident memory (VmRSS).
//!
//! A proxy runs as its own process group (nginx: master plus one worker), so both figures are
//! summed over every process of the group. CPU is read before and after a measurement window;
//! the delta divided by completed requests is the CPU per request BENCHMARKS.md asks for. It
//! counts every thread of the process, so a proxy's helper threads are charged to it.

use std::path::Path;

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second
/// for this interface on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// One process's fields of interest from `/proc/<pid>/stat`: (process group, utime + stime ticks).
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    let pgrp = fields.get(2)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((pgrp, utime + stime))
}

/// The pids of every process in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(pgrp, _)| pgrp == pgid))
        .collect()
}

/// CPU seconds (user + system) used so far by every process of group `pgid`.
pub fn group_cpu_seconds(pgid: u32) -> f64 {
    let ticks: u64 = group_members(pgid)
        .into_iter()
        .filter_map(|pid| stat(pid).map(|(_, ticks)| ticks))
        .sum();
    ticks as f64 / TICKS_PER_SECOND
}

/// CPU seconds used so far by this process (the generator and the backend).
pub fn own_cpu_seconds() -> f64 {
    stat(std::process::id()).map_or(0.0, |(_, ticks)| ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds the whole machine has been busy (every core: user, nice, system, irq, softirq,
/// steal from `/proc/stat`), to tell from the window's delta whether both cores were full.
pub fn machine_busy_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| fields.get(*i))
        .sum();
    busy as f64 / TICKS_PER_SECOND
}

/// VmRSS of one process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS summed over the process group `pgid`, in KiB (shared pages counted once per process).
pub fn group_rss_kib(pgid: u32) -> u64 {
    group_members(pgid).into_iter().filter_map(rss_kib).sum()
}

/// Pins this process (and the threads and children it starts afterwards) to `core`.
pub fn pin_self_to_core(core: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(core)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

/// A one-paragraph description of the machine: CPU model, cores, memory, kernel, load.
pub fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "uname": read("/proc/version").trim(),
        "loadavg_at_start": read("/proc/loadavg").trim(),
    })
}
