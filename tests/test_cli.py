"""The operator CLI as users run it: subprocesses against the embedded stack, help,
one-line errors and exit codes, one JSON schema per command, and the progress display
on a pseudo-terminal versus a redirected stderr."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from session_service.cli.embedded_stack import free_port
from session_service.cli.operator import app
from session_service.cli.operator_io import Rate
from session_service.client import SyncSessionClient
from session_service.domain.models import Operation, SessionCreate
from tests.test_dev_stack import DevStack

OPERATION_KEYS = set(Operation.model_fields)
OPERATION = {
    "id": "merge-1",
    "kind": "merge",
    "status": "running",
    "done": False,
    "session_ids": ["a"],
    "links": {"self": "/operations/merge-1"},
}
PROBLEM_KEYS = {"type", "title", "detail"}


def run(*args: str, url: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    extra = ["--url", url] if url else []
    return subprocess.run(
        [sys.executable, "-m", "session_service.cli.main", *args, *extra],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        **kw,
    )


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith("session-service: ")
    return lines[0]


# --- without a service ---------------------------------------------------------------


def leaf_commands(group: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from leaf_commands(cmd, f"{path} {name}")
        else:
            yield f"{path} {name}".strip(), cmd


def test_every_command_and_flag_has_help_without_markup() -> None:
    root = typer.main.get_command(app)
    leaves = dict(leaf_commands(root))
    expected = {"list", "show", "merge", "split", "export", "import", "delete"}
    expected |= {"offload", "reload", "offloaded"}
    assert {n.split()[1] for n in leaves if n.startswith("sessions")} == expected
    assert {n.split()[1] for n in leaves if n.startswith("ops")} == {
        "list",
        "show",
        "wait",
        "cancel",
    }
    for name, cmd in leaves.items():
        assert cmd.help and "``" not in cmd.help, name
        for param in cmd.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
            assert "``" not in param.help, f"{name} {param.name}"
    shown = run("sessions", "split", "--help")
    assert shown.returncode == 0 and "--part NAME:ID,ID,..." in shown.stdout
    assert "``" not in shown.stdout and "``" not in run("--help").stdout


def test_errors_are_one_line_with_an_exit_code_never_a_traceback() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    refused = run("sessions", "list", url=nowhere)
    assert refused.returncode == 3 and "cannot reach" in one_line_error(refused)
    as_json = run("ops", "show", "merge-x", "--json", url=nowhere)
    assert as_json.returncode == 3 and PROBLEM_KEYS <= set(json.loads(as_json.stdout))
    bad_part = run("sessions", "split", "s1", "--part", "nocolon", url=nowhere)
    assert bad_part.returncode == 2 and "--part" in one_line_error(bad_part)
    bad_status = run("ops", "list", "--status", "sleeping", url=nowhere)
    assert bad_status.returncode == 2 and "--status" in one_line_error(bad_status)
    one_source = run("sessions", "merge", "only-one", url=nowhere)  # fails validation
    assert one_source.returncode == 2 and "source_session_ids" in one_line_error(one_source)
    unknown = run("sessions", "show", "x", "--bogus")
    assert unknown.returncode == 2 and "--bogus" in one_line_error(unknown)


def test_rate_and_time_left_come_from_the_points_seen() -> None:
    started = datetime.now(UTC) - timedelta(seconds=100)
    op = Operation.model_validate(
        {**OPERATION, "created_at": started.isoformat(), "progress": {"points_done": 1000}}
    )
    rate, eta = Rate().update(op, 1000, 3000)  # one sample: since the operation started
    assert rate.endswith(" points/s") and 9 <= float(rate.split()[0]) <= 10
    assert eta.startswith("0:03:") or eta == "0:04:00"  # 2000 points at ~10/s
    assert Rate().update(op, 0, 3000) == ("-- points/s", "-:--:--")
    done = op.model_copy(update={"done": True, "status": "succeeded"})
    assert Rate().update(done, 3000, 3000)[1] == "0:00:00"


def closed_stdout(*args: str) -> tuple[int, str]:
    """Run with stdout's reader gone, as in ``| head`` once head has its lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "session_service.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(60), err


