"""Ratios, targets and the Markdown table of ``bench.export_import``."""

from __future__ import annotations

from typing import Any

RATIO_TARGET = 0.8
GROWTH_TARGET_MB = 150.0


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def _activity(service_op: dict[str, Any], name: str) -> dict[str, Any]:
    for act in service_op.get("activities", []):
        if act["activity"] == name:
            return dict(act)
    return {}


def correctness(results: dict[str, Any]) -> dict[str, bool]:
    n = results["points"]
    svc, art, raw = results["service"], results["artifact"], results["raw"]
    checks = {
        "seeded_collection_holds_all_points": svc["seeded_points_seen"] == n,
        "export_result_counts_all_points": svc["export"]["result"]["points"] == n,
        "artifact_point_lines": art["points_lines"] == n,
        "artifact_trailer_count_matches": bool(art["trailer_count_matches"]),
        "artifact_sha256_matches": bool(art["sha256_matches"]),
        "artifact_size_matches_result": art["file_bytes"] == svc["export"]["result"]["size_bytes"],
        "imported_session_holds_all_points": svc["import"]["imported_points"] == n,
    }
    for name, run in raw.items():
        checks[f"raw_{name}_points"] = run["points"] == n and run.get("count_after", n) == n
    return checks


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    svc, raw = results["service"], results["raw"]
    exp, imp = svc["export"], svc["import"]
    ratios = {
        "export_vs_raw_scroll": _ratio(exp["points_per_s"], raw["scroll"]["points_per_s"]),
        "import_vs_raw_upsert": _ratio(imp["points_per_s"], raw["upsert"]["points_per_s"]),
    }
    if "upsert_artifact" in raw:
        ratios["import_vs_raw_upsert_from_artifact"] = _ratio(
            imp["points_per_s"], raw["upsert_artifact"]["points_per_s"]
        )
    if "upsert_artifact_prefetch" in raw:
        ratios["import_vs_raw_upsert_from_artifact_prefetch"] = _ratio(
            imp["points_per_s"], raw["upsert_artifact_prefetch"]["points_per_s"]
        )
    for name, run in raw.items():
        if name.startswith("scroll_write"):
            ratios[f"export_vs_raw_{name}"] = _ratio(exp["points_per_s"], run["points_per_s"])
    import_own = round(imp["rss_growth_mb"] - raw["upsert"]["rss_growth_mb"], 1)
    checks = correctness(results)
    return {
        "ratios": ratios,
        "import_own_growth_mb": import_own,
        "targets": {
            "export_at_least_0.8x_raw_scroll": ratios["export_vs_raw_scroll"] >= RATIO_TARGET,
            "import_at_least_0.8x_raw_upsert": ratios["import_vs_raw_upsert"] >= RATIO_TARGET,
            "export_growth_under_150MB": exp["rss_growth_mb"] < GROWTH_TARGET_MB,
            "import_own_growth_under_150MB": import_own < GROWTH_TARGET_MB,
        },
        "checks": checks,
        "correct": all(checks.values()),
    }


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _optional_upsert_row(raw: dict[str, Any], r: dict[str, Any], key: str, label: str) -> list[str]:
    """The row of an optional raw upsert variant, with the import's ratio to it."""
    if key not in raw:
        return []
    ratio_key = "import_vs_raw_" + key.replace("upsert_", "upsert_from_", 1)
    ratio = f"import = {r[ratio_key]:.2f}x this"
    return [_rate_row(label, raw[key], "seconds", ratio, _g(raw[key]))]


def _rate_row(name: str, run: dict[str, Any], seconds_key: str, ref: str, growth: str) -> str:
    return _row(
        [
            name,
            f"{run['points_per_s']:,.0f}",
            f"{float(run[seconds_key]):.1f}",
            ref,
            growth,
            f"{run['cpu']['process_cores']:.2f} / {run['cpu']['other_cores']:.2f}",
        ]
    )


