"""CPU per request of the app layer alone, for the in-memory app and variants of the service's.

``python -m bench.asgi_cost [--requests N] [--repeat R]``

No sockets, no uvicorn, no database: each variant's ASGI app is called
in-process with a ``PUT /sessions/{id}/stats`` scope, 64 calls in flight, and
the process CPU time per request is reported (median of ``--repeat``). Each
variant runs in a fresh process pinned to one core (the service variants
patch module globals). The service variants use a stub runtime whose
``add_stats`` is a dict update (``bench.variants.StubRuntime``) and log the way
``session-service dev`` does, to a temporary file. This isolates what bench.api
cannot: how much each part of the service's HTTP layer costs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.types import Message

BODY = b'{"urls_processed": 1, "content_analyzed": 1}'
CONCURRENCY = 64
VARIANTS = {
    "in-memory": "bench.memapp, the baseline",
    "service": "the service's app as it is",
    "service+async-deps": "`get_sessions`/`get_actor` as `async def`",
    "service+async-deps+route-first": "and PUT /sessions/{id}/stats matched first",
    "service+tuned": "and gc.freeze() after start-up (= bench.variants --tuned)",
    "service+tuned-no-log": "and without the request log line and HTTP metrics middlewares",
    "service-no-log": "the service's app without those two middlewares only",
}


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call(app: FastAPI, path: str) -> int:
    """One request through the whole ASGI stack; the response status."""
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)  # a client that never disconnects
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(path), receive, send)
    return status


async def cpu_per_request(app: FastAPI, path: str, requests: int) -> float:
    """Microseconds of process CPU per request, ``CONCURRENCY`` requests in flight."""
    for _ in range(300):  # warm-up; also checks the app answers 200
        if await call(app, path) != 200:
            raise RuntimeError(f"{path} did not answer 200")
    per_task = requests // CONCURRENCY

    async def loop() -> None:
        for _ in range(per_task):
            await call(app, path)

    began = time.process_time()
    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    return (time.process_time() - began) / (per_task * CONCURRENCY) * 1e6


async def memapp_path(app: FastAPI) -> str:
    """Create a session in the in-memory app through its own POST route."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        r = await client.post("/sessions", json={"name": "asgi-cost"})
        return f"/sessions/{r.json()['id']}/stats"


def service_app(name: str) -> FastAPI:
    from bench import variants
    from session_service import logs
    from session_service.settings import Settings

    logs.configure(json_logs=False, level=Settings().log_level)  # as `session-service dev`
    if "async-deps" in name or "tuned" in name:
        variants.use_async_dependencies()
    from session_service.api.app import create_app

    app = create_app(Settings(), variants.StubRuntime())  # type: ignore[arg-type]
    if "route-first" in name or "tuned" in name:
        variants.stats_route_first(app)
    if "no-log" in name:
        variants.without_observability(app)
    if "tuned" in name:
        gc.collect()
        gc.freeze()
    return app


async def measure_one(name: str, requests: int) -> float:
    if name == "in-memory":
        from bench import memapp

        app = memapp.create_app()
        return await cpu_per_request(app, await memapp_path(app), requests)
    app = service_app(name)
    return await cpu_per_request(app, f"/sessions/{uuid.uuid4()}/stats", requests)


def run_variant(name: str, requests: int, cpu: int) -> float:
    """The variant in a fresh process pinned to ``cpu``; its logs go to a temp file."""
    argv = [sys.executable, "-m", "bench.asgi_cost", "--one", name, f"--requests={requests}"]
    with tempfile.TemporaryFile() as logfile:
        done = subprocess.run(
            argv,
            stdout=logfile,
            stderr=subprocess.PIPE,
            check=False,
            timeout=300,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode()[-2000:])
    result: float = json.loads(done.stderr.decode().strip().splitlines()[-1])["cpu_us"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        cpu_us = asyncio.run(measure_one(args.one, args.requests))
        print(json.dumps({"cpu_us": cpu_us}), file=sys.stderr)
        return 0
    cpu = min(os.sched_getaffinity(0))
    print("| app variant | CPU per request (µs) | |\n|---|---:|---|")
    for name, about in VARIANTS.items():
        runs = [run_variant(name, args.requests, cpu) for _ in range(args.repeat)]
        print(f"| {name} | {statistics.median(runs):.0f} | {about} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
