//! The deterministic regression figure of BENCHMARKS.md: instructions per proxied request,
//! counted by `valgrind --tool=callgrind` (this VM has no hardware counters, and instruction
//! counts do not care how busy the machine is).
//!
//! The script is fixed: the proxy (one worker, the S1 one-route config) starts under callgrind;
//! one keep-alive HTTP/1.1 connection sends `WARMUP` requests (64 B bodies), one after the
//! other; then the counters are zeroed (`callgrind_control --zero`), `REQUESTS` more requests go
//! the same way and the counters are dumped (`--dump`, which also zeroes them); then the proxy
//! idles for as long as those requests took and the counters are dumped again. Instructions per
//! request = (Ir of the request dump - Ir of the idle dump) / `REQUESTS`: the idle dump removes
//! what the proxy spends on its own timers over that time and what zeroing and dumping cost.
//!
//! Requests are sequential on one connection, so every run takes the same code paths; what
//! remains variable (how many bytes one read returns, timer wheel ticks) is small, and the
//! report shows every run's figure so the agreement is visible.

use crate::cli::Proxy;
use crate::load::H1Connection;
use crate::proxies::{self, Binaries, Mode};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Requests before counting: connection set-up, pool, first-use allocations.
const WARMUP: u32 = 200;
/// Requests counted.
pub const REQUESTS: u32 = 2000;
/// Starting under valgrind is slow (it translates the whole binary as it runs).
const START_DEADLINE: Duration = Duration::from_secs(180);
const CONTROL_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the script once against `proxy` (Tern or Envoy: a single process) and returns its metrics.
/// With `keep`, the request dump is copied there as `callgrind.<proxy>.<run>.out`.
pub async fn run(
    proxy: Proxy,
    binaries: &Binaries,
    backend: SocketAddr,
    keep: Option<(&Path, u32)>,
) -> anyhow::Result<BTreeMap<String, f64>> {
    if !matches!(proxy, Proxy::Tern | Proxy::Envoy) {
        bail!("callgrind runs single-process proxies only (tern, envoy)");
    }
    proxies::on_path("valgrind").map_err(anyhow::Error::msg)?;
    proxies::on_path("callgrind_control").map_err(anyhow::Error::msg)?;
    let dir = out_dir(proxy)?;
    let keep = keep.map(|(d, run)| d.join(format!("callgrind.{}.{run}.out", proxy.name())));
    let result = script(proxy, binaries, backend, &dir, keep.as_deref()).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn script(
    proxy: Proxy,
    binaries: &Binaries,
    backend: SocketAddr,
    dir: &Path,
    keep: Option<&Path>,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        "-q".into(),
        // Self-contained dumps (no names shared with earlier dumps): callgrind_annotate reads
        // a kept dump on its own.
        "--compress-strings=no".into(),
        format!(
            "--callgrind-out-file={}",
            dir.join("callgrind.out").display()
        ),
    ];
    let running = proxies::start_under(
        proxy,
        binaries,
        Mode::Http1,
        backend,
        &wrapper,
        START_DEADLINE,
    )
    .await?;
    let pid = running.pgid().context("no proxy process")?;
    let mut connection = H1Connection::connect(running.listen, "/64").await?;
    for _ in 0..WARMUP {
        connection.header_round_trip("").await?;
    }
    control(pid, "--zero").await?;
    let start = Instant::now();
    for _ in 0..REQUESTS {
        connection.header_round_trip("").await?;
    }
    let took = start.elapsed();
    control(pid, "--dump=requests").await?;
    let requests = newest_dump_ir(dir, keep)?;
    tokio::time::sleep(took).await;
    control(pid, "--dump=idle").await?;
    let idle = newest_dump_ir(dir, None)?;
    drop(connection);
    drop(running);
    let per_request = (requests as f64 - idle as f64) / f64::from(REQUESTS);
    Ok(BTreeMap::from([
        ("ir_per_req".to_string(), per_request),
        ("ir_requests_total".into(), requests as f64),
        ("ir_idle_total".into(), idle as f64),
        ("requests".into(), f64::from(REQUESTS)),
        ("script_s".into(), took.as_secs_f64()),
    ]))
}

/// `callgrind_control <action> <pid>`, which reaches the process through valgrind's gdbserver.
async fn control(pid: u32, action: &str) -> anyhow::Result<()> {
    let output = tokio::time::timeout(
        CONTROL_DEADLINE,
        tokio::process::Command::new("callgrind_control")
            .arg(action)
            .arg(pid.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("callgrind_control {action} timed out"))??;
    if !output.status.success() {
        bail!(
            "callgrind_control {action} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The total instruction count (`summary:` line) of the most recent dump in `dir`; each dump is
/// read once (and copied to `keep`), then removed, so the next call finds the next one.
fn newest_dump_ir(dir: &Path, keep: Option<&Path>) -> anyhow::Result<u64> {
    let dump = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("callgrind.out."))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .context("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&dump)?;
    if let Some(keep) = keep {
        std::fs::copy(&dump, keep).with_context(|| format!("keeping {}", keep.display()))?;
    }
    let _ = std::fs::remove_file(&dump);
    summary_ir(&text).with_context(|| format!("no summary line in {}", dump.display()))
}

/// The `summary:` (or `totals:`) line's first event count: instructions (Ir).
fn summary_ir(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn out_dir(proxy: Proxy) -> anyhow::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "tern-bench-callgrind-{}-{}-{n}",
        std::process::id(),
        proxy.name(),
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::summary_ir;

    #[test]
    fn the_instruction_count_comes_from_the_summary_line() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npid: 42\ncmd: tern\npart: 1\n\npositions: line\nevents: Ir\nsummary: 123456789\n\nfn=(1) main\n3 10\ntotals: 123456789\n";
        assert_eq!(summary_ir(dump), Some(123_456_789));
        assert_eq!(summary_ir("events: Ir\n"), None);
    }
}
