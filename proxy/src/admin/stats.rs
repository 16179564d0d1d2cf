//! `/stats` (Envoy's text and JSON forms, `usedonly`, `filter`) and `/stats/prometheus`.
//!
//! Text readouts come first (text and JSON forms; Prometheus leaves them out, as Envoy does by
//! default), then counters and gauges, sorted by name, then histograms, as Envoy lists them. A
//! histogram prints Envoy's quantile summary (`P0(interval,cumulative) ... P100(...)`, or
//! `No recorded values`) in text, the same pairs in JSON, and cumulative buckets, sum and count
//! in Prometheus form.

use super::{Body, Query, json, text};
use crate::server::ServerHandle;
use crate::stats::histogram::{BUCKETS, PERCENTS, Statistics};
use crate::stats::{HistogramSample, Sample, Tags, TextSample};
use http::{Response, StatusCode};
use std::collections::BTreeMap;
use std::fmt::Write;

/// What one request selected.
struct Selection {
    texts: Vec<TextSample>,
    samples: Vec<Sample>,
    histograms: Vec<HistogramSample>,
}

/// The stats a request asks for, or a 400 response for a bad `filter` regex.
fn selected(handle: &ServerHandle, query: &Query) -> Result<Selection, Box<Response<Body>>> {
    refresh_server_gauges(handle);
    let filter = match query.get("filter").filter(|f| !f.is_empty()) {
        Some(pattern) => Some(regex::Regex::new(pattern).map_err(|e| {
            Box::new(text(
                StatusCode::BAD_REQUEST,
                format!("Invalid re2 regex: {e}\n"),
            ))
        })?),
        None => None,
    };
    let used_only = query.contains_key("usedonly");
    let wanted = |name: &str, used: bool| {
        (!used_only || used) && filter.as_ref().is_none_or(|re| re.is_match(name))
    };
    let store = handle.store();
    Ok(Selection {
        texts: store
            .text_readouts()
            .into_iter()
            .filter(|t| wanted(&t.name, t.used))
            .collect(),
        samples: store
            .samples()
            .into_iter()
            .filter(|s| wanted(&s.name, s.used))
            .collect(),
        histograms: store
            .histograms()
            .into_iter()
            .filter(|h| wanted(&h.name, h.used))
            .collect(),
    })
}

fn refresh_server_gauges(handle: &ServerHandle) {
    let uptime = handle.info.started.elapsed().as_secs() as i64;
    handle.store().gauge("server.uptime").set(uptime);
}

pub fn stats(handle: &ServerHandle, query: &Query) -> Response<Body> {
    let selection = match selected(handle, query) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    if query.get("format").map(String::as_str) == Some("json") {
        return json(StatusCode::OK, &json_body(&selection));
    }
    if query.get("format").map(String::as_str) == Some("prometheus") {
        return prometheus_response(&selection);
    }
    let mut body = String::new();
    for t in &selection.texts {
        let _ = writeln!(body, "{}: {:?}", t.name, t.value);
    }
    for s in &selection.samples {
        let _ = writeln!(body, "{}: {}", s.name, s.printed());
    }
    for h in &selection.histograms {
        let _ = writeln!(body, "{}: {}", h.name, quantile_summary(h));
    }
    text(StatusCode::OK, body)
}

pub fn prometheus(handle: &ServerHandle, query: &Query) -> Response<Body> {
    match selected(handle, query) {
        Ok(selection) => prometheus_response(&selection),
        Err(response) => *response,
    }
}

/// Envoy's `ParentHistogramImpl::quantileSummary`: `P<q>(<interval>,<cumulative>)` for each
/// supported quantile, numbers in their shortest form and `nan` for none.
fn quantile_summary(h: &HistogramSample) -> String {
    if !h.used {
        return "No recorded values".to_string();
    }
    let mut out = String::new();
    for (i, percent) in PERCENTS.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(
            out,
            "P{percent}({},{})",
            shortest(h.interval.quantiles[i]),
            shortest(h.cumulative.quantiles[i])
        );
    }
    out
}

/// A double as fmtlib's `{}` prints it: shortest round-trip digits, `nan` for NaN.
fn shortest(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else {
        v.to_string()
    }
}

/// `{"stats": [counters and gauges..., {"histograms": {...}}]}`, Envoy's JSON form; quantiles
/// without a value are `null`.
fn json_body(selection: &Selection) -> serde_json::Value {
    let texts = selection
        .texts
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "value": t.value}));
    let samples = selection
        .samples
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "value": s.printed()}));
    let mut stats: Vec<serde_json::Value> = texts.chain(samples).collect();
    if !selection.histograms.is_empty() {
        let computed: Vec<_> = selection
            .histograms
            .iter()
            .map(|h| {
                let values: Vec<_> = (0..PERCENTS.len())
                    .map(|i| {
                        serde_json::json!({
                            "cumulative": json_number(h.cumulative.quantiles[i]),
                            "interval": json_number(h.interval.quantiles[i]),
                        })
                    })
                    .collect();
                serde_json::json!({"name": h.name, "values": values})
            })
            .collect();
        let supported: Vec<_> = PERCENTS.iter().map(|p| json_number(*p)).collect();
        stats.push(serde_json::json!({"histograms": {
            "supported_quantiles": supported,
            "computed_quantiles": computed,
        }}));
    }
    serde_json::json!({ "stats": stats })
}

