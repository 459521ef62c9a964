"""The Edge backend: every Qdrant Edge (``qdrant-edge-py``) call of the service.

Edge is the Qdrant engine in-process, one shard per session collection under
``<root>/<collection name>``. Its API moves between beta releases, so it is
pinned to one minor version and spoken to only here.

- A shard opens in one process at a time (its WAL is locked), so the process
  keeps each one open once, lazily, in a bounded LRU cache (``open_shards``);
  a shard in use by a call is never closed under it.
- Edge releases the GIL in its calls, which run on a thread pool: the event
  loop never waits on the engine.
- A collection exists when its directory holds ``edge_config.json``: shards are
  created in a scratch directory and renamed into place, and dropped by renaming
  them away first, so a crash never leaves a half-made collection visible.
- ``optimize()`` (the HNSW build) holds the GIL for its whole run (tens of
  seconds at 100k points: measured, qdrant-edge-py 0.9.0) and would freeze the
  event loop. So the index is built by a child process on a flushed copy of the
  shard, while this one keeps serving reads and writes by scan; writes made in
  the meantime are journalled (ids only) and replayed onto the copy, which then
  replaces the shard in a short swap (see :meth:`EdgeStore.build_index`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from session_service.domain.point_query import (
    FieldCondition,
    PointQuery,
    QueryFilter,
    ScoredPointOut,
)
from session_service.obs.logs import get as get_logger
from session_service.stores.vector_store import (
    CollectionParams,
    IndexReport,
    PointId,
    PointRows,
    PointTuple,
    StoredPoint,
    VectorStore,
    point_id,
    point_rows,
)

T = TypeVar("T")
log = get_logger(__name__)

CONFIG_FILE = "edge_config.json"
_DISTANCES = {
    "Cosine": qe.Distance.Cosine,
    "Dot": qe.Distance.Dot,
    "Euclid": qe.Distance.Euclid,
    "Manhattan": qe.Distance.Manhattan,
}
# scratch directories beside the shards: made, swapped in or thrown away whole
_NEW, _DROP, _INDEX, _READY, _OLD = ".new-", ".drop-", ".index-", ".ready-", ".old-"
_REPLAY_BATCH = 1024
_PR_SET_PDEATHSIG = 1


class EdgeError(RuntimeError):
    """The engine refused a call (its message says why)."""


@dataclass
class _Open:
    shard: qe.EdgeShard
    users: int = 0
    closing: bool = False


@dataclass
class _Gate:
    """Serialises a collection's writes with the index swap, and journals the ids
    written while an index is being built on a copy."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    journal: set[PointId] | None = None
    building: bool = False  # one index build per collection at a time
    generation: int = 0  # bumped when the collection is created or dropped


def _ids(values: Sequence[PointId]) -> list[int | uuid.UUID | str]:
    return [v if isinstance(v, int) else str(v) for v in values]


def _canonical(value: Any) -> PointId:
    """An id as Edge hands it back: integers, and UUIDs in their lowercase hyphenated form
    (what the journal of an index build must compare against)."""
    if isinstance(value, int):
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _stored(record: Any, with_vectors: bool) -> StoredPoint:
    vector = record.vector if with_vectors else None
    return StoredPoint(
        id=point_id(record.id),
        vector=list(vector) if isinstance(vector, list) else None,
        payload=record.payload if record.payload is not None else {},
    )


def _condition(c: FieldCondition | QueryFilter) -> Any:
    if isinstance(c, QueryFilter):
        return _filter(c)
    if c.range is not None:
        r = c.range
        return qe.FieldCondition(
            c.key,
            range=qe.RangeFloat(
                gte=None if r.gte is None else float(r.gte),
                gt=None if r.gt is None else float(r.gt),
                lte=None if r.lte is None else float(r.lte),
                lt=None if r.lt is None else float(r.lt),
            ),
        )
    assert c.match is not None
    if c.match.any is not None:
        return qe.FieldCondition(c.key, match=qe.MatchAny(c.match.any))
    value: Any = c.match.value
    if isinstance(value, bool):  # 0.9.0 reads a Python bool as the integer 0/1 (no match
        value = np.bool_(value)  # on a boolean payload); numpy's bool reaches it as a bool
    return qe.FieldCondition(c.key, match=qe.MatchValue(value))


