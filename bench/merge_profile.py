"""Where a copy's time goes: the service's ``copy_points`` activity against the raw loop.

A diagnostic next to ``bench.merge``, in one process and without the API, Temporal
server or Postgres, so that only the activity's own code path differs:

* ``raw loop``: scroll a batch with vectors and payloads, upsert it, repeat, on one
  worker thread (``bench.merge_copy.raw_copy``);
* ``activity``: the service's ``PointSteps.copy_points`` with its ``VectorStore``
  (asyncio event loop, one-thread executor, ``StoredPoint`` conversion, heartbeat
  per batch, points-moved metric), run through ``temporalio.testing.ActivityEnvironment``
  and called again with the returned offset, ``--batches-per-call`` batches at a
  time, as ``MergeWorkflow`` does.

A fresh Qdrant local-mode folder gets one source collection of ``--points``
points; the two contenders then alternate ``--rounds`` times (raw loop first in odd
rounds, activity first in even ones), each copying the source into a new
collection that is checked (exact count) and dropped. Wall and CPU seconds are
reported per run, with medians. With ``--profile``, one more run of each is made
under cProfile (in every thread that does work) and the functions with the most
own time are printed.

Run: ``.venv/bin/python -m bench.merge_profile [--points N] [--rounds R] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from bench.merge_copy import Progress, raw_copy
from session_service.activities.points import PointSteps
from session_service.operation_types import CopyInput
from session_service.stores.vector_store import VectorStore

SOURCE = "source"
Profiles = list[cProfile.Profile]  # one per thread that did work


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed(client: QdrantClient, n: int, dim: int) -> None:
    client.create_collection(
        SOURCE, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
    )
    rng = np.random.default_rng(7)
    began = time.monotonic()
    for start in range(0, n, 1024):
        vectors = rng.standard_normal((min(1024, n - start), dim), dtype=np.float32).tolist()
        client.upsert(
            SOURCE,
            [
                models.PointStruct(id=start + i, vector=v, payload={"n": start + i})
                for i, v in enumerate(vectors)
            ],
        )
    log(f"seeded {n} points in {time.monotonic() - began:.0f} s")


def new_target(client: QdrantClient, name: str, dim: int) -> None:
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
    )


class Contenders:
    """Both copies on one client; ``profile`` runs the copy under cProfile."""

    def __init__(self, client: QdrantClient, args: argparse.Namespace) -> None:
        self.client, self.args = client, args
        self.store = VectorStore(client, local=True)
        self.raw_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw")

    def close(self) -> None:
        self.raw_executor.shutdown()
        self.store.close()  # closes the client too

    def raw(self, target: str, prof: Profiles | None) -> int:
        meter = Progress("raw", self.args.points, 10**12)

        def copy() -> int:
            worker = cProfile.Profile()
            if prof is not None:
                prof.append(worker)
                worker.enable()
            try:
                return raw_copy(self.client, [SOURCE], target, self.args.batch_size, meter)
            finally:
                worker.disable()

        return self.raw_executor.submit(copy).result()

    def activity(self, target: str, prof: Profiles | None) -> int:
        return asyncio.run(self._activity(target, prof))

    async def _activity(self, target: str, prof: Profiles | None) -> int:
        steps = PointSteps(self.store)
        env = ActivityEnvironment()
        converter = pydantic_data_converter.payload_converter

        def heartbeat(*details: Any) -> None:  # the worker encodes each checkpoint
            converter.to_payloads(details)

        env.on_heartbeat = heartbeat
        executor = self.store._executor  # the thread every qdrant-client call runs on
        loop, main, worker = asyncio.get_running_loop(), cProfile.Profile(), cProfile.Profile()
        if prof is not None:
            prof += [main, worker]
            await loop.run_in_executor(executor, worker.enable)
            main.enable()
        read, offset = 0, None
        while True:
            got = await env.run(
                steps.copy_points,
                CopyInput(
                    source=SOURCE,
                    target=target,
                    offset=offset,
                    batch_size=self.args.batch_size,
                    max_batches=self.args.batches_per_call,
                ),
            )
            read += got.read
            offset = got.next_offset
            if offset is None:
                break
        if prof is not None:
            main.disable()
            await loop.run_in_executor(executor, worker.disable)
        return read

    def run(self, name: str, target: str, prof: Profiles | None = None) -> dict[str, Any]:
        copy: Callable[[str, Profiles | None], int] = (
            self.raw if name == "raw loop" else self.activity
        )
        new_target(self.client, target, self.args.dim)
        cpu, wall = time.process_time(), time.perf_counter()
        read = copy(target, prof)
        seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        count = self.client.count(target, exact=True).count
        self.client.delete_collection(target)
        ok = read == count == self.args.points
        log(
            f"{name:>9}: {seconds:6.1f} s, {count / seconds:5.0f} points/s, "
            f"CPU {1000 * cpu_s / count:.3f} ms/point, count {'ok' if ok else 'WRONG'}"
        )
        return {"name": name, "seconds": seconds, "cpu_s": cpu_s, "count": count, "ok": ok}


def top(profs: Profiles, lines: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(*profs, stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


def summary(runs: list[dict[str, Any]], name: str) -> dict[str, float]:
    mine = [r for r in runs if r["name"] == name]
    return {
        "points_per_s": statistics.median(r["count"] / r["seconds"] for r in mine),
        "cpu_ms_per_point": statistics.median(1000 * r["cpu_s"] / r["count"] for r in mine),
    }


def bench(args: argparse.Namespace, folder: Path) -> int:
    client = QdrantClient(path=str(folder))
    seed(client, args.points, args.dim)
    contenders = Contenders(client, args)
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = ["raw loop", "activity"] if r % 2 == 0 else ["activity", "raw loop"]
            runs += [contenders.run(name, f"target_{r}_{i}") for i, name in enumerate(order)]
        if args.profile:
            for name in ("raw loop", "activity"):
                prof: Profiles = []
                contenders.run(name, "target_profiled", prof)
                print(f"\n## {name}: top functions by own time\n\n```\n{top(prof, 25)}```")
    finally:
        contenders.close()
    raw, act = summary(runs, "raw loop"), summary(runs, "activity")
    print(
        f"\nmedians over {args.rounds} rounds, {args.points} points, batch {args.batch_size}, "
        f"{args.batches_per_call} batches per call:\n\n"
        "| contender | points/s | CPU ms/point |\n|---|---:|---:|\n"
        f"| raw loop | {raw['points_per_s']:.0f} | {raw['cpu_ms_per_point']:.3f} |\n"
        f"| activity | {act['points_per_s']:.0f} | {act['cpu_ms_per_point']:.3f} |\n\n"
        f"activity / raw loop: points/s {act['points_per_s'] / raw['points_per_s']:.2f}x, "
        f"CPU per point {act['cpu_ms_per_point'] / raw['cpu_ms_per_point']:.2f}x"
    )
    return 0 if all(r["ok"] for r in runs) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="copy_points activity vs raw loop, in-process")
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches-per-call", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="ssmprof-", dir="/tmp"))
    try:
        return bench(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