/// Whole numbers as integers (Envoy prints `0`, not `0.0`), NaN as `null`.
fn json_number(v: f64) -> serde_json::Value {
    if v.is_nan() {
        serde_json::Value::Null
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::json!(v as i64)
    } else {
        serde_json::json!(v)
    }
}

/// Prometheus text exposition: one `# TYPE` per metric family (counters, then gauges, then
/// histograms, as Envoy orders them), samples labelled with the extracted tags in extraction
/// order, names prefixed `envoy_` and sanitised as Envoy does. Families are ordered by their
/// tag-extracted stat name before sanitising (so `listener.worker_x` precedes
/// `listener_manager.y`, as in Envoy), and a family's samples by full stat name.
fn prometheus_response(selection: &Selection) -> Response<Body> {
    let mut families: BTreeMap<(u8, &str), Vec<&Sample>> = BTreeMap::new();
    for s in &selection.samples {
        let kind = if s.is_counter { 0 } else { 1 };
        families
            .entry((kind, &s.tags.extracted_name))
            .or_default()
            .push(s);
    }
    let mut body = String::new();
    for ((kind, extracted), members) in families {
        let name = metric_name(extracted);
        let _ = writeln!(
            body,
            "# TYPE {name} {}",
            if kind == 0 { "counter" } else { "gauge" }
        );
        for s in members {
            // Envoy keeps the braces when there are no labels.
            let _ = writeln!(body, "{name}{{{}}} {}", labels(&s.tags), s.printed());
        }
    }
    let mut histograms: BTreeMap<&str, Vec<&HistogramSample>> = BTreeMap::new();
    for h in &selection.histograms {
        histograms
            .entry(&h.tags.extracted_name)
            .or_default()
            .push(h);
    }
    for (extracted, members) in histograms {
        let name = metric_name(extracted);
        let _ = writeln!(body, "# TYPE {name} histogram");
        for h in members {
            write_histogram(&mut body, &name, &labels(&h.tags), &h.cumulative);
        }
    }
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=UTF-8"),
    );
    response
}

/// One histogram's `_bucket` lines (cumulative counts, then `+Inf`), `_sum` and `_count`; numbers
/// as Envoy's `{:.32g}`.
fn write_histogram(body: &mut String, name: &str, labels: &str, stats: &Statistics) {
    let prefix = if labels.is_empty() {
        String::new()
    } else {
        format!("{labels},")
    };
    for (bound, count) in BUCKETS.iter().zip(stats.buckets) {
        let _ = writeln!(
            body,
            "{name}_bucket{{{prefix}le=\"{}\"}} {count}",
            general_32(*bound)
        );
    }
    let _ = writeln!(body, "{name}_bucket{{{prefix}le=\"+Inf\"}} {}", stats.count);
    let _ = writeln!(body, "{name}_sum{{{labels}}} {}", general_32(stats.sum));
    let _ = writeln!(body, "{name}_count{{{labels}}} {}", stats.count);
}

