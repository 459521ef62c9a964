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
  new collection, scroll ``--batch`` + upsert (edge) or read-all + upsert (memory);
  with ``--queries Q`` (edge), Q 10-nearest queries on the copy (it has no index: scan).
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
from session_service import export_format as fmt

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


# Qdrant Edge


def _config(dim: int) -> Any:
    return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))


def edge_seed(path: Path, seed: int, first: int, n: int, dim: int) -> Any:
    shard = qe.EdgeShard.create(str(path), _config(dim))
    for ids, vectors in blocks(seed, first, n, dim):
        points = [qe.Point(i, v, payload(i)) for i, v in zip(ids, vectors, strict=True)]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.flush()
    return shard


def edge_pages(shard: Any, batch: int) -> Iterator[list[Any]]:
    offset = None
    while True:
        records, offset = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=True)
        )
        if records:
            yield records
        if offset is None:
            return


def edge_copy(sources: list[Any], target: Any, batch: int) -> int:
    copied = 0
    for source in sources:
        for records in edge_pages(source, batch):
            points = [qe.Point(r.id, r.vector, r.payload or {}) for r in records]
            target.update(qe.UpdateOperation.upsert_points(points))
            copied += len(points)
    target.flush()
    return copied


def edge_count(shard: Any) -> int:
    return int(shard.count(qe.CountRequest(exact=True)))


def edge_queries(shard: Any, vectors: np.ndarray) -> dict[str, Any]:
    ms, ids = [], []
    for v in vectors.tolist():
        began = time.perf_counter()
        found = shard.query(qe.QueryRequest(limit=10, query=qe.Query.Nearest(v)))
        ms.append((time.perf_counter() - began) * 1000)
        ids.append([p.id for p in found])
    return {"ms": ms, "ids": ids}


# qdrant-client :memory: (the first service)


def memory_seed(client: QdrantClient, name: str, seed: int, first: int, n: int, dim: int) -> None:
    params = models.VectorParams(size=dim, distance=models.Distance.COSINE)
    client.create_collection(name, vectors_config=params)
    for ids, vectors in blocks(seed, first, n, dim):
        structs = [
            models.PointStruct(id=i, vector=v, payload=payload(i))
            for i, v in zip(ids, vectors, strict=True)
        ]
        client.upsert(name, structs, wait=True)


def memory_pages(client: QdrantClient, name: str, batch: int) -> Iterator[list[Any]]:
    offset: Any = None
    while True:
        records, offset = client.scroll(
            name, limit=batch, offset=offset, with_payload=True, with_vectors=True
        )
        if records:
            yield records
        if offset is None:
            return


def memory_merge(client: QdrantClient, sources: list[str], target: str, batch: int) -> int:
    held: list[Any] = []
    for source in sources:
        for records in memory_pages(client, source, batch):
            held.extend(records)
    params = client.get_collection(sources[0]).config.params.vectors
    assert isinstance(params, models.VectorParams)
    client.create_collection(target, vectors_config=params)
    for start in range(0, len(held), batch):
        structs = [
            models.PointStruct(id=r.id, vector=r.vector, payload=r.payload or {})
            for r in held[start : start + batch]
        ]
        client.upsert(target, structs, wait=True)
    return len(held)


# the artifact, written and read with the service's encoder


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


def read_artifact(path: Path, batch: int) -> Iterator[list[tuple[Any, list[float], Any]]]:
    with open(path, "rb") as raw:
        page: list[tuple[Any, list[float], Any]] = []
        for point in fmt.iter_points(raw):
            page.append(point)
            if len(page) >= batch:
                yield page
                page = []
        if page:
            yield page


def edge_import(path: Path, target: Any, batch: int) -> int:
    n = 0
    for page in read_artifact(path, batch):
        target.update(qe.UpdateOperation.upsert_points([qe.Point(*p) for p in page]))
        n += len(page)
    target.flush()
    return n


def memory_import(client: QdrantClient, path: Path, target: str, batch: int) -> int:
    n = 0
    for page in read_artifact(path, batch):
        structs = [models.PointStruct(id=i, vector=v, payload=p) for i, v, p in page]
        client.upsert(target, structs, wait=True)
        n += len(page)
    return n


# the parent's side


