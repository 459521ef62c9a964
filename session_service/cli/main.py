"""``session-service``: dev (the whole embedded stack), api, worker, migrate, and the
operator commands ``sessions`` and ``ops``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from session_service.obs import logs
from session_service.settings import Settings

log = logs.get("session_service")


def _freeze_startup_heap() -> None:
    """Move everything allocated at start-up out of the garbage collector's reach.

    FastAPI, Temporal and Qdrant's clients leave ~160,000 long-lived objects;
    without this, every full collection walks them all and stalls each request
    in flight for tens of milliseconds (the API benchmark's p99).
    """
    gc.collect()
    gc.freeze()


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its shutdown, which would skip stopping the
    embedded children in order; here a signal only asks the server to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._ask_exit)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _ask_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


async def _serve(settings: Settings, host: str, port: int, *, with_worker: bool) -> None:
    """The API under uvicorn; with the worker in the same event loop when asked (``dev``,
    ``serve``), sharing the Edge shards that only one process may open."""
    from session_service.api.app import create_app
    from session_service.services.runtime import Runtime
    from session_service.temporal.worker import worker_for

    runtime = await Runtime.open(settings)
    try:
        app = create_app(settings, runtime)
        config = uvicorn.Config(
            app, host=host, port=port, access_log=False, lifespan="on", log_config=None
        )
        server = _Server(config)
        if not with_worker:
            _freeze_startup_heap()
            await server.serve()
            log.info("api stopped")
            return
        # Stop order on SIGTERM: the API stops taking requests and finishes those in
        # flight (whose operations still have the worker), then the worker drains, then
        # the stores close.
        async with await worker_for(runtime):
            _freeze_startup_heap()
            await server.serve()
            log.info("api stopped")
            _draining(settings)
        log.info("worker stopped")
    finally:
        await runtime.close()
        log.info("stores closed")


def _draining(settings: Settings) -> None:
    """Say that the worker drains, and keep a repeated signal from killing the process
    meanwhile: the drain is bounded by the grace period, and a killed process would leave
    its activities to time out and be retried."""
    grace = settings.worker_shutdown_grace_seconds
    log.info("worker draining", grace_seconds=grace)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(
            sig, lambda: log.warning("already stopping: the worker drains", grace_seconds=grace)
        )


async def _work(settings: Settings) -> None:
    from session_service.services.runtime import Runtime
    from session_service.temporal.worker import worker_for

    runtime = await Runtime.open(settings, run_migrations=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with await worker_for(runtime):
            _freeze_startup_heap()
            log.info("worker polling", task_queue=settings.temporal_task_queue)
            await stop.wait()
            _draining(settings)
        log.info("worker stopped")
    finally:
        await runtime.close()
        log.info("stores closed")


def cmd_dev(args: argparse.Namespace) -> int:
    """Start Postgres, Temporal (with UI), Qdrant Edge, the API and the worker in one
    process tree."""
    from session_service.cli.embedded_stack import EmbeddedPostgres, EmbeddedTemporal

    settings = Settings()
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    update: dict[str, object] = {"data_dir": data_dir}
    pg: EmbeddedPostgres | None = None
    temporal: EmbeddedTemporal | None = None
    try:
        if not settings.database_url:
            pg = EmbeddedPostgres(data_dir)
            update["database_url"] = pg.start()
            log.info("postgres ready", socket_dir=str(pg.socket_dir))
        if not settings.temporal_address:
            temporal = EmbeddedTemporal(
                data_dir / "temporal",
                port=args.temporal_port,
                ui_port=args.temporal_ui_port,
                avoid=(args.port,),
            )
            update["temporal_address"] = temporal.start()
            update["temporal_ui_url"] = temporal.ui_url
            if settings.temporal_tls_enabled:
                log.warning("TEMPORAL_TLS* and TEMPORAL_API_KEY ignored: dev's Temporal has no TLS")
            update.update(temporal_tls=False, temporal_api_key=None)
            log.info("temporal ready", address=temporal.address, ui=temporal.ui_url)
        settings = settings.model_copy(update=update)
        return _run_serving(settings, args, "dev")
    finally:
        if temporal is not None:
            temporal.stop()
        if pg is not None:
            pg.stop()
        log.info("stopped")
    return 0


def _shared_engine_missing(settings: Settings, command: str) -> bool:
    """``api`` and ``worker`` are separate processes: they need one vector engine that
    both reach. An Edge shard opens in one process only, so Edge can't be it."""
    if settings.vector_backend == "server":
        return False
    print(
        f"session-service {command}: QDRANT_URL is not set. The api and worker processes "
        "need a shared Qdrant server (QDRANT_URL, or QDRANT_HOST/QDRANT_PORT): the embedded "
        "engine (Qdrant Edge) opens its data in one process only. On a single node, run "
        "`session-service serve` (API and worker in one process, vectors under DATA_DIR); "
        "on a laptop, `session-service dev`.",
        file=sys.stderr,
    )
    return True


def _external_stores_missing(settings: Settings, command: str) -> bool:
    missing = [
        name
        for name, value in (
            ("DATABASE_URL", settings.database_url),
            ("TEMPORAL_ADDRESS", settings.temporal_address),
        )
        if not value
    ]
    if missing:
        print(
            f"session-service {command}: {' and '.join(missing)} not set "
            "(or run `session-service dev`, which starts its own)",
            file=sys.stderr,
        )
    return bool(missing)


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API against the stores named by the environment (production)."""
    settings = Settings()
    if _external_stores_missing(settings, "api") or _shared_engine_missing(settings, "api"):
        return 2
    asyncio.run(_serve(settings, args.host, args.port, with_worker=False))
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    """Run the Temporal worker alone (production; scale out by running more)."""
    settings = Settings()
    if _external_stores_missing(settings, "worker") or _shared_engine_missing(settings, "worker"):
        return 2
    asyncio.run(_work(settings))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the API and run the worker in one process (a single node): Postgres and
    Temporal from the environment, vectors in Qdrant Edge under DATA_DIR unless
    QDRANT_URL names a server."""
    settings = Settings()
    if _external_stores_missing(settings, "serve"):
        return 2
    return _run_serving(settings, args, "serve")


def _run_serving(settings: Settings, args: argparse.Namespace, command: str) -> int:
    """API and worker in this process; a data dir that can't be opened is one clear line."""
    from session_service.stores.local_migration import MigrationError

    try:
        asyncio.run(_serve(settings, args.host, args.port, with_worker=True))
    except MigrationError as exc:
        print(f"session-service {command}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    """Apply the database migrations (idempotent)."""
    import asyncpg

    from session_service.stores import migrate

    settings = Settings()
    if not settings.database_url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2

    async def run() -> list[str]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await migrate.migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-service", description=(__doc__ or "").replace("``", "")
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help=cmd_dev.__doc__)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8087)
    dev.add_argument("--data-dir", default=".data")
    dev.add_argument("--temporal-port", type=int, default=7233)
    dev.add_argument("--temporal-ui-port", type=int, default=8233)
    dev.set_defaults(func=cmd_dev)

    api = sub.add_parser("api", help=cmd_api.__doc__)
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=8087)
    api.set_defaults(func=cmd_api)

    serve = sub.add_parser("serve", help=cmd_serve.__doc__)
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8087)
    serve.set_defaults(func=cmd_serve)

    work = sub.add_parser("worker", help=cmd_worker.__doc__)
    work.set_defaults(func=cmd_worker)

    mig = sub.add_parser("migrate", help=cmd_migrate.__doc__)
    mig.set_defaults(func=cmd_migrate)

    from session_service.cli.operator import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Settings that don't validate and a Temporal that can't be reached end the command
    with one line on stderr (no traceback): exit 2 and 1."""
    from session_service.cli import operator as operator_cli
    from session_service.domain.errors import StartupError

    argv = sys.argv[1:] if argv is None else argv
    if operator_cli.handles(argv):  # typer's commands, with their own help and completion
        return operator_cli.main(argv)
    args = build_parser().parse_args(argv)
    if args.command in ("dev", "api", "serve", "worker", "migrate"):
        try:
            settings = Settings()
        except ValidationError as exc:
            for line in _setting_errors(exc):
                print(f"session-service {args.command}: {line}", file=sys.stderr)
            return 2
        default = "console" if args.command == "dev" else "json"
        logs.configure(
            json_logs=(settings.log_format or default) == "json", level=settings.log_level
        )
    try:
        code: int = args.func(args)
    except StartupError as exc:
        print(f"session-service {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


def _setting_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting, named as its environment variable."""
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        names = [str(part).upper() for part in error["loc"]]
        lines.append(f"{'.'.join(names)}: {message}" if names else message)
    return lines


if __name__ == "__main__":
    sys.exit(main())
