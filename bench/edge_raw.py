"""The reference loops of the Edge benchmarks, each in a fresh process of its own.

Two engines, the same data as the service gets through its API (:func:`block`):

* ``edge``: Qdrant Edge driven directly with ``qdrant_edge`` (no service, no Temporal,
  no HTTP): the physical limit of what the service does with it. Shards are flushed at
  the end of each timed loop, as the service's steps do.
* ``memory``: the first service's way, qdrant-client's ``QdrantClient(":memory:")``
  (not durable). Its merge read every point of both sources into one Python list,
  then upserted them.

Subcommands (JSON result on the last stdout line, progress on stderr):

* ``merge``: seed two sources of ``--points`` each (not timed), then copy both into a
  new collection, scroll ``--batch`` + upsert (edge) or read-all + upsert (memory).
* ``query`` (edge): seed one shard of ``--points``, then ``--queries`` 10-nearest
  queries on it, one at a time (it has no index: a scan).
* ``transfer``: seed one collection of ``--points`` (its upsert rate is reported), then
  export it to an artifact with the service's encoder (``export_format.point_lines``,
  one ISA-L gzip member per batch, both SHA-256s, fsync), then import that artifact
  (``export_format.iter_points`` + upsert) into a new collection.

Each timed loop samples this process's memory (``bench.sampling``) from a baseline
taken after set-up, with the heap trimmed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from isal import igzip
from qdrant_client import QdrantClient, models

from bench.sampling import CpuWindow, MemorySampler, memory, trim_heap
from bench.stack import REPO
from session_service.domain import export_format as fmt

CHUNK = 1000  # points per generated block, and per PUT of the API (its limit)
GZIP_LEVEL = 1  # the service's (activities/transfer.py)
CHILD_TIMEOUT = 3600.0


def block(seed: int, index: int, dim: int) -> np.ndarray:
    """Vectors of ids ``index * CHUNK`` to ``(index + 1) * CHUNK - 1``: the same whoever
    asks, so the API's sessions, the raw shards and numpy hold the same points."""
    rng = np.random.default_rng((seed, index))
    return np.round(rng.standard_normal((CHUNK, dim)), 5)


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "url": f"https://e.x/{i}"}


