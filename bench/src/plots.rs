//! The report's plots, as SVG written by hand: a horizontal grouped bar chart is all the report
//! needs (CPU per request per case, latency percentiles per case, RSS per path, RSS vs clusters),
//! and writing it
//! here costs nothing to build, unlike a plotting crate.
//!
//! Bars are medians over repetitions, one colour per path, in the report's path order; groups
//! are rows so that long case names stay readable. Missing values leave a gap.

use crate::report::{Results, is_cross_check};
use std::fmt::Write as _;
use std::path::Path;

const PATHS: &[&str] = &["direct", "tern", "envoy", "nginx", "haproxy", "pingora"];
const COLOURS: &[&str] = &[
    "#888888", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
];
const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 420.0;
const BAR: f64 = 12.0;
const GROUP_GAP: f64 = 12.0;
const TOP: f64 = 56.0;

/// One chart: `groups` rows, each with one bar per path (`values[group][path]`).
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub groups: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
}

impl Chart {
    /// Keeps only the paths with at least one value, and the groups with at least one bar.
    fn paths(&self) -> Vec<usize> {
        (0..PATHS.len())
            .filter(|p| {
                self.values
                    .iter()
                    .any(|row| row.get(*p).copied().flatten().is_some())
            })
            .collect()
    }