def markdown(results: dict[str, Any]) -> str:
    svc, raw, ev = results["service"], results["raw"], results["evaluation"]
    exp, imp, art = svc["export"], svc["import"], results["artifact"]
    r = ev["ratios"]
    validate = _activity(imp, "validate_import")
    upsert = _activity(imp, "import_points")
    n = results["points"]
    lines = [
        _row(["run", "points/s", "seconds", "ratio", "RSS growth (MB)", "cores own / rest"]),
        _row(["---", "---:", "---:", "---", "---:", "---:"]),
        _rate_row(
            "**export** (service operation)",
            exp,
            "server_seconds",
            f"**{r['export_vs_raw_scroll']:.2f}x** raw scroll",
            f"{exp['rss_growth_mb']:.0f}",
        ),
        _rate_row(
            "raw scroll loop", raw["scroll"], "seconds", "1.00x (reference)", _g(raw["scroll"])
        ),
    ]
    for name, run in raw.items():
        if name.startswith("scroll_write"):
            label = f"raw scroll + write, gzip {run['level']}"
            if run.get("thread", "none") != "none":
                label += f", {run['thread']} on a 2nd thread"
            if run.get("batch") != results["batch"]:
                label += f", batch {run['batch']}"
            ref = f"export = {r[f'export_vs_raw_{name}']:.2f}x this"
            lines.append(_rate_row(label, run, "seconds", ref, _g(run)))
    lines += [
        _rate_row(
            "**import** (service operation: validate + upsert)",
            imp,
            "server_seconds",
            f"**{r['import_vs_raw_upsert']:.2f}x** raw upsert",
            f"{imp['rss_growth_mb']:.0f} (own: {ev['import_own_growth_mb']:.0f})",
        ),
        _row(
            [
                "&nbsp;&nbsp;of which `validate_import`",
                f"{n / validate['seconds']:,.0f}" if validate else "?",
                f"{validate.get('seconds', float('nan')):.1f}",
                "",
                "",
                "",
            ]
        ),
        _row(
            [
                "&nbsp;&nbsp;of which `import_points`",
                f"{n / upsert['seconds']:,.0f}" if upsert else "?",
                f"{upsert.get('seconds', float('nan')):.1f}",
                "",
                "",
                "",
            ]
        ),
        _rate_row(
            "raw upsert loop (generated)",
            raw["upsert"],
            "seconds",
            "1.00x (reference)",
            _g(raw["upsert"]),
        ),
        *_optional_upsert_row(
            raw, r, "upsert_artifact", "raw upsert loop (read from the artifact)"
        ),
        *_optional_upsert_row(
            raw,
            r,
            "upsert_artifact_prefetch",
            "raw upsert loop (artifact, next batch parsed on a 2nd thread)",
        ),
        _rate_row(
            "seed: raw upsert, empty folder", results["seed"], "seconds", "", _g(results["seed"])
        ),
    ]
    per_point = art["file_bytes"] / n
    sha = "matches" if art["sha256_matches"] else "MISMATCH"
    artifact = (
        f"Artifact: {art['file_bytes'] / 1e6:,.1f} MB gzip ({per_point:,.0f} B/point), "
        f"{art['uncompressed_bytes'] / 1e6:,.1f} MB uncompressed; trailer count "
        f"{art['trailer'].get('points')}, SHA-256 {sha}."
    )
    targets = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in ev["targets"].items())
    checks = (
        "all passed" if ev["correct"] else str({k: v for k, v in ev["checks"].items() if not v})
    )
    polls = "; ".join(
        f"{name}: p50 {op['poll_latency']['p50_s']:.2f}s, max {op['poll_latency']['max_s']:.2f}s"
        for name, op in (("export", exp), ("import", imp))
        if op.get("poll_latency")
    )
    notes = [artifact, "", f"`GET /operations/{{id}}` latency while running: {polls}."]
    notes += ["", f"Targets: {targets}.", f"Checks: {checks}."]
    failed = svc.get("import_failed")
    if failed:
        acts = "; ".join(
            f"{a['activity']} {a['outcome']} after {a['seconds']:.1f}s (attempt {a['attempt']})"
            + (f": {a['failure']}" if a.get("failure") else "")
            for a in failed["activities"]
        )
        notes += [
            "",
            "The import with OP_HEARTBEAT_TIMEOUT_SECONDS="
            f"{failed['heartbeat_timeout'] or 'default'}"
            f" failed after {failed['server_seconds']:.0f}s ({acts}); the import numbers above "
            f"are from a restart with {imp['heartbeat_timeout']}.",
        ]
    return "\n".join([*lines, "", *notes, ""])


def _g(run: dict[str, Any]) -> str:
    return f"{run['rss_growth_mb']:.0f}"
