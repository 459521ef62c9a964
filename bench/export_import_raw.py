"""The raw qdrant-client loops ``bench.export_import`` compares the service with.

Each runs in a fresh child process that opens ``QdrantClient(path=...)`` on the
same folder as the service (local mode allows one client per folder, so the dev
stack is stopped meanwhile). The child opens the folder, says so on stdout, and
waits for ``go`` on stdin, so that the parent measures RSS growth from after the
open (opening loads every point of the folder, which is not the loop's cost).
After the loop it prints its result and waits for ``bye`` before cleaning up,
so that the parent reads CPU and RSS of the loop alone.

Modes (``python -m bench.export_import_raw MODE ...``):

* ``scroll``: scroll the collection with vectors, ``batch`` at a time, nothing else;
* ``scroll_write``: the same, plus what an export adds: a JSON line per point,
  one gzip member per batch, SHA-256 of the content, written to a file (the stdlib
  ``json`` lines the service wrote before it switched to orjson and float32 values),
  at gzip level 6 (the service's former level) or 1 (its level now), optionally with
  part of the work on a second thread overlapping the next scroll (``--thread``);
* ``upsert``: upsert ``points`` generated points (the seed data) into a new
  collection, ``batch`` at a time; ``--keep`` makes it the seeding of ``collection``;
* ``upsert_artifact``: read the points of an export artifact and upsert them into
  a new collection (parsing included, no validation), optionally ``--prefetch``
  (the next batch parsed on a second thread during the upsert).

The parent side (:func:`run_raw`) starts the child and samples its RSS.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from qdrant_client import QdrantClient, models

from bench.export_import_stack import CpuWindow, RssSampler, idle_rss, log, rss

DIM = 384
SEED = 20240611
RAW_TIMEOUT = 1800.0

# data


def payload_for(i: int) -> dict[str, Any]:
    """A small tab-like payload, deterministic in ``i``."""
    return {
        "url": f"https://example.com/articles/{i}",
        "title": f"Article number {i} about vectors",
        "domain": "example.com",
        "position": i % 50,
    }


def generated_batch(start: int, count: int, dim: int = DIM) -> list[models.PointStruct]:
    """Points ``start .. start+count-1``: ids, a vector from a per-batch seeded RNG, a payload."""
    rng = np.random.default_rng([SEED, start])
    vectors = rng.standard_normal((count, dim), dtype=np.float32).tolist()
    return [
        models.PointStruct(id=start + k, vector=vectors[k], payload=payload_for(start + k))
        for k in range(count)
    ]


def artifact_batches(path: Path, batch: int) -> Iterator[list[models.PointStruct]]:
    """Points of an export artifact, ``batch`` at a time (header and trailer skipped)."""
    out: list[models.PointStruct] = []
    with gzip.open(path, "rb") as lines:
        lines.readline()  # header
        for line in lines:
            obj = json.loads(line)
            if "trailer" in obj:
                break
            out.append(
                models.PointStruct(id=obj["id"], vector=obj["vector"], payload=obj["payload"])
            )
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


# loops (child side)


def loop_scroll(client: QdrantClient, collection: str, batch: int) -> dict[str, Any]:
    points, offset, calls = 0, None, 0
    while True:
        records, offset = client.scroll(
            collection, limit=batch, offset=offset, with_payload=True, with_vectors=True
        )
        points += len(records)
        calls += 1
        if offset is None:
            return {"points": points, "calls": calls}


def _line(point_id: Any, vector: Any, payload: Any) -> bytes:
    obj = {"id": point_id, "vector": vector, "payload": payload or {}}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _encode(records: list[Any]) -> bytes:
    return b"".join(_line(r.id, r.vector, r.payload) for r in records)


def loop_scroll_write(
    client: QdrantClient, collection: str, batch: int, out_path: Path, level: int, thread: str
) -> dict[str, Any]:
    """Scroll and write the artifact's point lines as the export does (no header/trailer).

    ``thread``: ``none`` does everything in turn, like the service; ``encode`` moves the
    JSON, gzip, hash and write of batch k to a second thread while the next scroll runs;
    ``compress`` keeps the JSON here and moves only gzip, hash and write (which release
    the GIL) to the second thread."""
    points, offset = 0, None
    content = hashlib.sha256()
    pending: Future[None] | None = None

    def emit(data: bytes | list[Any], out: IO[bytes]) -> None:
        raw = data if isinstance(data, bytes) else _encode(data)
        out.write(gzip.compress(raw, compresslevel=level, mtime=0))
        content.update(raw)

    with open(out_path, "wb") as out, ThreadPoolExecutor(1) as pool:
        while True:
            records, offset = client.scroll(
                collection, limit=batch, offset=offset, with_payload=True, with_vectors=True
            )
            work: bytes | list[Any] = records if thread == "encode" else _encode(records)
            if pending is not None:
                pending.result()
            if thread == "none":
                emit(work, out)
            else:
                pending = pool.submit(emit, work, out)
            points += len(records)
            if offset is None:
                break
        if pending is not None:
            pending.result()
        size = out.tell()
    return {
        "points": points,
        "size_bytes": size,
        "sha256": content.hexdigest(),
        "level": level,
        "thread": thread,
        "batch": batch,
    }


def _create(client: QdrantClient, collection: str) -> None:
    if not client.collection_exists(collection):
        client.create_collection(
            collection,
            vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        )


def loop_upsert(
    client: QdrantClient, collection: str, total: int, batch: int, progress: bool
) -> dict[str, Any]:
    began = time.monotonic()
    done = 0
    while done < total:
        count = min(batch, total - done)
        client.upsert(collection, generated_batch(done, count), wait=True)
        done += count
        if progress and (done // batch) % 20 == 0:
            rate = done / (time.monotonic() - began)
            log(f"seeded {done}/{total} points ({rate:.0f} points/s)")
    return {"points": done}


def loop_upsert_artifact(
    client: QdrantClient, collection: str, artifact: Path, batch: int, prefetch: bool
) -> dict[str, Any]:
    """``prefetch``: parse batch k+1 on a second thread while batch k is upserted (local
    mode spends most of an upsert in SQLite commits, which release the GIL)."""
    done = 0
    batches = artifact_batches(artifact, batch)
    if not prefetch:
        for points in batches:
            client.upsert(collection, points, wait=True)
            done += len(points)
        return {"points": done, "prefetch": False}
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(next, batches, None)
        while (ready := ahead.result()) is not None:
            ahead = pool.submit(next, batches, None)
            client.upsert(collection, ready, wait=True)
            done += len(ready)
    return {"points": done, "prefetch": True}


def _run_mode(args: argparse.Namespace, client: QdrantClient, target: str) -> dict[str, Any]:
    if args.mode == "scroll":
        return loop_scroll(client, args.collection, args.batch)
    if args.mode == "scroll_write":
        return loop_scroll_write(
            client, args.collection, args.batch, Path(args.out), args.level, args.thread
        )
    if args.mode == "upsert":
        return loop_upsert(client, target, args.points, args.batch, args.keep)
    return loop_upsert_artifact(client, target, Path(args.artifact), args.batch, args.prefetch)


def _say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.export_import_raw")
    parser.add_argument("mode", choices=["scroll", "scroll_write", "upsert", "upsert_artifact"])
    parser.add_argument("--path", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--points", type=int, default=0)
    parser.add_argument("--artifact", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--level", type=int, default=6)
    parser.add_argument("--thread", choices=["none", "encode", "compress"], default="none")
    parser.add_argument("--prefetch", action="store_true", help="upsert_artifact: parse ahead")
    parser.add_argument("--keep", action="store_true", help="upsert into --collection and keep it")
    args = parser.parse_args(argv)

    began = time.monotonic()
    client = QdrantClient(path=args.path)
    opened = time.monotonic() - began
    writes = args.mode in ("upsert", "upsert_artifact")
    target = args.collection if args.keep else f"raw_{args.mode}_{uuid.uuid4().hex[:8]}"
    if writes:
        _create(client, target)
    _say({"event": "opened", "open_seconds": round(opened, 2)})
    if sys.stdin.readline().strip() != "go":
        return 2
    began = time.monotonic()
    result = _run_mode(args, client, target)
    result["seconds"] = time.monotonic() - began
    if writes:
        result["count_after"] = client.count(target, exact=True).count
    _say({"event": "done", **result})
    sys.stdin.readline()  # "bye": the parent has read CPU and RSS
    if writes and not args.keep:
        client.delete_collection(target)
    client.close()
    return 0


# parent side


@dataclass
class RawRun:
    mode: str
    result: dict[str, Any]
    open_seconds: float
    rss_before: int
    rss_peak: int
    rss_max_rise: int
    rss_after: int
    cpu: dict[str, float]


def _read_event(stdout: IO[str], proc: subprocess.Popen[str], want: str) -> dict[str, Any]:
    while True:
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"raw child exited ({proc.wait(30)}) before {want!r}")
        try:
            obj: dict[str, Any] = json.loads(line)
        except ValueError:
            log(f"raw child: {line.rstrip()}")
            continue
        if obj.get("event") == want:
            return obj


def run_raw(mode: str, argv: list[str], cwd: Path, env: dict[str, str]) -> RawRun:
    """Run one raw loop in a child process; RSS and CPU measured from here."""
    cmd = [sys.executable, "-m", "bench.export_import_raw", mode, *argv]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        opened = _read_event(proc.stdout, proc, "opened")
        before = idle_rss(proc.pid)
        with RssSampler(proc.pid, baseline=before) as sampler, CpuWindow(proc.pid) as cpu:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            done = _read_event(proc.stdout, proc, "done")
            usage = cpu.read()
            after = rss(proc.pid)
        proc.stdin.write("bye\n")
        proc.stdin.flush()
        code = proc.wait(RAW_TIMEOUT)
        if code != 0:
            raise RuntimeError(f"raw {mode} exited {code}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    result = {k: v for k, v in done.items() if k != "event"}
    return RawRun(
        mode, result, opened["open_seconds"], before, sampler.peak, sampler.max_rise, after, usage
    )


if __name__ == "__main__":
    sys.exit(child_main())
