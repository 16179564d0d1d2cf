//! Results as JSON and as a Markdown report: one table per scenario case (median and min–max
//! over repetitions per path), a ratio table (Tern against each comparator and the direct path),
//! and the generator cross-checks against wrk (S1 saturation), fortio (S1 fixed rate) and h2load
//! (S2 saturation).

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One measured point: a case of a scenario, on one path, in one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub scenario: String,
    pub case: String,
    pub proxy: String,
    pub repetition: u32,
    pub metrics: BTreeMap<String, f64>,
}

/// A path (or a path's case) that did not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    pub scenario: String,
    pub proxy: String,
    pub reason: String,
}

/// Median, min and max of one metric over repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
            n,
        })
    }
}

/// The summary row of one (scenario, case, path).
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub scenario: String,
    pub case: String,
    pub proxy: String,
    pub metrics: BTreeMap<String, Spread>,
}

/// Everything a run produced.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub date: String,
    pub command: String,
    pub machine: serde_json::Value,
    pub settings: serde_json::Value,
    pub versions: BTreeMap<String, String>,
    pub measurements: Vec<Measurement>,
    pub skipped: Vec<Skip>,
    pub notes: Vec<String>,
    pub summary: Vec<SummaryRow>,
}

/// Column order and labels for the metrics a table may show.
const METRICS: &[(&str, &str)] = &[
    ("rps", "rps"),
    ("cpu_us_per_req", "CPU µs/req"),
    ("proxy_core_util", "proxy core"),
    ("client_core_util", "core 0"),
    ("machine_cores_busy", "cores busy (of all)"),
    ("p50_us", "p50 µs"),
    ("p90_us", "p90 µs"),
    ("p99_us", "p99 µs"),
    ("p999_us", "p99.9 µs"),
    ("added_p50_us", "added p50 µs"),
    ("added_p90_us", "added p90 µs"),
    ("added_p99_us", "added p99 µs"),
    ("added_p999_us", "added p99.9 µs"),
    ("gbit_s", "Gbit/s"),
    ("cpu_s_per_gb", "CPU-s/GB"),
    ("idle_rss_mib", "idle RSS MiB"),
    ("rss_before_mib", "RSS before MiB"),
    ("rss_idle_connections_mib", "RSS with the connections MiB"),
    ("bytes_per_idle_connection", "B/idle connection"),
    ("rss_base_mib", "RSS, base ADS config MiB"),
    ("rss_after_load_mib", "RSS after load MiB"),
    ("rss_clusters_mib", "RSS, clusters x 1 endpoint MiB"),
    ("rss_endpoints_mib", "RSS, clusters x 10 endpoints MiB"),
    (
        "mib_1k_clusters_10k_endpoints",
        "MiB per 1k clusters with 10k endpoints",
    ),
    ("mib_per_1k_clusters", "MiB per 1k clusters"),
    ("mib_per_10k_endpoints", "MiB per 10k endpoints"),
    ("kib_per_cluster", "KiB/cluster"),
    ("kib_per_cluster_1ep", "KiB/cluster (with its endpoint)"),
    ("bytes_per_endpoint", "B/endpoint"),
    ("pushes", "pushes applied"),
    ("apply_p50_ms", "push-to-apply p50 ms"),
    ("apply_p99_ms", "push-to-apply p99 ms"),
    ("apply_max_ms", "push-to-apply max ms"),
    ("control_plane_ms", "control plane ms/push"),
    ("route_scale_ratio", "CPU/req ratio to 1 route"),
    ("rps_ratio_2_to_1", "rps, 2 workers / 1"),
    ("cpu_ratio_2_to_1", "CPU/req, 2 workers / 1"),
    ("client_bound", "client- or machine-bound (1 = yes)"),
    ("ir_per_req", "instructions/req"),
    ("ir_requests_total", "Ir, request dump"),
    ("ir_idle_total", "Ir, idle dump"),
    ("requests", "requests"),
    ("script_s", "script s"),
    ("errors", "errors"),
];

