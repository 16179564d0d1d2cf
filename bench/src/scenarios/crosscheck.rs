//! Cross-checks of the in-tree generator with outside load tools, run on core 0 against the same
//! listener in the first repetition: wrk at S1 saturation, fortio (Istio's load tool) at S1's
//! fixed rate through Tern and the direct path, h2load at S2's h2c saturation. If a tool agrees
//! with the in-tree generator, the generator is not what the numbers measure.
//!
//! Each becomes a measurement of its own case (its name carries the tool), which the report puts
//! beside the in-tree case it checks and leaves out of the ratio table and the plots.

use super::{Bench, FIXED_CONNECTIONS, FIXED_RATE, H2_SATURATION_STREAMS, SATURATION_CONNECTIONS};
use crate::backend;
use crate::cli::Proxy;
use crate::measure;
use crate::proxies::{self, Running};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What one tool run gave: its stdout and the proxy's CPU seconds meanwhile.
struct ToolRun {
    stdout: String,
    cpu: Option<f64>,
}

impl Bench {
    /// Runs `taskset -c 0 <program> <args>`, reading the proxy's CPU around it. A failure to
    /// run becomes a skip of `scenario` for `proxy`.
    async fn tool(
        &mut self,
        scenario: &str,
        proxy: Proxy,
        running: &Running,
        program: PathBuf,
        args: &[String],
    ) -> Option<ToolRun> {
        let name = program
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let pgid = running.pgid();
        let cpu0 = pgid.map(measure::group_cpu_seconds);
        let output = tokio::process::Command::new("taskset")
            .args(["-c", "0"])
            .arg(&program)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await;
        let cpu1 = pgid.map(measure::group_cpu_seconds);
        match output {
            Ok(out) if out.status.success() => Some(ToolRun {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
            }),
            Ok(out) => {
                let reason = format!(
                    "{name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                self.skip(scenario, proxy, reason);
                None
            }
            Err(e) => {
                self.skip(scenario, proxy, format!("{name} not runnable: {e}"));
                None
            }
        }
    }

    /// `wrk -t1 -c50` at S1 saturation (64 B).
    pub(super) async fn wrk(&mut self, running: &Running, proxy: Proxy) {
        let Ok(program) = proxies::on_path("wrk") else {
            self.skip("S1 wrk", proxy, "wrk not installed (bench.sh installs it)");
            return;
        };
        let secs = self.settings.duration.as_secs().max(1);
        let args = [
            "-t1".to_string(),
            format!("-c{SATURATION_CONNECTIONS}"),
            format!("-d{secs}s"),
            format!("http://{}/64", running.listen),
        ];
        let Some(run) = self.tool("S1 wrk", proxy, running, program, &args).await else {
            return;
        };
        let Some(requests) = wrk_requests(&run.stdout) else {
            let reason = format!("unreadable wrk output: {}", run.stdout);
            self.skip("S1 wrk", proxy, reason);
            return;
        };
        let mut m = BTreeMap::from([("rps".to_string(), requests / secs as f64)]);
        if let Some(cpu) = run.cpu {
            m.insert("cpu_us_per_req".into(), cpu * 1e6 / requests);
        }
        let case = format!("saturation, wrk -t1 -c{SATURATION_CONNECTIONS}, 64 B");
        self.record("S1", &case, proxy, 0, m);
    }

    /// `fortio load` at S1's 1000 rps over 16 connections (1 KB), for its percentiles beside
    /// the in-tree open loop's. fortio paces each connection itself and times each request from
    /// its actual send.
    pub(super) async fn fortio(&mut self, running: &Running, proxy: Proxy) {
        let program = proxies::repo_root().join(".cache/go/bin/fortio");
        let program = if program.is_file() {
            program
        } else if let Ok(found) = proxies::on_path("fortio") {
            found
        } else {
            let reason = "fortio not installed (scripts/install-test-deps.d/bench.sh installs it with go install)";
            self.skip("S1 fortio", proxy, reason);
            return;
        };
        let secs = self.settings.duration.as_secs_f64().max(1.0);
        let args = [
            "load".to_string(),
            "-quiet".into(),
            "-qps".into(),
            FIXED_RATE.to_string(),
            "-c".into(),
            FIXED_CONNECTIONS.to_string(),
            "-t".into(),
            format!("{}ms", (secs * 1000.0) as u64),
            "-p".into(),
            "50,90,99,99.9".into(),
            "-json".into(),
            "-".into(),
            format!("http://{}{}", running.listen, backend::path_for(1024)),
        ];
        let Some(run) = self.tool("S1 fortio", proxy, running, program, &args).await else {
            return;
        };
        match fortio_metrics(&run.stdout) {
            Ok(mut m) => {
                if let (Some(cpu), Some(count)) = (run.cpu, m.remove("requests"))
                    && count > 0.0
                {
                    m.insert("cpu_us_per_req".into(), cpu * 1e6 / count);
                }
                self.record("S1", &fortio_case(), proxy, 0, m);
            }
            Err(e) => self.skip("S1 fortio", proxy, format!("unreadable fortio JSON: {e}")),
        }
    }

    /// `h2load -c1 -m50` at S2's h2c saturation (64 B, prior knowledge).
    pub(super) async fn h2load(&mut self, running: &Running, proxy: Proxy) {
        let Ok(program) = proxies::on_path("h2load") else {
            let reason = "h2load not installed (bench.sh installs nghttp2-client)";
            self.skip("S2 h2load", proxy, reason);
            return;
        };
        let secs = self.settings.duration.as_secs().max(1);
        let args = [
            "-c1".to_string(),
            format!("-m{H2_SATURATION_STREAMS}"),
            format!("-D{secs}"),
            format!("http://{}/64", running.listen),
        ];
        let Some(run) = self.tool("S2 h2load", proxy, running, program, &args).await else {
            return;
        };
        let Some((succeeded, failed)) = h2load_requests(&run.stdout) else {
            let reason = format!("unreadable h2load output: {}", run.stdout);
            self.skip("S2 h2load", proxy, reason);
            return;
        };
        let mut m = BTreeMap::from([
            ("rps".to_string(), succeeded / secs as f64),
            ("errors".to_string(), failed),
        ]);
        if let Some(cpu) = run.cpu.filter(|_| succeeded > 0.0) {
            m.insert("cpu_us_per_req".into(), cpu * 1e6 / succeeded);
        }
        let case = format!("saturation, h2load -c1 -m{H2_SATURATION_STREAMS}, 64 B");
        self.record("S2", &case, proxy, 0, m);
    }
}

/// The case name of the fortio cross-check.
fn fortio_case() -> String {
    format!("{FIXED_RATE} rps, fortio load -c {FIXED_CONNECTIONS}, 1 KB")
}

/// The request count in wrk's "N requests in Xs, Y read" line.
fn wrk_requests(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (succeeded, failed + errored + timed out) from h2load's "requests: N total, N started, N done,
/// N succeeded, N failed, N errored, N timeout" line.
fn h2load_requests(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().find(|l| l.starts_with("requests:"))?;
    let count = |what: &str| -> Option<f64> {
        line.split(',')
            .map(str::trim)
            .find(|part| part.ends_with(what))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let bad = count("failed")? + count("errored")? + count("timeout")?;
    Some((count("succeeded")?, bad))
}

/// Percentiles (µs), achieved rps, errors (non-200 answers) and the request count from fortio's
/// JSON result.
fn fortio_metrics(json: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let histogram = &v["DurationHistogram"];
    let count = histogram["Count"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("no DurationHistogram.Count"))?;
    let ok = v["RetCodes"]["200"].as_f64().unwrap_or(0.0);
    let mut m = BTreeMap::from([
        ("requests".to_string(), count),
        ("errors".to_string(), count - ok),
    ]);
    if let Some(qps) = v["ActualQPS"].as_f64() {
        m.insert("rps".into(), qps);
    }
    for p in histogram["Percentiles"].as_array().into_iter().flatten() {
        let (Some(q), Some(seconds)) = (p["Percentile"].as_f64(), p["Value"].as_f64()) else {
            continue;
        };
        let names = [
            (50.0, "p50_us"),
            (90.0, "p90_us"),
            (99.0, "p99_us"),
            (99.9, "p999_us"),
        ];
        if let Some((_, name)) = names.iter().find(|(at, _)| (at - q).abs() < 1e-9) {
            m.insert((*name).into(), seconds * 1e6);
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_counts_come_from_its_requests_line() {
        let text = "finished in 2.00s, 21000.50 req/s, 1.2MB/s\n\
            requests: 42001 total, 42051 started, 42001 done, 41990 succeeded, 11 failed, 2 errored, 1 timeout\n";
        assert_eq!(h2load_requests(text), Some((41990.0, 14.0)));
        assert_eq!(h2load_requests("nothing"), None);
    }

    #[test]
    fn wrk_count_is_the_first_number_of_its_summary_line() {
        let text = "  Latency ...\n  123456 requests in 2.00s, 10.00MB read\n";
        assert_eq!(wrk_requests(text), Some(123456.0));
    }

    #[test]
    fn fortio_percentiles_are_read_in_microseconds() {
        let json = r#"{"ActualQPS": 999.5, "RetCodes": {"200": 1998, "503": 1},
            "DurationHistogram": {"Count": 1999, "Percentiles": [
                {"Percentile": 50, "Value": 0.000250},
                {"Percentile": 90, "Value": 0.0004},
                {"Percentile": 99, "Value": 0.0012},
                {"Percentile": 99.9, "Value": 0.003}]}}"#;
        let m = fortio_metrics(json).expect("parses");
        assert_eq!(m["requests"], 1999.0);
        assert_eq!(m["errors"], 1.0);
        assert_eq!(m["rps"], 999.5);
        assert!((m["p50_us"] - 250.0).abs() < 1e-6);
        assert!((m["p99_us"] - 1200.0).abs() < 1e-6);
        assert!((m["p999_us"] - 3000.0).abs() < 1e-6);
        assert!(fortio_metrics("{}").is_err());
    }
}