def blocks(seed: int, first: int, n: int, dim: int) -> Iterator[tuple[list[int], list[Any]]]:
    """(ids, vectors as lists) of ids ``first`` to ``first + n - 1``, a block at a time."""
    if first % CHUNK or n % CHUNK:
        raise ValueError(f"points must come in multiples of {CHUNK}")
    for index in range(first // CHUNK, (first + n) // CHUNK):
        ids = list(range(index * CHUNK, (index + 1) * CHUNK))
        yield ids, block(seed, index, dim).tolist()


def unit_matrix(seed: int, n: int, dim: int) -> np.ndarray:
    """Ids 0 to ``n - 1`` as unit float32 rows: what a Cosine collection stores."""
    m = np.concatenate([block(seed, i, dim) for i in range(n // CHUNK)]).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


def query_vectors(seed: int, count: int, dim: int) -> np.ndarray:
    return np.random.default_rng((seed, 10**6)).standard_normal((count, dim))


def progress(message: str) -> None:
    print(f"  [{os.getpid()}] {message}", file=sys.stderr, flush=True)


def timed(fn: Any, *args: Any) -> tuple[Any, dict[str, Any]]:
    """``fn``'s result; its seconds, CPU (its own, and other processes' over the loop:
    ``ours`` is the parent's tree, this process included) and memory growth."""
    trim_heap()
    pid = os.getpid()
    with (
        MemorySampler(pid, baseline=memory(pid)) as sampler,
        CpuWindow(contender=pid, ours=os.getppid()) as window,
    ):
        cpu, wall = time.process_time(), time.perf_counter()
        out = fn(*args)
        seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        load = window.read()
    return out, {"seconds": seconds, "cpu_s": cpu_s, "cpu": load, **sampler.report()}


class Edge:
    """Qdrant Edge driven directly: one shard per collection under ``root``."""

    point = qe.Point

    def __init__(self, root: Path, dim: int) -> None:
        self.root, self.dim = root, dim
        self.shards: dict[str, Any] = {}

    def create(self, name: str) -> None:
        params = qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)
        self.shards[name] = qe.EdgeShard.create(str(self.root / name), qe.EdgeConfig(params))

    def upsert(self, name: str, points: list[Any]) -> None:
        self.shards[name].update(qe.UpdateOperation.upsert_points(points))

    def pages(self, name: str, batch: int) -> Iterator[list[Any]]:
        offset = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=batch, with_payload=True,
                                       with_vector=True)  # fmt: skip
            records, offset = self.shards[name].scroll(request)
            if records:
                yield records
            if offset is None:
                return

    def flush(self, name: str) -> None:
        self.shards[name].flush()

    def count(self, name: str) -> int:
        return int(self.shards[name].count(qe.CountRequest(exact=True)))

    def close(self) -> None:
        for shard in self.shards.values():
            shard.close()


class Memory:
    """The first service's way: qdrant-client's ``QdrantClient(":memory:")``."""

    def __init__(self, _root: Path, dim: int) -> None:
        self.client, self.dim = QdrantClient(":memory:"), dim

    @staticmethod
    def point(i: Any, vector: Any, payload: Any) -> models.PointStruct:
        return models.PointStruct(id=i, vector=vector, payload=payload)

    def create(self, name: str) -> None:
        params = models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
        self.client.create_collection(name, vectors_config=params)

    def upsert(self, name: str, points: list[Any]) -> None:
        self.client.upsert(name, points, wait=True)

    def pages(self, name: str, batch: int) -> Iterator[list[Any]]:
        offset: Any = None
        while True:
            records, offset = self.client.scroll(name, limit=batch, offset=offset,
                                                 with_payload=True, with_vectors=True)  # fmt: skip
            if records:
                yield records
            if offset is None:
                return

    def flush(self, name: str) -> None:
        pass  # nothing is durable

    def count(self, name: str) -> int:
        return self.client.count(name, exact=True).count

    def close(self) -> None:
        self.client.close()


Engine = Edge | Memory


def seed_into(engine: Engine, name: str, seed: int, first: int, n: int) -> None:
    engine.create(name)
    for ids, vectors in blocks(seed, first, n, engine.dim):
        engine.upsert(
            name, [engine.point(i, v, payload(i)) for i, v in zip(ids, vectors, strict=True)]
        )
    engine.flush(name)


def copy(engine: Engine, sources: list[str], target: str, batch: int) -> int:
    """Edge: scroll a page, upsert it. The first service read every point of both
    sources into one Python list, then upserted them."""
    held: list[Any] = []
    copied = 0
    for source in sources:
        for records in engine.pages(source, batch):
            if isinstance(engine, Memory):
                held.extend(records)
                continue
            engine.upsert(target, [engine.point(r.id, r.vector, r.payload or {}) for r in records])
            copied += len(records)
    for start in range(0, len(held), batch):
        page = held[start : start + batch]
        engine.upsert(target, [engine.point(r.id, r.vector, r.payload or {}) for r in page])
    engine.flush(target)
    return copied + len(held)


def write_artifact(pages: Iterator[list[Any]], out: Path, dim: int) -> int:
    """Header, point lines a gzip member per page, trailer; content and file SHA-256."""
    content, whole = hashlib.sha256(), hashlib.sha256()
    points = 0
    with open(out, "wb") as f:

        def member(data: bytes, hashed: bool = True) -> None:
            gz = igzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
            f.write(gz)
            if hashed:
                content.update(data)
            whole.update(gz)

        member(fmt.header_line({"name": "raw"}, dim, "Cosine", "2026-01-01T00:00:00+00:00"))
        for records in pages:
            matrix = np.asarray([r.vector for r in records], dtype=np.float32)
            ids = [r.id for r in records]
            member(fmt.point_lines(ids, matrix, [r.payload or {} for r in records]))
            points += len(records)
        member(fmt.trailer_line(points, content.hexdigest()), hashed=False)
        f.flush()
        os.fsync(f.fileno())
    return points


def read_artifact(engine: Engine, path: Path, target: str, batch: int) -> int:
    """``export_format.iter_points`` over the artifact, upserted ``batch`` at a time."""
    page: list[Any] = []
    n = 0
    with open(path, "rb") as raw:
        for point in fmt.iter_points(raw):
            page.append(engine.point(*point))
            if len(page) >= batch:
                engine.upsert(target, page)
                n, page = n + len(page), []
    if page:
        engine.upsert(target, page)
    engine.flush(target)
    return n + len(page)


def edge_queries(shard: Any, vectors: np.ndarray) -> dict[str, Any]:
    ms, ids = [], []
    for v in vectors.tolist():
        began = time.perf_counter()
        found = shard.query(qe.QueryRequest(limit=10, query=qe.Query.Nearest(v)))
        ms.append((time.perf_counter() - began) * 1000)
        ids.append([p.id for p in found])
    return {"ms": ms, "ids": ids}


# the parent's side


def run_child(command: str, engine: str, points: int, scratch: Path, *extra: str) -> dict[str, Any]:
    """One contender in a fresh process; its result, with the CPU of the machine, of
    the child and of everyone else over its whole run (``bench.sampling.CpuWindow``)."""
    argv = [sys.executable, "-m", "bench.edge_raw", command, f"--engine={engine}"]
    argv += [f"--points={points}", f"--dir={scratch}", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
    with CpuWindow(contender=proc.pid) as window:
        stdout, _ = proc.communicate(timeout=CHILD_TIMEOUT)
        cpu = window.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["cpu"] = cpu
    return result


def contender(name: str, loop: dict[str, Any], points: int) -> dict[str, Any]:
    """One timed loop of a child as a row of the Edge harnesses' tables."""
    cpu = loop.pop("cpu")  # the loop's window, not the whole child's
    rate = points / loop["seconds"]
    progress(f"{name}: {rate:,.0f} points/s, other load {cpu['other_cores']}")
    return {"name": name, "seconds": loop["seconds"], "points_per_s": rate,
            "memory": loop, "cpu": cpu}  # fmt: skip


def seed_session(api: Any, session_id: str, seed: int, first: int, n: int, dim: int) -> float:
    """PUT the points of ids ``first`` to ``first + n - 1``, 1,000 a call; the seconds."""
    began = time.perf_counter()
    for ids, vectors in blocks(seed, first, n, dim):
        points = [
            {"id": i, "vector": v, "payload": payload(i)} for i, v in zip(ids, vectors, strict=True)
        ]
        api.put_points(session_id, points)
    return time.perf_counter() - began


# the subcommands


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("merge", "transfer", "query"))
    p.add_argument("--engine", choices=("edge", "memory"), required=True)
    p.add_argument("--points", type=int, required=True)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir", type=Path, required=True, help="a scratch dir, removed after")
    p.add_argument("--batch", type=int, default=1024, help="merge: scroll and upsert")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--export-batch", type=int, default=4096)
    p.add_argument("--import-batch", type=int, default=1024)
    args = p.parse_args(argv)
    n, dim, work = args.points, args.dim, args.dir
    work.mkdir(parents=True, exist_ok=True)
    engine: Engine = (Edge if args.engine == "edge" else Memory)(work, dim)
    out: dict[str, Any] = {"engine": args.engine}
    try:
        if args.command == "merge":
            for k in range(2):
                seed_into(engine, f"src{k}", args.seed, k * n, n)
            progress(f"{args.engine}: 2 x {n} seeded; copying")
            engine.create("target")
            out["count"], out["copy"] = timed(copy, engine, ["src0", "src1"], "target", args.batch)
        elif args.command == "query":
            assert isinstance(engine, Edge), "raw queries are on Edge"
            seed_into(engine, "shard", args.seed, 0, n)
            progress(f"edge: {n} seeded; {args.queries} queries (scan)")
            out |= edge_queries(engine.shards["shard"], query_vectors(args.seed, args.queries, dim))
        else:
            seed_into(engine, "src", args.seed, 0, n)
            progress(f"{args.engine}: {n} seeded; exporting")
            artifact = work / "artifact.ndjson.gz"
            pages = engine.pages("src", args.export_batch)
            out["exported"], out["export"] = timed(write_artifact, pages, artifact, dim)
            progress(f"{args.engine}: importing")
            engine.create("target")
            _, out["import"] = timed(read_artifact, engine, artifact, "target", args.import_batch)
            out["count"], out["artifact_bytes"] = engine.count("target"), artifact.stat().st_size
    finally:
        engine.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