def test_a_closed_pipe_ends_quietly() -> None:
    code, err = closed_stdout("ops", "show", "x", "--json", "--url", "http://127.0.0.1:1")
    assert code == 141 and "Traceback" not in err and "BrokenPipe" not in err


# --- against the embedded stack --------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = DevStack(tmp_path_factory.mktemp("cli") / "data")
    s.start()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGTERM)
        try:
            s.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(s.proc.pid, signal.SIGKILL)
            s.proc.wait(30)


def sessions_with_points(url: str, names: list[str], points: int) -> list[str]:
    ids = []
    with SyncSessionClient(url) as c:
        for name in names:
            s = c.create_session(SessionCreate(name=name, configuration={"vector_size": 2}))  # type: ignore[arg-type]
            for start in range(0, points, 1000):
                c.upsert_points(
                    s.id,
                    [
                        {"id": i, "vector": [1.0, float(i)], "payload": {"n": i}}
                        for i in range(start + 1, min(start + 1000, points) + 1)
                    ],
                )
            ids.append(s.id)
    return ids


def cli_json(stack: DevStack, *args: str) -> tuple[int, Any]:
    p = run(*args, "--json", url=stack.url)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None


@pytest.mark.e2e
def test_operation_commands_print_the_operation_whatever_the_timing(
    stack: DevStack, tmp_path: Path
) -> None:
    left, right, other = sessions_with_points(stack.url, ["left", "right", "other"], 5)
    code, op = cli_json(stack, "sessions", "merge", left, right, "--name", "Both")
    assert code == 0 and set(op) == OPERATION_KEYS
    assert op["status"] == "succeeded" and op["result"]["name"] == "Both"
    code, started = cli_json(stack, "sessions", "merge", left, other, "--keep-sources", "--no-wait")
    assert code == 0 and set(started) == OPERATION_KEYS and started["kind"] == "merge"
    code, waited = cli_json(stack, "ops", "wait", started["id"])
    assert code == 0 and waited["id"] == started["id"] and waited["status"] == "succeeded"

    artifact = tmp_path / "both.ndjson.gz"
    merged_id = op["result"]["id"]
    code, exported = cli_json(stack, "sessions", "export", merged_id, "--download", str(artifact))
    assert code == 0 and exported["kind"] == "export" and exported["result"]["points"] == 5
    assert artifact.stat().st_size == exported["result"]["size_bytes"]
    code, imported = cli_json(stack, "sessions", "import", str(artifact), "--name", "Copy")
    assert code == 0 and imported["kind"] == "import" and imported["result"]["name"] == "Copy"
    code, off = cli_json(stack, "sessions", "offload", merged_id)
    assert code == 0 and off["kind"] == "offload" and off["status"] == "succeeded"
    code, rows = cli_json(stack, "sessions", "offloaded")
    assert code == 0 and [r["session_id"] for r in rows] == [merged_id]
    code, back = cli_json(stack, "sessions", "reload", merged_id)
    assert code == 0 and back["kind"] == "reload" and back["status"] == "succeeded"

    # refused before it starts (a bad header): a problem object, exit code 1
    corrupt = tmp_path / "corrupt.ndjson"
    corrupt.write_text('{"format": "nope"}\n')
    code, refused = cli_json(stack, "sessions", "import", str(corrupt))
    assert code == 1 and PROBLEM_KEYS <= set(refused) and refused["status"] == 422
    # fails after it started (no trailer): still the Operation, and exit code 1
    truncated = tmp_path / "truncated.ndjson"
    truncated.write_bytes(b"\n".join(gzip.decompress(artifact.read_bytes()).splitlines()[:-1]))
    code, failed = cli_json(stack, "sessions", "import", str(truncated))
    assert code == 1 and set(failed) == OPERATION_KEYS and failed["status"] == "failed"

    code, gone = cli_json(stack, "sessions", "delete", imported["result"]["id"], "--permanent")
    assert code == 0 and gone["kind"] == "delete" and gone["result"]["permanent"] is True
    code, soft = cli_json(stack, "sessions", "delete", other)
    assert code == 0 and soft == {"message": soft["message"], "permanent": False}

    # errors with --json: a problem object, exit code 1
    code, problem = cli_json(stack, "ops", "cancel", op["id"])
    assert code == 1 and problem["status"] == 409
    code, problem = cli_json(stack, "sessions", "show", "00000000-0000-4000-8000-000000000000")
    assert code == 1 and problem["status"] == 404

    # ops list: filters and a limit
    code, listed = cli_json(stack, "ops", "list", "--session", left)
    assert code == 0 and {o["id"] for o in listed} == {op["id"], started["id"]}
    code, listed = cli_json(stack, "ops", "list", "--session", left, "--limit", "1")
    assert code == 0 and [o["id"] for o in listed] == [started["id"]]  # newest first
    code, listed = cli_json(stack, "ops", "list", "--kind", "offload")
    assert code == 0 and [o["id"] for o in listed] == [off["id"]]
    code, listed = cli_json(stack, "ops", "list", "--status", "failed")
    assert code == 0 and [o["id"] for o in listed] == [failed["id"]]
    code, sessions = cli_json(stack, "sessions", "list", "--status", "archived")
    assert code == 0 and {s["id"] for s in sessions} == {left, right}

    # a list into a pipe that closes early
    code, err = closed_stdout("sessions", "list", "--url", stack.url)
    assert code == 141 and "Traceback" not in err