def _filter(f: QueryFilter) -> qe.Filter:
    def conditions(conds: list[FieldCondition | QueryFilter] | None) -> list[Any] | None:
        return [_condition(c) for c in conds] if conds else None

    return qe.Filter(
        must=conditions(f.must), should=conditions(f.should), must_not=conditions(f.must_not)
    )


def _die_with(parent: int) -> None:
    """In the index builder: die with the service instead of outliving it (set here, not
    in a ``preexec_fn``, which is unsafe to run in a forked multithreaded process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the service died before prctl took effect
        os._exit(1)


def recover(root: Path) -> None:
    """Finish or discard what a crash interrupted: half-made and half-dropped shards go,
    an index swap whose copy was complete (``.ready-``) is completed."""
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name.startswith(_READY):
            final = root / name[len(_READY) :]
            if final.exists():
                final.rename(root / (_OLD + final.name))
            entry.rename(final)
            log.info("index swap completed after a restart", collection=final.name)
    for entry in root.iterdir():
        if entry.name.startswith((_NEW, _DROP, _INDEX, _OLD)):
            shutil.rmtree(entry, ignore_errors=True)


class EdgeStore(VectorStore):
    backend = "edge"

    def __init__(self, root: Path, *, open_shards: int = 64, threads: int = 4) -> None:
        root.mkdir(parents=True, exist_ok=True)
        recover(root)
        self.root = root
        self.max_open = max(1, open_shards)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._cv = threading.Condition()
        self._gates: dict[str, _Gate] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edge")
        self._builders: set[asyncio.subprocess.Process] = set()
        self._closed = False

    # plumbing

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except Exception as exc:
            if type(exc) is Exception:  # the engine's own errors carry no type of their own
                raise EdgeError(str(exc)) from None
            raise

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid collection name {name!r}")
        return self.root / name

    def _exists(self, name: str) -> bool:
        return (self._path(name) / CONFIG_FILE).is_file()

    def _gate(self, name: str) -> _Gate:
        with self._cv:
            return self._gates.setdefault(name, _Gate())

    @contextlib.contextmanager
    def _using(self, name: str) -> Iterator[qe.EdgeShard | None]:
        """The open shard of ``name`` (None when the collection doesn't exist), held open
        for the duration of the block."""
        with self._cv:
            entry = self._open.get(name)
            while entry is not None and entry.closing:
                self._cv.wait()
                entry = self._open.get(name)
            if entry is None:
                if not self._exists(name):
                    entry = None
                else:
                    entry = _Open(qe.EdgeShard.load(str(self._path(name))))
                    self._open[name] = entry
            if entry is not None:
                entry.users += 1
                self._open.move_to_end(name)
                self._evict()
        if entry is None:
            yield None
            return
        try:
            yield entry.shard
        finally:
            with self._cv:
                entry.users -= 1
                self._cv.notify_all()
                if entry.users == 0:
                    self._evict()  # the bound is exceeded only while every shard is in use

    def _evict(self) -> None:
        """Close least-recently-used shards beyond the bound (caller holds the lock)."""
        excess = len(self._open) - self.max_open
        for name in list(self._open):
            if excess <= 0:
                return
            entry = self._open[name]
            if entry.users == 0 and not entry.closing:
                del self._open[name]
                entry.shard.close()
                excess -= 1

    def _close_open(self, name: str) -> None:
        """Close ``name``'s shard once its current calls are done (caller holds the lock)."""
        entry = self._open.get(name)
        if entry is None:
            return
        entry.closing = True
        while entry.users:
            self._cv.wait()
        entry.shard.close()
        del self._open[name]
        self._cv.notify_all()

    # collections

    async def ensure_collection(self, name: str, vector_size: int, distance: str) -> None:
        def create() -> None:
            if self._exists(name):
                return
            scratch = self.root / f"{_NEW}{name}-{uuid.uuid4().hex[:8]}"
            config = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=vector_size, distance=_DISTANCES[distance])
            )
            qe.EdgeShard.create(str(scratch), config).close()
            gate = self._gate(name)
            with gate.lock, self._cv:
                if self._exists(name):
                    shutil.rmtree(scratch, ignore_errors=True)
                    return
                shutil.rmtree(self._path(name), ignore_errors=True)  # a stray, config-less dir
                scratch.rename(self._path(name))
                gate.generation += 1

        await self._run(create)

    async def drop_collection(self, name: str) -> None:
        def drop() -> None:
            path = self._path(name)
            gate = self._gate(name)
            with gate.lock, self._cv:
                gate.generation += 1  # an index build in flight must not bring it back
                self._close_open(name)
                shutil.rmtree(self.root / (_READY + name), ignore_errors=True)
                if not path.exists():
                    return
                trash = self.root / f"{_DROP}{name}-{uuid.uuid4().hex[:8]}"
                path.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

        await self._run(drop)

    def _vector_params(self, name: str) -> tuple[int, str]:
        config = json.loads((self._path(name) / CONFIG_FILE).read_text())
        vector = config["vectors"][""]
        return int(vector["size"]), str(vector["distance"])

    def _params(self, name: str) -> CollectionParams | None:
        with self._using(name) as shard:
            if shard is None:
                return None
            size, distance = self._vector_params(name)
            return CollectionParams(
                vector_size=size,
                distance=distance,
                points_count=shard.count(qe.CountRequest(exact=True)),
            )

    async def collection_params(self, name: str) -> CollectionParams | None:
        return await self._run(self._params, name)

    async def exists(self, name: str) -> bool:
        return self._exists(name)

    async def collection_names(self) -> set[str]:
        def names() -> set[str]:
            return {
                p.name
                for p in self.root.iterdir()
                if not p.name.startswith(".") and (p / CONFIG_FILE).is_file()
            }

        return await self._run(names)

    async def count(self, name: str) -> int:
        def count() -> int:
            with self._using(name) as shard:
                return 0 if shard is None else shard.count(qe.CountRequest(exact=True))

        return await self._run(count)

    # points

    def _write(
        self, name: str, ids: Sequence[PointId], op: Any, *, missing_ok: bool = False
    ) -> None:
        gate = self._gate(name)
        with gate.lock, self._using(name) as shard:
            if shard is None:
                if missing_ok:
                    return
                raise EdgeError(f"collection {name} does not exist")
            shard.update(op)
            if gate.journal is not None:
                gate.journal.update(_canonical(i) for i in ids)

    async def upsert(self, name: str, points: Sequence[StoredPoint]) -> int:
        def upsert() -> int:
            batch = [
                qe.Point(
                    p.id if isinstance(p.id, int) else str(p.id), p.vector or [], p.payload or {}
                )
                for p in points
            ]
            self._write(name, [p.id for p in points], qe.UpdateOperation.upsert_points(batch))
            return len(batch)

        return await self._run(upsert)

    def _scroll(
        self, name: str, limit: int, offset: PointId | None, with_vectors: bool
    ) -> tuple[list[Any], PointId | None]:
        with self._using(name) as shard:
            if shard is None:
                return [], None
            records, nxt = shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=limit, with_payload=True, with_vector=with_vectors
                )
            )
            return records, None if nxt is None else point_id(nxt)

    async def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: PointId | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], PointId | None]:
        def page() -> tuple[list[StoredPoint], PointId | None]:
            records, nxt = self._scroll(name, limit, offset, with_vectors)
            return [_stored(r, with_vectors) for r in records], nxt

        return await self._run(page)

    async def scroll_rows(
        self, name: str, *, limit: int, offset: PointId | None = None
    ) -> tuple[PointRows, PointId | None]:
        def page() -> tuple[PointRows, PointId | None]:
            records, nxt = self._scroll(name, limit, offset, True)
            return point_rows(records), nxt

        return await self._run(page)

    async def copy_page(
        self, source: str, target: str, *, limit: int, offset: PointId | None = None
    ) -> tuple[int, PointId | None]:
        def copy() -> tuple[int, PointId | None]:
            records, nxt = self._scroll(source, limit, offset, True)
            if records:
                ids = [r.id for r in records]
                batch = [
                    qe.Point(i, r.vector, r.payload or {})
                    for i, r in zip(ids, records, strict=True)
                ]
                self._write(target, ids, qe.UpdateOperation.upsert_points(batch))
            return len(records), nxt

        return await self._run(copy)

    async def upsert_from(self, name: str, points: Iterator[PointTuple], limit: int) -> int:
        def take() -> int:
            ids: list[PointId] = []
            batch = []
            for i, v, p in itertools.islice(points, limit):
                ids.append(i)
                batch.append(qe.Point(i, v, p or {}))
            if batch:
                self._write(name, ids, qe.UpdateOperation.upsert_points(batch))
            return len(batch)

        return await self._run(take)

    def _retrieve(self, name: str, ids: Sequence[PointId], with_vectors: bool) -> list[Any]:
        with self._using(name) as shard:
            if shard is None or not ids:
                return []
            return list(shard.retrieve(_ids(ids), with_payload=True, with_vector=with_vectors))

    async def delete_points(self, name: str, ids: Sequence[PointId]) -> int:
        def delete() -> int:
            found = [point_id(r.id) for r in self._retrieve(name, ids, False)]
            if found:
                self._write(
                    name, found, qe.UpdateOperation.delete_points(_ids(found)), missing_ok=True
                )
            return len(found)

        return await self._run(delete)

    async def retrieve(
        self, name: str, ids: Sequence[PointId], *, with_vectors: bool = True
    ) -> list[StoredPoint]:
        def get() -> list[StoredPoint]:
            return [_stored(r, with_vectors) for r in self._retrieve(name, ids, with_vectors)]

        return await self._run(get)

    async def existing_ids(self, name: str, ids: Sequence[PointId]) -> set[PointId]:
        def find() -> set[PointId]:
            return {point_id(r.id) for r in self._retrieve(name, ids, False)}

        return await self._run(find)

    async def delete_ids(self, name: str, ids: Sequence[PointId]) -> None:
        def delete() -> None:
            if ids:
                self._write(name, ids, qe.UpdateOperation.delete_points(_ids(ids)), missing_ok=True)

        await self._run(delete)

    async def query(self, name: str, query: PointQuery) -> list[ScoredPointOut]:
        request = qe.QueryRequest(
            limit=query.limit,
            query=qe.Query.Nearest([float(v) for v in query.vector]),
            filter=_filter(query.filter) if query.filter else None,
            score_threshold=None if query.score_threshold is None else float(query.score_threshold),
            with_payload=query.with_payload,
            with_vector=query.with_vectors,
            params=(
                qe.SearchParams(hnsw_ef=query.params.hnsw_ef, exact=query.params.exact)
                if query.params
                else None
            ),
        )

        def search() -> list[ScoredPointOut]:
            with self._using(name) as shard:
                if shard is None:
                    return []
                found = shard.query(request)
            return [
                ScoredPointOut(
                    id=point_id(p.id),
                    score=p.score,
                    payload=(p.payload or {}) if query.with_payload else None,
                    vector=list(p.vector) if query.with_vectors and p.vector else None,
                )
                for p in found
            ]

        return await self._run(search)

    # durability and maintenance

    async def flush(self, name: str) -> None:
        def flush() -> None:
            with self._using(name) as shard:
                if shard is not None:
                    shard.flush()

        await self._run(flush)

    async def build_index(self, name: str) -> IndexReport:
        """Build the HNSW index of ``name`` without holding its reads or writes.

        1. Under the collection's write gate: flush, copy the shard to a scratch
           directory, start journalling the ids of new writes.
        2. A child process loads the copy and optimises it (the GIL-holding call).
        3. Under the gate again: replay the journalled ids from the live shard onto the
           copy (their current value, or their absence), then swap the copy in. Reads
           wait only for the swap itself.
        """
        started = time.monotonic()
        gate = self._gate(name)
        copy = self.root / f"{_INDEX}{name}-{uuid.uuid4().hex[:8]}"
        begun = await self._run(self._begin_build, name, gate, copy)
        if isinstance(begun, IndexReport):
            return begun
        try:
            await self._optimize_copy(copy)  # on the event loop: no pool thread waits for it
            done = await self._run(self._finish_build, name, gate, copy, begun)
        finally:
            with gate.lock:
                gate.journal, gate.building = None, False
            shutil.rmtree(copy, ignore_errors=True)
        if done is None:  # dropped (or dropped and made again) meanwhile: the copy is stale
            return IndexReport(built=False, points=0, indexed=0, seconds=0.0)
        points, indexed, replayed = done
        return IndexReport(
            built=True,
            points=points,
            indexed=indexed,
            seconds=time.monotonic() - started,
            replayed=replayed,
        )

    def _begin_build(self, name: str, gate: _Gate, copy: Path) -> int | IndexReport:
        """Phase 1: a flushed copy, and a journal of what is written from now on. Returns
        the collection's generation, or why there is nothing to build."""
        with gate.lock, self._using(name) as shard:
            if shard is None:
                return IndexReport(built=False, points=0, indexed=0, seconds=0.0)
            info = shard.info()
            if gate.building or info.indexed_vectors_count >= info.points_count:
                return IndexReport(
                    built=False,
                    points=info.points_count,
                    indexed=info.indexed_vectors_count,
                    seconds=0.0,
                )
            shard.flush()
            shutil.copytree(self._path(name), copy)
            gate.journal, gate.building = set(), True
            return gate.generation

    def _finish_build(
        self, name: str, gate: _Gate, copy: Path, generation: int
    ) -> tuple[int, int, int] | None:
        """Phase 3, under the write gate: replay the journal onto the copy, then swap it in;
        nothing when the collection was dropped since phase 1."""
        with gate.lock:
            if gate.generation != generation or not self._exists(name):
                return None
            journal = gate.journal or set()
            points, indexed = self._replay(name, copy, journal)
            shutil.copyfile(self._path(name) / CONFIG_FILE, copy / CONFIG_FILE)
            self._swap(name, copy)
            return points, indexed, len(journal)

    async def _optimize_copy(self, copy: Path) -> None:
        """Phase 2: the GIL-holding ``optimize()`` in a child process that dies with us."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "session_service.stores.edge_store",
            "optimize",
            str(copy),
            str(os.getpid()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        with self._cv:
            self._builders.add(proc)
            if self._closed:
                proc.kill()
        try:
            _, stderr = await proc.communicate()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        finally:
            with self._cv:
                self._builders.discard(proc)
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-2000:]
            raise EdgeError(f"index build failed ({proc.returncode}): {tail}")

    def _replay(self, name: str, copy: Path, journal: set[PointId]) -> tuple[int, int]:
        """Bring the copy up to date with writes made while it was optimised."""
        target = qe.EdgeShard.load(str(copy))
        try:
            ids = list(journal)
            for i in range(0, len(ids), _REPLAY_BATCH):
                batch = ids[i : i + _REPLAY_BATCH]
                live = self._retrieve(name, batch, True)
                if live:
                    target.update(
                        qe.UpdateOperation.upsert_points(
                            [qe.Point(r.id, r.vector, r.payload or {}) for r in live]
                        )
                    )
                present = {_canonical(r.id) for r in live}
                gone = [x for x in batch if x not in present]
                if gone:
                    target.update(qe.UpdateOperation.delete_points(_ids(gone)))
            target.flush()
            info = target.info()
            return info.points_count, info.indexed_vectors_count
        finally:
            target.close()

    def _swap(self, name: str, copy: Path) -> None:
        """Put the optimised copy in place of the live shard (renames only; ``recover``
        completes it after a crash once the copy is marked ready)."""
        final = self._path(name)
        ready = self.root / (_READY + name)
        old = self.root / (_OLD + name)
        copy.rename(ready)
        try:
            with self._cv:
                self._close_open(name)
                final.rename(old)
                ready.rename(final)
        except BaseException:
            if old.exists() and not final.exists():
                old.rename(final)
            shutil.rmtree(ready, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)

    async def ping(self) -> None:
        if not self.root.is_dir():
            raise EdgeError(f"vector directory {self.root} is missing")

    def close(self) -> None:
        """Stop index builds in flight (a restarted build starts over), then close every
        shard once its calls are done."""
        with self._cv:
            self._closed = True
            for proc in self._builders:
                proc.kill()
        self._executor.shutdown(wait=True)
        with self._cv:
            for name in list(self._open):
                entry = self._open.pop(name)
                with contextlib.suppress(Exception):
                    entry.shard.flush()
                entry.shard.close()


def _optimize_main(path: str, parent: int) -> int:
    """The child process of ``_optimize_copy``. Segments of any size get an index: when to
    build one at all is the service's choice (``VECTOR_INDEX_MIN_POINTS``)."""
    _die_with(parent)
    vector = json.loads((Path(path) / CONFIG_FILE).read_text())["vectors"][""]
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=vector["size"], distance=_DISTANCES[vector["distance"]]),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )
    shard = qe.EdgeShard.load(path, config)
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
        print(json.dumps({"points": info.points_count, "indexed": info.indexed_vectors_count}))
    finally:
        shard.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "optimize":
        sys.exit(_optimize_main(sys.argv[2], int(sys.argv[3])))
    print(
        "usage: python -m session_service.stores.edge_store optimize <shard dir>", file=sys.stderr
    )
    sys.exit(2)

__all__ = ["EdgeError", "EdgeStore", "recover"]