    pub fn svg(&self) -> String {
        let paths = self.paths();
        let per_group = paths.len().max(1) as f64 * BAR + GROUP_GAP;
        let height = TOP + per_group * self.groups.len() as f64 + 40.0;
        let max = self
            .values
            .iter()
            .flatten()
            .flatten()
            .fold(0.0f64, |a, b| a.max(*b));
        let scale_max = nice_ceiling(max);
        let plot_width = WIDTH - LABEL_WIDTH - 80.0;
        let x = |v: f64| LABEL_WIDTH + v / scale_max * plot_width;
        let mut out = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="18" font-size="14" font-weight="bold">{}</text>
"#,
            escape(&self.title)
        );
        for (i, &p) in paths.iter().enumerate() {
            let lx = LABEL_WIDTH + i as f64 * 90.0;
            let _ = writeln!(
                out,
                r#"<rect x="{lx}" y="28" width="10" height="10" fill="{}"/><text x="{}" y="37">{}</text>"#,
                COLOURS[p],
                lx + 14.0,
                PATHS[p]
            );
        }
        // Vertical grid with five ticks, labelled in the chart's unit.
        let bottom = height - 30.0;
        for t in 0..=5 {
            let v = scale_max * f64::from(t) / 5.0;
            let gx = x(v);
            let _ = writeln!(
                out,
                r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{bottom}" stroke="#dddddd"/><text x="{gx:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                number(v)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            WIDTH - 10.0,
            bottom + 28.0,
            escape(&self.unit)
        );
        for (g, label) in self.groups.iter().enumerate() {
            let gy = TOP + g as f64 * per_group + GROUP_GAP / 2.0;
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                LABEL_WIDTH - 6.0,
                gy + per_group / 2.0 - 2.0,
                escape(&shorten(label, 70))
            );
            for (i, &p) in paths.iter().enumerate() {
                let Some(v) = self.values[g].get(p).copied().flatten() else {
                    continue;
                };
                let by = gy + i as f64 * BAR;
                let w = (x(v) - LABEL_WIDTH).max(0.5);
                let _ = writeln!(
                    out,
                    r#"<rect x="{LABEL_WIDTH}" y="{by:.1}" width="{w:.1}" height="{}" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                    BAR - 1.0,
                    COLOURS[p],
                    PATHS[p],
                    number(v),
                    LABEL_WIDTH + w + 3.0,
                    by + BAR - 3.0,
                    number(v)
                );
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

/// The charts of a run: CPU per request per case, latency percentiles per open-loop case, RSS,
/// RSS vs clusters.
pub fn charts(results: &Results) -> Vec<(String, Chart)> {
    let cases: Vec<(String, String)> = results
        .cases()
        .into_iter()
        .filter(|(_, c)| !is_cross_check(c))
        .collect();
    let row = |case: &str, metric: &str| -> Vec<Option<f64>> {
        PATHS
            .iter()
            .map(|p| results.median(case, p, metric))
            .collect()
    };
    let has = |case: &str, metric: &str| row(case, metric).iter().any(Option::is_some);
    let mut charts = Vec::new();

    let cpu: Vec<&(String, String)> = cases
        .iter()
        .filter(|(_, c)| has(c, "cpu_us_per_req"))
        .collect();
    if !cpu.is_empty() {
        charts.push((
            "cpu".to_string(),
            Chart {
                title: "Proxy CPU per request (median)".into(),
                unit: "µs of CPU per request (lower is better)".into(),
                groups: cpu.iter().map(|(s, c)| format!("{s}: {c}")).collect(),
                values: cpu.iter().map(|(_, c)| row(c, "cpu_us_per_req")).collect(),
            },
        ));
    }

    for (n, (scenario, case)) in cases.iter().filter(|(_, c)| has(c, "p99_us")).enumerate() {
        let percentiles = [
            ("p50", "p50_us"),
            ("p90", "p90_us"),
            ("p99", "p99_us"),
            ("p99.9", "p999_us"),
        ];
        charts.push((
            format!("latency-{}-{n}", scenario.to_lowercase()),
            Chart {
                title: format!("Latency percentiles, {scenario}: {case} (median)"),
                unit: "µs, client-side (direct = no proxy)".into(),
                groups: percentiles.iter().map(|(l, _)| l.to_string()).collect(),
                values: percentiles.iter().map(|(_, m)| row(case, m)).collect(),
            },
        ));
    }

    let mut rss_groups = Vec::new();
    let mut rss_values = Vec::new();
    for (scenario, case) in &cases {
        for (metric, what) in [
            ("idle_rss_mib", "idle"),
            ("rss_after_load_mib", "after load"),
        ] {
            if has(case, metric) && scenario != "S7" {
                rss_groups.push(format!("{what}: {scenario} {case}"));
                rss_values.push(row(case, metric));
            }
        }
    }
    if !rss_groups.is_empty() {
        charts.push((
            "rss".to_string(),
            Chart {
                title: "Proxy resident memory (median)".into(),
                unit: "MiB RSS (process group)".into(),
                groups: rss_groups,
                values: rss_values,
            },
        ));
    }
    if let Some(chart) = rss_vs_clusters(results) {
        charts.push(("rss-clusters".to_string(), chart));
    }
    charts
}

/// RSS against the number of clusters pushed over ADS (S9's cluster rows): the base config, then
/// each count, one bar per path.
fn rss_vs_clusters(results: &Results) -> Option<Chart> {
    let mut counts: Vec<(usize, String)> = results
        .summary
        .iter()
        .filter(|r| r.scenario == "S9")
        .filter_map(|r| Some((r.metrics.get("clusters")?.median as usize, r.case.clone())))
        .collect();
    counts.sort();
    counts.dedup();
    let (_, smallest) = counts.first()?;
    let row = |case: &str, metric: &str| -> Vec<Option<f64>> {
        PATHS
            .iter()
            .map(|p| results.median(case, p, metric))
            .collect()
    };
    let mut groups = vec!["base ADS config".to_string()];
    let mut values = vec![row(smallest, "rss_base_mib")];
    for (n, case) in &counts {
        groups.push(format!("{n} clusters, 1 endpoint each"));
        values.push(row(case, "rss_clusters_mib"));
    }
    Some(Chart {
        title: "RSS vs clusters pushed over ADS (median)".into(),
        unit: "MiB RSS (process group)".into(),
        groups,
        values,
    })
}

/// Writes every chart beside `report` as `<stem>-<name>.svg`; returns Markdown image links to
/// them (relative, so the report and its plots move together).
pub fn write_beside(results: &Results, report: &Path) -> std::io::Result<String> {
    let dir = report.parent().unwrap_or(Path::new("."));
    let stem = report
        .file_stem()
        .map_or("report".into(), |s| s.to_string_lossy().into_owned());
    let mut links = String::new();
    for (name, chart) in charts(results) {
        let file = format!("{stem}-{name}.svg");
        std::fs::write(dir.join(&file), chart.svg())?;
        let _ = writeln!(
            links,
            "![{}]({file})\n",
            chart.title.replace(['[', ']'], "")
        );
    }
    Ok(links)
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

fn number(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max - 1).collect();
    format!("{kept}…")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round_and_cover_the_data() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(200.0), 200.0);
        assert_eq!(nice_ceiling(201.0), 500.0);
    }

    #[test]
    fn a_chart_draws_one_bar_per_value_and_escapes_its_labels() {
        let chart = Chart {
            title: "a <b> & c".into(),
            unit: "µs".into(),
            groups: vec!["g1".into(), "g2".into()],
            values: vec![
                vec![None, Some(10.0), Some(20.0), None, None, None],
                vec![None, Some(5.0), None, None, None, None],
            ],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(svg.matches("<title>").count(), 3);
        // Legend: only the paths with a value (tern, envoy).
        assert!(svg.contains(">tern</text>") && svg.contains(">envoy</text>"));
        assert!(!svg.contains(">nginx</text>"));
        // The largest value spans the plot width up to the round maximum (20 of 20).
        assert!(svg.contains("<title>envoy: 20</title>"));
    }

    #[test]
    fn a_run_gives_a_cpu_chart_a_latency_chart_per_fixed_rate_case_and_an_rss_chart() {
        use crate::report::Measurement;
        let point =
            |scenario: &str, case: &str, proxy: &str, metrics: &[(&str, f64)]| Measurement {
                scenario: scenario.into(),
                case: case.into(),
                proxy: proxy.into(),
                repetition: 0,
                metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            };
        let mut results = Results {
            measurements: vec![
                point("S1", "sat", "tern", &[("cpu_us_per_req", 25.0)]),
                point("S1", "sat", "nginx", &[("cpu_us_per_req", 14.0)]),
                point(
                    "S3",
                    "rate",
                    "direct",
                    &[("p50_us", 40.0), ("p99_us", 90.0)],
                ),
                point(
                    "S3",
                    "rate",
                    "tern",
                    &[
                        ("cpu_us_per_req", 150.0),
                        ("p50_us", 200.0),
                        ("p99_us", 900.0),
                    ],
                ),
                point("S9", "idle", "tern", &[("idle_rss_mib", 28.0)]),
                point("S1", "saturation, wrk", "tern", &[("cpu_us_per_req", 30.0)]),
                point("S1", "1000 rps, fortio", "tern", &[("p99_us", 300.0)]),
                point(
                    "S9",
                    "RSS with 10000 clusters",
                    "envoy",
                    &[
                        ("clusters", 10000.0),
                        ("rss_base_mib", 40.0),
                        ("rss_clusters_mib", 400.0),
                    ],
                ),
                point(
                    "S9",
                    "RSS with 1000 clusters",
                    "envoy",
                    &[
                        ("clusters", 1000.0),
                        ("rss_base_mib", 41.0),
                        ("rss_clusters_mib", 80.0),
                    ],
                ),
                point(
                    "S9",
                    "RSS with 1000 clusters",
                    "tern",
                    &[
                        ("clusters", 1000.0),
                        ("rss_base_mib", 9.0),
                        ("rss_clusters_mib", 12.0),
                    ],
                ),
            ],
            ..Results::default()
        };
        results.finish();
        let charts = charts(&results);
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cpu", "latency-s3-0", "rss", "rss-clusters"]);
        let cpu = &charts[0].1;
        // The wrk and fortio cross-checks are not cases of their own in the plots.
        assert_eq!(cpu.groups, ["S1: sat", "S3: rate"]);
        assert_eq!(
            cpu.values[0],
            [None, Some(25.0), None, Some(14.0), None, None]
        );
        let latency = &charts[1].1;
        assert_eq!(latency.groups, ["p50", "p90", "p99", "p99.9"]);
        assert_eq!(latency.values[2][..2], [Some(90.0), Some(900.0)]);
        assert_eq!(latency.values[1], [None; 6]);
        assert_eq!(
            charts[2].1.values,
            [[None, Some(28.0), None, None, None, None]]
        );
        // RSS vs clusters: the base (from the smallest count's run), then counts in order.
        let clusters = &charts[3].1;
        assert_eq!(
            clusters.groups,
            [
                "base ADS config",
                "1000 clusters, 1 endpoint each",
                "10000 clusters, 1 endpoint each"
            ]
        );
        assert_eq!(
            clusters.values,
            [
                [None, Some(9.0), Some(41.0), None, None, None],
                [None, Some(12.0), Some(80.0), None, None, None],
                [None, None, Some(400.0), None, None, None],
            ]
        );
    }
}