/// printf's `%.32g`: 32 significant digits, fixed notation unless the exponent is below -4 or
/// at least 32, trailing zeros dropped.
fn general_32(v: f64) -> String {
    const PRECISION: i32 = 32;
    if v == 0.0 {
        return "0".to_string();
    }
    let scientific = format!("{:.*e}", (PRECISION - 1) as usize, v);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..PRECISION).contains(&exponent) {
        let decimals = (PRECISION - 1 - exponent) as usize;
        let fixed = format!("{v:.decimals$}");
        trim_fraction(&fixed).to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim_fraction(mantissa),
            exponent.unsigned_abs()
        )
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn labels(tags: &Tags) -> String {
    tags.tags
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape_label(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Envoy's `metricName`: `envoy_` and the sanitised tag-extracted name.
fn metric_name(extracted: &str) -> String {
    sanitize(&format!("envoy_{extracted}"))
}

/// Envoy's `sanitizeName`: every character outside `[a-zA-Z0-9_]` becomes `_`, and a leading
/// digit gets a `_` in front.
fn sanitize(name: &str) -> String {
    let out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{out}")
    } else {
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Store;

    /// A histogram that recorded each batch and flushed after each.
    fn sample(batches: &[&[u64]]) -> HistogramSample {
        let store = Store::new();
        let h = store.histogram("cluster.backend.upstream_rq_time");
        for batch in batches {
            for v in *batch {
                h.record(*v);
            }
            store.flush_histograms();
        }
        store.histograms().remove(0)
    }

    #[test]
    fn text_summary_is_envoys_interval_cumulative_pairs() {
        // Envoy 1.40 after one 1 ms request and a flush interval without requests.
        assert_eq!(
            quantile_summary(&sample(&[&[1], &[]])),
            "P0(nan,1.05) P25(nan,1.05) P50(nan,1.05) P75(nan,1.05) P90(nan,1.05) P95(nan,1.05) \
             P99(nan,1.05) P99.5(nan,1.05) P99.9(nan,1.05) P100(nan,1.05)"
        );
        // Envoy 1.40 with 1, 2 and 7 in earlier intervals and 2 in the last one.
        let h = sample(&[&[1, 2, 7], &[2]]);
        assert_eq!(
            quantile_summary(&h),
            "P0(2.05,1.05) P25(2.05,1.05) P50(2.05,2.033333333333333) P75(2.05,2.066666666666667) \
             P90(2.05,7.05) P95(2.05,7.05) P99(2.05,7.05) P99.5(2.05,7.05) P99.9(2.05,7.05) \
             P100(2.05,7.05)"
        );
        let mut unused = h;
        unused.used = false;
        assert_eq!(quantile_summary(&unused), "No recorded values");
    }

    #[test]
    fn flush_moves_the_interval_window() {
        let store = Store::new();
        let h = store.histogram("http.ingress.downstream_rq_time");
        h.record(3);
        store.flush_histograms();
        assert_eq!(store.histograms()[0].interval.count, 1);
        h.record(4);
        h.record(5);
        store.flush_histograms();
        let s = &store.histograms()[0];
        assert_eq!((s.interval.count, s.cumulative.count), (2, 3));
        store.flush_histograms();
        assert!(store.histograms()[0].interval.quantiles[0].is_nan());
    }

    #[test]
    fn prometheus_histogram_lines_match_envoy() {
        let mut body = String::new();
        let h = sample(&[&[1]]);
        write_histogram(
            &mut body,
            "envoy_cluster_upstream_rq_time",
            &labels(&h.tags),
            &h.cumulative,
        );
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 22);
        assert_eq!(
            lines[0],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"0.5\"} 0"
        );
        assert_eq!(
            lines[1],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"1\"} 1"
        );
        assert_eq!(
            lines[18],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"3600000\"} 1"
        );
        assert_eq!(
            lines[19],
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 1"
        );
        // Envoy 1.40 printed exactly this sum for one 1 ms request.
        assert_eq!(
            lines[20],
            "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 1.0476190476190476719153821250075"
        );
        assert_eq!(
            lines[21],
            "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 1"
        );
        // Without tags Envoy keeps the braces on `_sum` and `_count`.
        let mut bare = String::new();
        write_histogram(&mut bare, "envoy_x", "", &Statistics::of(&[]));
        assert!(bare.starts_with("envoy_x_bucket{le=\"0.5\"} 0\n"), "{bare}");
        assert!(
            bare.ends_with("envoy_x_sum{} 0\nenvoy_x_count{} 0\n"),
            "{bare}"
        );
    }

    #[test]
    fn general_32_is_printfs() {
        assert_eq!(general_32(0.5), "0.5");
        assert_eq!(general_32(3_600_000.0), "3600000");
        assert_eq!(
            general_32(3.0491803278688525),
            "3.0491803278688522915729208762059"
        );
        assert_eq!(
            general_32(14.243605901104605),
            "14.243605901104604782858586986549"
        );
        // Python's '%.32g' gives the same for these.
        assert_eq!(general_32(1e40), "1.0000000000000000303786028427004e+40");
        assert_eq!(
            general_32(2f64.powi(110)),
            "1.298074214633706907132624082305e+33"
        );
        assert_eq!(general_32(0.00001), "1.0000000000000000818030539140313e-05");
    }

    #[test]
    fn json_has_envoys_histograms_object() {
        let selection = Selection {
            texts: Vec::new(),
            samples: Vec::new(),
            histograms: vec![sample(&[&[0], &[]])],
        };
        let body = json_body(&selection);
        let histograms = &body["stats"][0]["histograms"];
        assert_eq!(
            histograms["supported_quantiles"],
            serde_json::json!([0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100])
        );
        assert_eq!(
            histograms["computed_quantiles"][0]["values"][0],
            serde_json::json!({"cumulative": 0, "interval": null})
        );
        assert_eq!(
            json_body(&Selection {
                texts: Vec::new(),
                samples: Vec::new(),
                histograms: Vec::new()
            }),
            serde_json::json!({"stats": []})
        );
    }
}