/// Headline metrics for the ratio table (lower is better for all but rps).
const HEADLINES: &[&str] = &[
    "cpu_us_per_req",
    "rps",
    "added_p50_us",
    "added_p99_us",
    "added_p999_us",
    "cpu_s_per_gb",
    "idle_rss_mib",
    "bytes_per_idle_connection",
    "rss_clusters_mib",
    "rps_ratio_2_to_1",
    "apply_p50_ms",
    "apply_p99_ms",
    "mib_1k_clusters_10k_endpoints",
    "kib_per_cluster",
    "bytes_per_endpoint",
    "route_scale_ratio",
    "ir_per_req",
];

const PROXY_ORDER: &[&str] = &["direct", "tern", "envoy", "nginx", "haproxy", "pingora"];

/// Whether `case` is an outside tool's cross-check of the in-tree generator (kept out of the
/// ratio table and the plots; the cross-check tables show it).
pub fn is_cross_check(case: &str) -> bool {
    ["wrk", "fortio", "h2load"]
        .iter()
        .any(|tool| case.contains(tool))
}

/// One cross-check table: the tool's case (named by `tool`) beside the in-tree case it checks.
struct CrossCheck {
    tool: &'static str,
    scenario: &'static str,
    /// The in-tree case: the first of `scenario` whose name starts with this.
    own_prefix: &'static str,
    /// (metric, label) pairs shown in-tree vs tool; the first also gets a ratio.
    metrics: &'static [(&'static str, &'static str)],
}

const CROSS_CHECKS: &[CrossCheck] = &[
    CrossCheck {
        tool: "wrk",
        scenario: "S1",
        own_prefix: "saturation",
        metrics: &[("rps", "rps"), ("cpu_us_per_req", "CPU µs/req")],
    },
    CrossCheck {
        tool: "fortio",
        scenario: "S1",
        own_prefix: "1000 rps, HTTP/1.1, 16 connections",
        metrics: &[
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("rps", "rps"),
            ("cpu_us_per_req", "CPU µs/req"),
        ],
    },
    CrossCheck {
        tool: "h2load",
        scenario: "S2",
        own_prefix: "saturation",
        metrics: &[("rps", "rps"), ("cpu_us_per_req", "CPU µs/req")],
    },
];

