#!/usr/bin/env bash
# Benchmark smoke: builds tern and tern-bench (profile bench-fast), runs `tern-bench --quick`
# (about three minutes) and checks that it wrote valid JSON with measurements for tern, envoy,
# nginx, haproxy and direct, S3 (gRPC), S5 (pair) and S6 (churn) rows for every path, S7 (config
# churn) rows and the S8 route-scale ratio for tern and envoy, S9's RSS per idle connection for
# every proxy and RSS with clusters for tern and envoy, and the fortio (S1) and h2load (S2)
# cross-checks (or a skip saying why). pingora and the worker-scaling scenario are not part of
# --quick. Not part of
# scripts/test.sh: it is slow and needs the comparators (bash scripts/install-test-deps.sh
# installs them). Under CI=true a missing comparator fails this check, since every path must
# have rows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile="${BENCH_PROFILE:-bench-fast}"
cargo build --profile "$profile" -p tern -p tern-bench
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"target/$profile/tern-bench" --quick --json "$out/bench.json" --report "$out/bench.md" >/dev/null
python3 - "$out/bench.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
paths = {m["proxy"] for m in data["measurements"]}
missing = {"tern", "envoy", "nginx", "haproxy", "direct"} - paths
for skip in data["skipped"]:
    print(f"skipped {skip['proxy']} in {skip['scenario']}: {skip['reason'].splitlines()[0]}")
if missing:
    sys.exit(f"bench-smoke: no measurements for {sorted(missing)}")
churn = {m["proxy"] for m in data["measurements"] if m["scenario"] == "S7"}
if "S7" in data["settings"]["scenarios"] and not {"tern", "envoy"} <= churn:
    sys.exit(f"bench-smoke: S7 rows only for {sorted(churn)}")
for scenario in ("S3", "S5", "S6"):
    rows = {m["proxy"] for m in data["measurements"] if m["scenario"] == scenario}
    if scenario in data["settings"]["scenarios"] and rows != paths:
        sys.exit(f"bench-smoke: {scenario} rows only for {sorted(rows)}")
def rows_with(scenario, metric):
    return {m["proxy"] for m in data["measurements"]
            if m["scenario"] == scenario and metric in m["metrics"]}
if "S9" in data["settings"]["scenarios"]:
    idle = rows_with("S9", "bytes_per_idle_connection")
    if idle != paths - {"direct"}:
        sys.exit(f"bench-smoke: S9 RSS per idle connection only for {sorted(idle)}")
    clusters = rows_with("S9", "rss_clusters_mib")
    if not {"tern", "envoy"} <= clusters:
        sys.exit(f"bench-smoke: S9 RSS with clusters only for {sorted(clusters)}")
def checked(scenario, tool, want):
    rows = {m["proxy"] for m in data["measurements"]
            if m["scenario"] == scenario and tool in m["case"]}
    skipped = {s["proxy"] for s in data["skipped"] if tool in s["scenario"] or tool in s["reason"]}
    if scenario in data["settings"]["scenarios"] and not want <= rows | skipped:
        sys.exit(f"bench-smoke: {tool} cross-check neither ran nor was skipped for {sorted(want - rows)}")
checked("S1", "fortio", {"tern", "direct"})
checked("S2", "h2load", paths)
scale = {m["proxy"] for m in data["measurements"] if "route_scale_ratio" in m["metrics"]}
if "S8" in data["settings"]["scenarios"] and not {"tern", "envoy"} <= scale:
    sys.exit(f"bench-smoke: S8 route-scale ratio only for {sorted(scale)}")
bad = [m for m in data["measurements"] if m["metrics"].get("errors", 0) > 0]
if bad:
    sys.exit(f"bench-smoke: errors in {[(m['proxy'], m['case']) for m in bad]}")
print(f"bench-smoke: ok, {len(data['measurements'])} measurements for {sorted(paths)}")
PY