def read_pty(master: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.e2e
def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise(stack: DevStack) -> None:
    ids = sessions_with_points(stack.url, ["p1", "p2", "p3", "p4"], 3000)
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "session_service.cli.main", "sessions", "merge", ids[0], ids[1]]
        + ["--keep-sources", "--json", "--url", stack.url],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    screen = read_pty(master).decode(errors="replace")
    os.close(master)
    assert proc.stdout is not None
    op = json.loads(proc.stdout.read())
    assert proc.wait(60) == 0 and op["status"] == "succeeded"
    assert "\x1b[" in screen and "━" in screen  # drawn and redrawn in place
    assert "ETA" in screen and "6000/6000" in screen
    assert re.search(r"\d[\d,]* points/s", screen), screen[-2000:]

    plain = run("sessions", "merge", ids[2], ids[3], "--keep-sources", url=stack.url, env=env)
    assert plain.returncode == 0, plain.stderr
    assert "\x1b" not in plain.stderr and "\r" not in plain.stderr and "━" not in plain.stderr
    lines = plain.stderr.splitlines()
    assert lines and all(line.startswith("merge-") for line in lines)
    assert len(lines) == len(set(lines))  # one line per phase, not per poll
    quiet = run("sessions", "merge", ids[2], ids[3], "--keep-sources", "--json", url=stack.url)
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.e2e
def test_the_sync_client_against_the_service(stack: DevStack, tmp_path: Path) -> None:
    (a,) = sessions_with_points(stack.url, ["sync"], 1500)
    with SyncSessionClient(stack.url) as c:
        assert a in {s.id for s in c.iter_sessions(limit=1)}
        assert sum(1 for _ in c.iter_points(a, page_size=500)) == 1500
        started = c.export(a, wait=0)
        op = c.wait(started.operation_id, poll=0.1)
        assert op.status.value == "succeeded"
        artifact = tmp_path / "a.ndjson.gz"
        assert c.download_export(op.result["export_id"], artifact) == op.result["size_bytes"]
        copy = c.import_file(artifact, new_name="sync-copy", wait=60)
        assert copy.done and c.collection(copy.result["id"]).points_count == 1500
        assert op.id in {o.id for o in c.iter_operations(kind="export")}
    with httpx.Client(base_url=stack.url) as raw:
        assert raw.get(f"/sessions/{a}").status_code == 200
