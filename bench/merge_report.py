"""Ratios against the targets, and the Markdown of ``bench.merge``."""

from __future__ import annotations

import statistics
from typing import Any

TARGET_RATE = 0.8  # API merge points/s over the raw loop's, at least
TARGET_RSS_MB = 150.0  # worker RSS growth during the merge, under
MB = 1024 * 1024


def _runs(report: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [c for c in report["contenders"] if c["name"].startswith(prefix)]


def _cpu_ms_per_point(c: dict[str, Any]) -> float:
    return float(1000 * c["cpu"]["python_cpu_s"] / c["count"]) if c["count"] else 0.0


def _neighbours(report: dict[str, Any], api: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw runs right before and right after an API merge."""
    order = report["contenders"]
    i = order.index(api)
    return [c for c in (order[i - 1 : i] + order[i + 1 : i + 2]) if c["name"].startswith("raw")]


def compare(report: dict[str, Any]) -> dict[str, Any]:
    apis, raws = _runs(report, "api merge"), _runs(report, "raw loop")
    memory = _runs(report, "in-memory")[0]
    raw_rate = statistics.mean(r["points_per_s"] for r in raws)
    raw_growth = statistics.mean(r["rss_growth_mb"] for r in raws)
    raw_cpu = statistics.mean(_cpu_ms_per_point(r) for r in raws)
    api_rate = statistics.mean(a["points_per_s"] for a in apis)
    api_growth = max(a["rss_growth_mb"] for a in apis)
    rate = api_rate / raw_rate
    overhead = api_growth - raw_growth
    points = 2 * report["points_per_source"]
    return {
        "raw_points_per_s": raw_rate,
        "raw_rss_growth_mb": raw_growth,
        "raw_spread": max(r["points_per_s"] for r in raws) / min(r["points_per_s"] for r in raws),
        "api_points_per_s": api_rate,
        "api_over_raw": rate,
        "api_over_neighbours": [
            a["points_per_s"] / statistics.mean(n["points_per_s"] for n in _neighbours(report, a))
            for a in apis
            if _neighbours(report, a)
        ],
        "rate_target": TARGET_RATE,
        "rate_met": rate >= TARGET_RATE,
        "api_cpu_over_raw_cpu": statistics.mean(_cpu_ms_per_point(a) for a in apis) / raw_cpu,
        "api_rss_growth_mb": api_growth,
        "api_rss_met": api_growth < TARGET_RSS_MB,
        "api_rss_overhead_mb": overhead,
        "api_rss_overhead_met": overhead < TARGET_RSS_MB,
        "rss_target_mb": TARGET_RSS_MB,
        "memory_over_raw": memory["points_per_s"] / raw_rate,
        "memory_rss_growth_mb": memory["rss_growth_mb"],
        "memory_rss_overhead_mb": memory["rss_growth_mb"] - raw_growth,
        "vectors_mb": points * report["dim"] * 4 / MB,
        "all_counts_ok": all(c["ok"] for c in report["contenders"]),
    }


def _met(flag: bool) -> str:
    return "met" if flag else "**not met**"


def _row(c: dict[str, Any], raw_rate: float) -> str:
    cpu = c["cpu"]
    tree = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu["tree_cores"].items()) if v >= 0.01)
    ms_per_point = _cpu_ms_per_point(c)
    return (
        f"| {c['name']} | {c['count']:,} {'ok' if c['ok'] else '**WRONG**'} "
        f"| {c['seconds']:.1f} | {c['points_per_s']:.0f} | {c['points_per_s'] / raw_rate:.2f}x "
        f"| {ms_per_point:.2f} | {c['rss_base_mb']:.0f} | {c['rss_growth_mb']:.0f} "
        f"| {tree} | {cpu['iowait_cores']:.2f} | {cpu['other_cores']:.2f} |"
    )


def _contender_table(report: dict[str, Any]) -> list[str]:
    raw_rate = report["ratios"]["raw_points_per_s"]
    return [
        "| contender (in run order) | merged points | s | points/s | vs raw loop "
        "| Python CPU, ms/point | RSS before, MB | peak RSS growth, MB | CPU (cores) "
        "| iowait (cores) | other work (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        *(_row(c, raw_rate) for c in report["contenders"]),
    ]


def _ratio_table(report: dict[str, Any]) -> list[str]:
    r = report["ratios"]
    each = ", ".join(f"{x:.2f}x" for x in r["api_over_neighbours"])
    return [
        "| check | measured | target | |",
        "|---|---:|---:|---|",
        f"| API merge points/s / raw loop points/s (means over runs; each API merge over "
        f"the raw runs around it: {each}) | {r['api_over_raw']:.2f}x "
        f"| >= {r['rate_target']}x | {_met(r['rate_met'])} |",
        f"| worker peak RSS growth, absolute (largest API merge) "
        f"| {r['api_rss_growth_mb']:.0f} MB | < {r['rss_target_mb']:.0f} MB "
        f"| {_met(r['api_rss_met'])} |",
        f"| worker peak RSS growth minus the raw loop's (the merge's own overhead) "
        f"| {r['api_rss_overhead_mb']:.0f} MB | < {r['rss_target_mb']:.0f} MB "
        f"| {_met(r['api_rss_overhead_met'])} |",
        f"| API merge Python CPU per point / raw loop's | {r['api_cpu_over_raw_cpu']:.2f}x | | |",
        f"| in-memory points/s / raw loop points/s | {r['memory_over_raw']:.2f}x | | |",
        f"| in-memory peak RSS growth, absolute / minus the raw loop's "
        f"| {r['memory_rss_growth_mb']:.0f} MB / {r['memory_rss_overhead_mb']:.0f} MB | | |",
    ]


def _history_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for c in _runs(report, "api merge"):
        h = c.get("history") or {}
        if "activities" not in h:
            continue
        copy = h["activities"].get("copy_points", {"calls": 0, "run_s": 0.0, "dispatch_s": 0.0})
        others = sum(v["run_s"] for k, v in h["activities"].items() if k != "copy_points")
        dispatch = sum(v["dispatch_s"] for v in h["activities"].values())
        lines.append(
            f"- {c['name']}: workflow {h['workflow_s']:.1f} s = `copy_points` running "
            f"{copy['run_s']:.1f} s in {copy['calls']} calls + other activities {others:.2f} s "
            f"+ activity dispatch (scheduled to started) {dispatch:.2f} s + outside any "
            f"activity {h['outside_activities_s']:.2f} s (activities of one step may overlap)"
        )
    return ["Where the API merges' time went (Temporal history):", "", *lines] if lines else []


def _code(code: dict[str, Any]) -> str:
    dirty = code["uncommitted_in_session_service"]
    return f"`{code['git_head'][:10]}`" + (
        f" plus {len(dirty)} uncommitted files in session_service" if dirty else ""
    )


def _small_line(report: dict[str, Any]) -> str:
    s = report["small_merge"]
    late = sum(r["status_code"] != 200 for r in s["runs"])
    return (
        f"Small merge, 2 x {s['points_per_source']} points, `POST /sessions/merge` without "
        f"`Prefer` (200 with the new session), {len(s['runs'])} runs after one warm-up: "
        f"median **{s['median_ms']:.0f} ms**, p90 **{s['p90_ms']:.0f} ms** "
        f"(min {s['min_ms']:.0f}, max {s['max_ms']:.0f}; warm-up {s['warmup']['ms']:.0f} ms; "
        f"median server-side created_at -> finished_at {s['median_server_ms']:.0f} ms); "
        f"{late} of {len(s['runs'])} answered 202 (over the 10 s sync wait); "
        f"merged counts {'all ok' if s['ok'] else '**WRONG**'}."
    )


def markdown(report: dict[str, Any]) -> str:
    m, r = report["machine"], report["ratios"]
    seed_s = sum(s["seed_s"] for s in report["sources"])
    n = 2 * report["points_per_source"]
    return "\n".join(
        [
            f"`{report['command']}`: 2 x {report['points_per_source']:,} points of "
            f"{report['dim']} dimensions, batch {report['batch_size']}, "
            f"{report['batches_per_call']} batches per activity call; "
            f"{m['nproc']} cores ({m['cpu_model']}), Python {m['python']}; code: "
            f"{_code(report['code'])}.",
            "",
            *_contender_table(report),
            "",
            *_ratio_table(report),
            "",
            f"Raw loop runs, fastest / slowest: {r['raw_spread']:.2f}x. "
            f"The new collection's vectors alone are {n:,} x {report['dim']} x 4 B = "
            f"{r['vectors_mb']:.0f} MB.",
            "",
            *_history_lines(report),
            "",
            _small_line(report),
            "",
            f"Seeding {n:,} points through `PUT /sessions/{{id}}/points`: {seed_s:.0f} s "
            f"({n / seed_s:.0f} points/s). dev start: fresh {report['dev_start_fresh_s']:.1f} s, "
            f"restart on {n:,} points "
            f"{', '.join(f'{x:.1f}' for x in report['dev_restart_s'])} s; exit codes "
            f"{report['dev_exit_codes']}. Whole run {report['total_s'] / 60:.1f} min.",
        ]
    )
