"""The one report writer of the suite: every harness hands it its targets as
:class:`Result` rows, and it rewrites the summary table at the top of BENCHMARKS.md.

The table sits between ``<!-- summary:start -->`` and ``<!-- summary:end -->``; what is
outside the markers (the detailed sections, written by hand from the harnesses' own
Markdown output) is left as it is. Rows are keyed by their first cell: a run replaces the
rows of the targets it measured and keeps the others, so ``--only merge`` updates the
merge rows alone.

A quick pass (small sizes, shared machine) is a smoke test, not a figure: its rows go to
``bench/results/summary-quick.md`` unless ``--write`` asks for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import REPO, log

BENCHMARKS_MD = REPO / "BENCHMARKS.md"
RESULTS = REPO / "bench" / "results"
QUICK_MD = RESULTS / "summary-quick.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
HEAD = [
    "| benchmark: target | wanted | measured | | command | code | date |",
    "| --- | --- | ---: | --- | --- | --- | --- |",
]


class CheckFailed(RuntimeError):
    """A harness's correctness check failed (counters, counts): its figures don't count."""


@dataclass(frozen=True)
class Result:
    """One target of one benchmark, as measured by one run."""

    name: str  # "merge: service vs raw Edge"
    wanted: str  # ">= 0.8x", or "" when the issue asks for a figure, not a bound
    measured: float
    unit: str  # "x" for a ratio
    met: bool | None  # None: reported, no target
    command: str
    commit: str
    date: str
    quick: bool = False

    def row(self) -> str:
        mark = {True: "met", False: "**missed**", None: ""}[self.met]
        code = f"`{self.commit}`" + (" (quick, under load)" if self.quick else "")
        value = (
            f"{self.measured:.2f}x"
            if self.unit == "x"
            else f"{self.measured:,.{1 if abs(self.measured) < 100 else 0}f} {self.unit}"
        )
        return (
            f"| {self.name} | {self.wanted} | {value} | {mark} "
            f"| `{self.command}` | {code} | {self.date} |"
        )


Target = tuple[str, str, float, str, "bool | None"]


def target(
    name: str,
    measured: float,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    unit: str = "x",
) -> Target:
    """A measured figure against a floor, a ceiling or neither (reported only)."""
    sep = "" if unit == "x" else " "
    if at_least is not None:
        return name, f">= {at_least:g}{sep}{unit}", measured, unit, measured >= at_least
    if at_most is not None:
        return name, f"<= {at_most:g}{sep}{unit}", measured, unit, measured <= at_most
    return name, "", measured, unit, None


def results(targets: list[Target], command: str, code: dict[str, Any], quick: bool) -> list[Result]:
    """The rows of one harness run: its targets, its command, the code it ran."""
    commit = str(code.get("commit") or code.get("git_head") or "?")
    if code.get("dirty"):
        commit += "+dirty"
    date = time.strftime("%Y-%m-%d")
    return [Result(*t, command=command, commit=commit, date=date, quick=quick) for t in targets]


def save(name: str, report: dict[str, Any], markdown: str) -> Path:
    """A harness's raw numbers and its Markdown tables, under ``bench/results/``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown, flush=True)
    log(f"raw numbers in {out}")
    return out


def contenders(rows: list[dict[str, Any]], raw_mean: float) -> list[str]:
    """The table the Edge harnesses share: one row per contender, in run order."""
    lines = [
        "| contender (in run order) | seconds | points/s | vs raw edge (mean) | CPU s "
        "| RssAnon growth MB | RSS growth MB | other CPU (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mem, cpu = r["memory"], r["cpu"]
        cpu_s = mem.get("cpu_s", cpu["contender_cores"] * cpu["window_s"])
        lines.append(
            f"| {r['name']} | {r['seconds']:.2f} | {r['points_per_s']:,.0f} "
            f"| {r['points_per_s'] / raw_mean:.2f}x | {cpu_s:.1f} | {mem['anon_growth_mb']:.0f} "
            f"| {mem['rss_growth_mb']:.0f} | {cpu['other_cores']:.2f} |"
        )
    return lines


def table(rows: list[Result], existing: list[str]) -> list[str]:
    """The summary's lines: ``existing`` rows updated by ``rows``, new ones appended."""
    new = {r.name: r.row() for r in rows}
    out = []
    for line in existing:
        key = line.strip("| ").split(" | ", 1)[0]
        out.append(new.pop(key, line))
    return [*HEAD, *out, *new.values()]


def _rows_between_markers(text: str) -> list[str]:
    if START not in text or END not in text:
        return []
    inside = text.split(START, 1)[1].split(END, 1)[0]
    return [
        line
        for line in inside.splitlines()
        if line.startswith("|") and line not in HEAD and not line.startswith("| ---")
    ]


def publish(rows: list[Result], path: Path) -> Path:
    """Rewrite the summary table between the markers of ``path`` (made if missing)."""
    text = path.read_text() if path.exists() else f"# Benchmarks (quick pass)\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        raise ValueError(f"{path} has no {START} ... {END} markers")
    lines = table(rows, _rows_between_markers(text))
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{before}{START}\n" + "\n".join(lines) + f"\n{END}{after}")
    log(f"summary table rewritten in {path}")
    return path


def options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every harness shares: where its summary rows go."""
    parser.add_argument("--write", action="store_true", help="a --quick pass too: BENCHMARKS.md")
    parser.add_argument("--summary", type=Path, help="rewrite this file's summary instead")
    return parser


def command(module: str, argv: list[str]) -> str:
    return " ".join(["python -m", module, *argv])


def summary_path(args: argparse.Namespace) -> Path:
    if args.summary is not None:
        return Path(args.summary)
    return BENCHMARKS_MD if args.write or not args.quick else QUICK_MD


def finish(rows: list[Result], args: argparse.Namespace) -> int:
    """After a harness run on its own: its rows into the summary."""
    publish(rows, summary_path(args))
    return 0


def main(harness: Any, argv: list[str] | None = None) -> int:
    """``python -m bench.<harness>``: a module with ``parser()`` and ``run(args, argv)``."""
    argv = sys.argv[1:] if argv is None else argv
    args = harness.parser().parse_args(argv)
    return finish(harness.run(args, argv), args)
