"""The benchmark suite: ``python -m bench [--quick] [--only NAME[,NAME]] [--write]``.

Runs every harness in turn (``make bench``): api, merge (with the query benchmark on the
merged session), export_import, retention, cold. ``--only`` picks some: ``--only merge`` is the
merge and then the queries on its result, ``--only query`` the query benchmark on its
own (one session seeded through the API). Each harness prints its Markdown tables and
writes its raw numbers to ``bench/results/<name>.json``; then the summary table (one row
per target: wanted, measured, command, code, date) is rewritten:

- a full run: at the top of BENCHMARKS.md (the rows of the targets it measured);
- ``--quick`` (small sizes, one short round: a smoke test on a shared machine):
  ``bench/results/summary-quick.md``, unless ``--write`` asks for BENCHMARKS.md (its rows
  are then marked "quick, under load").

A harness that fails (or whose correctness checks fail) adds no rows; the others still
run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from types import ModuleType

from bench import api, cold, export_import, merge, query, report, retention
from bench.stack import log

HARNESSES: dict[str, ModuleType] = {
    "api": api,
    "merge": merge,
    "query": query,
    "export_import": export_import,
    "retention": retention,
    "cold": cold,
}
DEFAULT = ["api", "merge", "export_import", "retention", "cold"]  # merge runs query after itself


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short pass of every harness")
    p.add_argument(
        "--only",
        type=lambda text: [x.strip() for x in text.split(",") if x.strip()],
        default=DEFAULT,
        help=f"comma-separated, of: {', '.join(HARNESSES)}",
    )
    args = report.options(p).parse_args(argv)
    unknown = [name for name in args.only if name not in HARNESSES]
    if unknown:
        p.error(f"unknown harness {unknown}: choose from {list(HARNESSES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows: list[report.Result] = []
    failed: list[str] = []
    for name in args.only:
        harness = HARNESSES[name]
        sub_argv = ["--quick"] if args.quick else []
        log(f"=== {name}: python -m bench.{name} {' '.join(sub_argv)}")
        began = time.monotonic()
        try:
            rows += harness.run(harness.parser().parse_args(sub_argv), sub_argv)
        except Exception:  # one harness failing must not cost the others' figures
            traceback.print_exc()
            failed.append(name)
        log(f"=== {name}: {(time.monotonic() - began) / 60:.1f} min")
    if rows:
        report.publish(rows, report.summary_path(args))
        print("\n".join(report.table(rows, [])))
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
