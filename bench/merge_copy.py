"""One non-API contender of ``bench.merge``, in a fresh process of its own.

It opens the Qdrant local-mode folder the service used (``QdrantClient(path=...)``,
which loads every point of every collection into RAM), hands the heap pages the
loading freed back to the OS (``malloc_trim(0)``, as ``bench.merge`` does to the
dev process), says ``opened`` and waits for ``go`` on stdin, so that the parent can
read its RSS while it is idle. Then it copies the source collections into a new
collection, with the same batch size and the same persistence as the service's
``copy_points`` activity, on one worker thread as the service's ``VectorStore``
runs every qdrant-client call (so the heap behaves alike), either

* ``raw``: scroll a batch (with vectors and payloads), upsert it, repeat - the
  floor an orchestrated copy can reach on this Qdrant; or
* ``memory``: the old in-memory way - read every point of every source into one
  Python list first, then upsert them all, batch by batch.

It reports the copy's wall and CPU seconds and the new collection's exact point
count, then deletes that collection (so the next contender finds the folder as
this one did) and closes the client. Messages to the parent are JSON lines on
stdout; progress goes to stderr.

Run by ``bench.merge``: ``python -m bench.merge_copy --path D --mode raw --source A ...``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qdrant_client import QdrantClient, models


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def vector_params(client: QdrantClient, collection: str) -> models.VectorParams:
    params = client.get_collection(collection).config.params.vectors
    assert isinstance(params, models.VectorParams)
    return params


def scroll_all(client: QdrantClient, source: str, batch: int) -> Iterator[list[models.Record]]:
    """Batches of ``source`` in id order, with vectors and payloads, as the activity reads."""
    offset: Any = None
    while True:
        records, offset = client.scroll(
            source, limit=batch, offset=offset, with_payload=True, with_vectors=True
        )
        if records:
            yield records
        if offset is None:
            return


def upsert(client: QdrantClient, target: str, records: list[models.Record]) -> None:
    structs = [
        models.PointStruct(id=r.id, vector=r.vector or [], payload=r.payload or {}) for r in records
    ]
    client.upsert(target, structs, wait=True)


class Progress:
    """A stderr line every ``every`` points."""

    def __init__(self, label: str, total: int, every: int) -> None:
        self.label, self.total, self.every = label, total, max(every, 1)
        self.done, self.began = 0, time.perf_counter()

    def add(self, n: int, verb: str) -> None:
        before, self.done = self.done, self.done + n
        if before // self.every != self.done // self.every:
            rate = self.done / (time.perf_counter() - self.began)
            progress(f"  {self.label}: {verb} {self.done}/{self.total} points, {rate:.0f}/s")


def raw_copy(
    client: QdrantClient, sources: list[str], target: str, batch: int, meter: Progress
) -> int:
    read = 0
    for source in sources:
        for records in scroll_all(client, source, batch):
            upsert(client, target, records)
            read += len(records)
            meter.add(len(records), "copied")
    return read


def memory_copy(
    client: QdrantClient, sources: list[str], target: str, batch: int, meter: Progress
) -> int:
    held: list[models.Record] = []
    for source in sources:
        for records in scroll_all(client, source, batch):
            held.extend(records)
    progress(f"  {meter.label}: {len(held)} points read into a list")
    for start in range(0, len(held), batch):
        chunk = held[start : start + batch]
        upsert(client, target, chunk)
        meter.add(len(chunk), "upserted")
    return len(held)


COPIES = {"raw": raw_copy, "memory": memory_copy}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="copy Qdrant collections, for bench.merge")
    parser.add_argument("--path", required=True, help="the Qdrant local-mode folder")
    parser.add_argument("--mode", choices=sorted(COPIES), required=True)
    parser.add_argument("--source", action="append", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--progress-every", type=int, default=20_000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    client = QdrantClient(path=args.path)
    names = [c.name for c in client.get_collections().collections]
    loaded = sum(client.count(name, exact=True).count for name in names)
    opened_s = time.perf_counter() - began
    gc.collect()
    trimmed = ctypes.CDLL("libc.so.6").malloc_trim(0)
    emit("opened", open_s=opened_s, points_loaded=loaded, trimmed=bool(trimmed))
    if sys.stdin.readline().strip() != "go":
        client.close()
        return 2
    expected = sum(client.count(s, exact=True).count for s in args.source)
    meter = Progress(f"{args.mode} copy", expected, args.progress_every)
    cpu, wall = time.process_time(), time.perf_counter()
    client.create_collection(args.target, vectors_config=vector_params(client, args.source[0]))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant") as executor:
        copy = COPIES[args.mode]
        read = executor.submit(
            copy, client, args.source, args.target, args.batch_size, meter
        ).result()
    seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    count = client.count(args.target, exact=True).count
    emit("copied", seconds=seconds, cpu_s=cpu_s, read=read, count=count)
    client.delete_collection(args.target)
    client.close()
    emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