impl Results {
    /// Adds added-latency metrics (proxied minus direct in the same repetition and case), then
    /// builds the summary rows.
    pub fn finish(&mut self) {
        let direct: BTreeMap<(String, u32), BTreeMap<String, f64>> = self
            .measurements
            .iter()
            .filter(|m| m.proxy == "direct")
            .map(|m| ((m.case.clone(), m.repetition), m.metrics.clone()))
            .collect();
        for m in self.measurements.iter_mut().filter(|m| m.proxy != "direct") {
            let Some(base) = direct.get(&(m.case.clone(), m.repetition)) else {
                continue;
            };
            for p in ["p50_us", "p90_us", "p99_us", "p999_us"] {
                if let (Some(v), Some(b)) = (m.metrics.get(p), base.get(p)) {
                    m.metrics.insert(format!("added_{p}"), v - b);
                }
            }
        }
        let mut groups: BTreeMap<(String, String, usize), BTreeMap<String, Vec<f64>>> =
            BTreeMap::new();
        for m in &self.measurements {
            let key = (m.scenario.clone(), m.case.clone(), proxy_rank(&m.proxy));
            let entry = groups.entry(key).or_default();
            for (name, value) in &m.metrics {
                entry.entry(name.clone()).or_default().push(*value);
            }
        }
        self.summary = groups
            .into_iter()
            .map(|((scenario, case, rank), metrics)| SummaryRow {
                scenario,
                case,
                proxy: PROXY_ORDER.get(rank).unwrap_or(&"?").to_string(),
                metrics: metrics
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, Spread::of(v)?)))
                    .collect(),
            })
            .collect();
    }

    pub fn median(&self, case: &str, proxy: &str, metric: &str) -> Option<f64> {
        self.summary
            .iter()
            .find(|r| r.case == case && r.proxy == proxy)
            .and_then(|r| r.metrics.get(metric))
            .map(|s| s.median)
    }

    pub fn cases(&self) -> Vec<(String, String)> {
        let mut cases: Vec<(String, String)> = Vec::new();
        for r in &self.summary {
            let key = (r.scenario.clone(), r.case.clone());
            if !cases.contains(&key) {
                cases.push(key);
            }
        }
        cases
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Run\n");
        let _ = writeln!(out, "- Date (UTC): {}", self.date);
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let m = &self.machine;
        let _ = writeln!(
            out,
            "- Machine: {} × {}, {} GiB, kernel {}; load average at start: {}",
            m["cores"],
            m["cpu"].as_str().unwrap_or("?"),
            m["memory_gib"],
            m["kernel"].as_str().unwrap_or("?"),
            m["loadavg_at_start"].as_str().unwrap_or("?")
        );
        let _ = writeln!(out, "- Settings: `{}`", self.settings);
        for (name, version) in &self.versions {
            let _ = writeln!(out, "- {name}: {version}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        for s in &self.skipped {
            // One list item per skip: the proxy's log tail folded onto one line, the end kept.
            let reason: Vec<&str> = s
                .reason
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let reason = reason.join(" / ");
            let start = reason.len().saturating_sub(400);
            let start = (start..reason.len())
                .find(|i| reason.is_char_boundary(*i))
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "- Skipped {} in {}: {}",
                s.proxy,
                s.scenario,
                &reason[start..]
            );
        }
        let _ = writeln!(out, "\n## Ratios (medians)\n");
        out.push_str(&self.ratio_table());
        for check in CROSS_CHECKS {
            out.push_str(&self.cross_check_table(check));
        }
        let _ = writeln!(out, "\n## Per case (median, min–max over repetitions)\n");
        for (scenario, case) in self.cases() {
            out.push_str(&self.case_table(&scenario, &case));
        }
        out
    }

    fn case_table(&self, scenario: &str, case: &str) -> String {
        let rows: Vec<&SummaryRow> = self.summary.iter().filter(|r| r.case == case).collect();
        let columns: Vec<&(&str, &str)> = METRICS
            .iter()
            .filter(|(k, _)| rows.iter().any(|r| r.metrics.contains_key(*k)))
            .collect();
        let mut out = format!("### {scenario}: {case}\n\n| path |");
        for (_, label) in &columns {
            let _ = write!(out, " {label} |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(columns.len()));
        out.push('\n');
        for r in rows {
            let _ = write!(out, "| {} |", r.proxy);
            for (k, _) in &columns {
                let cell = r.metrics.get(*k).map_or(String::from("–"), |s| {
                    if s.n > 1 {
                        format!("{} ({}–{})", num(s.median), num(s.min), num(s.max))
                    } else {
                        num(s.median)
                    }
                });
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
        out
    }

    fn ratio_table(&self) -> String {
        let mut out = String::from(
            "| case | metric | direct | tern | envoy | nginx | haproxy | pingora | tern/envoy | tern/nginx | tern/haproxy | tern/pingora | tern/direct |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (_, case) in self.cases() {
            if is_cross_check(&case) {
                continue;
            }
            for metric in HEADLINES {
                let values: Vec<Option<f64>> = PROXY_ORDER
                    .iter()
                    .map(|p| self.median(&case, p, metric))
                    .collect();
                if values.iter().skip(1).all(Option::is_none) {
                    continue;
                }
                let label = METRICS
                    .iter()
                    .find(|(k, _)| k == metric)
                    .map_or(*metric, |(_, l)| l);
                let _ = write!(out, "| {case} | {label} |");
                for v in &values {
                    let _ = write!(out, " {} |", v.map_or("–".into(), num));
                }
                let tern = values[1];
                for other in [values[2], values[3], values[4], values[5], values[0]] {
                    let ratio = match (tern, other) {
                        (Some(t), Some(o))
                            if o.abs() > f64::EPSILON && !metric.starts_with("added") =>
                        {
                            format!("{:.2}", t / o)
                        }
                        (Some(t), Some(o)) if metric.starts_with("added") && o > 0.0 => {
                            format!("{:.2}", t / o)
                        }
                        _ => "–".into(),
                    };
                    let _ = write!(out, " {ratio} |");
                }
                out.push('\n');
            }
        }
        out.push_str(
            "\nRatios are of medians; for added latency a ratio is shown only when the comparator's added latency is positive.\n",
        );
        out
    }

    fn cross_check_table(&self, check: &CrossCheck) -> String {
        let cases = self.cases();
        let Some((_, tool_case)) = cases
            .iter()
            .find(|(s, c)| s == check.scenario && c.contains(check.tool))
        else {
            return String::new();
        };
        let Some((_, own_case)) = cases.iter().find(|(s, c)| {
            s == check.scenario && c.starts_with(check.own_prefix) && !is_cross_check(c)
        }) else {
            return String::new();
        };
        let tool = check.tool;
        let mut out = format!(
            "\n### Generator cross-check (first repetition): in-tree `{own_case}` vs `{tool_case}`\n\n| path |"
        );
        for (i, (_, label)) in check.metrics.iter().enumerate() {
            let _ = write!(out, " {label} in-tree | {label} {tool} |");
            if i == 0 {
                let _ = write!(out, " in-tree/{tool} |");
            }
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(check.metrics.len() * 2 + 1));
        out.push('\n');
        for proxy in PROXY_ORDER {
            let first = |case: &str, metric: &str| {
                self.measurements
                    .iter()
                    .find(|m| m.case == case && m.proxy == *proxy && m.repetition == 0)
                    .and_then(|m| m.metrics.get(metric).copied())
            };
            if !self
                .measurements
                .iter()
                .any(|m| m.case == *tool_case && m.proxy == *proxy)
            {
                continue;
            }
            let cell = |v: Option<f64>| v.map_or("–".into(), num);
            let _ = write!(out, "| {proxy} |");
            for (i, (metric, _)) in check.metrics.iter().enumerate() {
                let (own, theirs) = (first(own_case, metric), first(tool_case, metric));
                let _ = write!(out, " {} | {} |", cell(own), cell(theirs));
                if i == 0 {
                    let ratio = match (own, theirs) {
                        (Some(o), Some(t)) if t > 0.0 => format!("{:.2}", o / t),
                        _ => "–".into(),
                    };
                    let _ = write!(out, " {ratio} |");
                }
            }
            out.push('\n');
        }
        if tool == "fortio" {
            out.push_str(
                "\nfortio times each request from its actual send and paces each connection itself; the in-tree open loop corrects for coordinated omission, so its tail may be higher when a response comes back late.\n",
            );
        }
        out
    }
}

fn proxy_rank(proxy: &str) -> usize {
    PROXY_ORDER
        .iter()
        .position(|p| *p == proxy)
        .unwrap_or(PROXY_ORDER.len())
}

/// A number with about three significant digits.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == v.trunc() && a >= 10.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(scenario: &str, case: &str, proxy: &str, metrics: &[(&str, f64)]) -> Measurement {
        Measurement {
            scenario: scenario.into(),
            case: case.into(),
            proxy: proxy.into(),
            repetition: 0,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn cross_checks_sit_beside_their_in_tree_case_and_stay_out_of_the_ratios() {
        let own = "1000 rps, HTTP/1.1, 16 connections, 1 KB";
        let fortio = "1000 rps, fortio load -c 16, 1 KB";
        let mut results = Results {
            measurements: vec![
                point("S1", own, "direct", &[("p50_us", 30.0), ("p99_us", 100.0)]),
                point("S1", own, "tern", &[("p50_us", 90.0), ("p99_us", 300.0)]),
                point(
                    "S1",
                    fortio,
                    "tern",
                    &[("p50_us", 120.0), ("p99_us", 250.0)],
                ),
                point(
                    "S1",
                    own,
                    "pingora",
                    &[("p50_us", 200.0), ("p99_us", 600.0)],
                ),
            ],
            ..Results::default()
        };
        results.finish();
        let markdown = results.markdown();
        let table = markdown
            .split("### Generator cross-check")
            .nth(1)
            .and_then(|rest| rest.split("## Per case").next())
            .expect("a fortio table");
        assert!(table.contains(&format!("in-tree `{own}` vs `{fortio}`")));
        // p50 in-tree, p50 fortio, their ratio, then p99 in-tree and fortio.
        assert!(table.contains("| tern | 90 | 120 | 0.75 | 300 | 250 |"));
        // No fortio run for pingora or direct: no row for them.
        assert!(!table.contains("| pingora |") && !table.contains("| direct |"));
        let ratios = markdown.split("## Ratios").nth(1).expect("ratios");
        let ratios = ratios.split("### Generator").next().unwrap_or_default();
        assert!(!ratios.contains("fortio"));
        // pingora has its own column and Tern's ratio to it: added p99 200 vs 500.
        assert!(ratios.contains("| 1000 rps, HTTP/1.1, 16 connections, 1 KB | added p99 µs | – | 200 | – | – | – | 500 | – | – | – | 0.40 | – |"));
    }
}
