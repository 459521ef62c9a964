"""Listing operations (issue 15): ``GET /operations?limit=100`` from the operations table,
beside the N+1 way it was answered before (in the same run, on the same operations).

``session-service dev`` (a subprocess, ``bench.stack``) runs ``--operations`` (default
100) exports of a small session, to the end. Then, ``--repeats`` times each, in
alternation:

- ``sql``: ``GET /operations?limit=100`` over HTTP: one SQL query, and Temporal calls
  only for running operations (none here);
- ``n+1``: what the old ``list_for`` did, kept here as a function: one visibility
  ``list_workflows`` query, then per operation ``describe`` + ``result`` + the
  ``progress`` query, against the same Temporal dev server (no HTTP, no JSON encoding:
  it only gets cheaper than the route it replaced).

Run: ``.venv/bin/python -m bench.operations_list`` (~2 min), ``--quick`` (20 operations,
10 repeats). Prints p50/p99 of each, and the ratio, as Markdown; JSON to
``bench/results/operations_list.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.stack import Api, DevStack, log, machine_facts, workdir

RESULTS = Path(__file__).resolve().parent / "results"


async def n_plus_one(client: Client, limit: int) -> int:
    """The old listing: a visibility query, then 3 calls per operation. Returns how many
    operations it read."""
    query = "WorkflowType IN ('ExportWorkflow')"
    ids = [wf.id async for wf in client.list_workflows(query, limit=limit)]
    for wid in ids[:limit]:
        handle = client.get_workflow_handle(wid)
        desc = await handle.describe()
        await handle.result()
        await desc.memo()
        try:
            await asyncio.wait_for(handle.query("progress"), timeout=5)
        except Exception:  # noqa: BLE001 - as the old code: progress is optional
            pass
    return len(ids[:limit])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.operations_list")
    p.add_argument("--operations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.operations, args.repeats = 20, 10
    out: dict[str, Any] = {"machine": machine_facts(), "operations": args.operations}
    with workdir("ssoplist-", args.keep) as work:
        code = Path(__file__).resolve().parent.parent
        dev = DevStack(work / "data", code, work / "dev.log")
        with dev:
            out["dev_start_s"] = dev.start()
            api = Api(dev.url)
            sid = api.create_session("ops-list", 4)
            api.put_points(sid, [{"id": i, "vector": [1.0, 0, 0, 0]} for i in range(1, 11)])
            began = time.perf_counter()
            for _ in range(args.operations):
                api.long(f"/sessions/{sid}/exports")
            log(f"{args.operations} exports in {time.perf_counter() - began:.1f} s")
            out.update(asyncio.run(measure(api, dev, args)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "operations_list.json").write_text(json.dumps(out, indent=2, default=str))
    print(markdown(out))


async def measure(api: Api, dev: DevStack, args: argparse.Namespace) -> dict[str, Any]:
    client = await Client.connect(dev.temporal_address, data_converter=pydantic_data_converter)
    sql: list[float] = []
    old: list[float] = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        r = api.http.get("/operations", params={"limit": args.operations, "kind": "export"})
        sql.append(time.perf_counter() - began)
        assert r.status_code == 200 and len(r.json()) == args.operations, r.text[:300]
        began = time.perf_counter()
        read = await n_plus_one(client, args.operations)
        old.append(time.perf_counter() - began)
        assert read == args.operations, read
    return {
        "repeats": args.repeats,
        "sql_s": {"p50": statistics.median(sql), "p99": pct(sql, 0.99)},
        "n_plus_one_s": {"p50": statistics.median(old), "p99": pct(old, 0.99)},
    }


def markdown(out: dict[str, Any]) -> str:
    n = out["operations"]
    s, o = out["sql_s"], out["n_plus_one_s"]
    return "\n".join(
        [
            f"| listing {n} operations ({out['repeats']} times) | p50 | p99 |",
            "|---|---|---|",
            f"| `GET /operations` (one SQL query) | {s['p50'] * 1000:.1f} ms "
            f"| {s['p99'] * 1000:.1f} ms |",
            f"| before: list + describe/result/query each (N+1) | {o['p50'] * 1000:.1f} ms "
            f"| {o['p99'] * 1000:.1f} ms |",
            f"| ratio (N+1 / SQL) | {o['p50'] / s['p50']:.0f}x | {o['p99'] / s['p99']:.0f}x |",
        ]
    )


if __name__ == "__main__":
    main()