def run_child(command: str, engine: str, points: int, scratch: Path, *extra: str) -> dict[str, Any]:
    """One contender in a fresh process; its result, with the CPU of the machine, of
    the child and of everyone else over its whole run (``bench.sampling.CpuWindow``)."""
    argv = [sys.executable, "-m", "bench.edge_raw", command, f"--engine={engine}"]
    argv += [f"--points={points}", f"--dir={scratch}", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    with CpuWindow(contender=proc.pid) as window:
        stdout, _ = proc.communicate(timeout=CHILD_TIMEOUT)
        cpu = window.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["cpu"] = cpu
    return result


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


def merge(args: argparse.Namespace) -> dict[str, Any]:
    n, dim, work = args.points, args.dim, args.dir
    out: dict[str, Any] = {"engine": args.engine}
    began = time.perf_counter()
    if args.engine == "edge":
        sources = [edge_seed(work / f"src{k}", args.seed, k * n, n, dim) for k in range(2)]
        target = qe.EdgeShard.create(str(work / "target"), _config(dim))
        out["seed_s"] = time.perf_counter() - began
        progress(f"edge: 2 x {n} seeded in {out['seed_s']:.1f}s; copying")
        copied, out["copy"] = timed(edge_copy, sources, target, args.batch)
        out["count"] = edge_count(target)
        if args.queries:
            progress(f"edge: {args.queries} queries on the copy (scan)")
            out["queries"] = edge_queries(target, query_vectors(args.seed, args.queries, dim))
        for shard in [*sources, target]:
            shard.close()
    else:
        client = QdrantClient(":memory:")
        for k in range(2):
            memory_seed(client, f"src{k}", args.seed, k * n, n, dim)
        out["seed_s"] = time.perf_counter() - began
        progress(f"memory: 2 x {n} seeded in {out['seed_s']:.1f}s; merging")
        copied, out["copy"] = timed(memory_merge, client, ["src0", "src1"], "target", args.batch)
        out["count"] = client.count("target", exact=True).count
        client.close()
    out["copied"] = copied
    return out


def transfer(args: argparse.Namespace) -> dict[str, Any]:
    n, dim, work = args.points, args.dim, args.dir
    artifact = work / "artifact.ndjson.gz"
    out: dict[str, Any] = {"engine": args.engine}
    began = time.perf_counter()
    if args.engine == "edge":
        shard = edge_seed(work / "src", args.seed, 0, n, dim)
        out["seed_s"] = time.perf_counter() - began
        progress(f"edge: {n} seeded in {out['seed_s']:.1f}s; exporting")
        out["exported"], out["export"] = timed(
            write_artifact, edge_pages(shard, args.export_batch), artifact, dim
        )
        target = qe.EdgeShard.create(str(work / "target"), _config(dim))
        progress("edge: importing")
        out["imported"], out["import"] = timed(edge_import, artifact, target, args.import_batch)
        out["count"] = edge_count(target)
        shard.close()
        target.close()
    else:
        client = QdrantClient(":memory:")
        memory_seed(client, "src", args.seed, 0, n, dim)
        out["seed_s"] = time.perf_counter() - began
        progress(f"memory: {n} seeded in {out['seed_s']:.1f}s; exporting")
        out["exported"], out["export"] = timed(
            write_artifact, memory_pages(client, "src", args.export_batch), artifact, dim
        )
        client.create_collection(
            "target", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        progress("memory: importing")
        out["imported"], out["import"] = timed(
            memory_import, client, artifact, "target", args.import_batch
        )
        out["count"] = client.count("target", exact=True).count
        client.close()
    out["artifact_bytes"] = artifact.stat().st_size
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("merge", "transfer"):
        p = sub.add_parser(name)
        p.add_argument("--engine", choices=("edge", "memory"), required=True)
        p.add_argument("--points", type=int, required=True)
        p.add_argument("--dim", type=int, default=384)
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--dir", type=Path, required=True, help="a scratch dir, removed after")
    m = sub.choices["merge"]
    m.add_argument("--batch", type=int, default=1024)
    m.add_argument("--queries", type=int, default=0)
    t = sub.choices["transfer"]
    t.add_argument("--export-batch", type=int, default=4096)
    t.add_argument("--import-batch", type=int, default=1024)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        result = merge(args) if args.command == "merge" else transfer(args)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
