"""The registry of operation kinds and the declared steps agree with what the worker runs.

Every kind has a workflow the worker registers, with the declared input and result;
every declared step is implemented exactly once by a registered activity, and every
activity implements a declared step. The guards that keep it so (at import, at
worker build) are broken here once each, on purpose.
"""

from __future__ import annotations

import inspect
import typing
import uuid
from typing import Any, cast

import pytest
from temporalio import activity

from session_service.domain.models import SessionModel
from session_service.services.runtime import Runtime
from session_service.stores.database import Postgres
from session_service.temporal import discovery, registry, steps
from session_service.temporal.contracts import (
    LockInput,
    LockResult,
    MergeInput,
    OperationKind,
    PolicyLoad,
    UnlockInput,
)
from session_service.temporal.steps import Step, declared, implemented_by, implements, step_of
from session_service.temporal.worker import _by_step, activities, build_worker

# the activity and workflow names of recorded histories (tests/histories/) never change
KNOWN_STEPS = {
    "archive_sessions", "build_index", "copy_points", "copy_points_by_id", "count_points",
    "create_collection", "create_export_record", "create_session", "delete_artifact",
    "delete_session_row", "delete_session_rows", "discard_export", "discard_session",
    "drop_collection", "drop_collections", "ensure_live", "evaluate_page", "finish_import",
    "finish_merge", "finish_split", "forget_archived", "hold_for_delete", "hold_for_storage",
    "import_points", "load_policy", "lock_sessions", "mark_live", "mark_offloaded",
    "read_import_header", "record_operation_end", "record_operation_start", "remove_points",
    "restore_archived", "sweep_idempotency_keys", "unlock_sessions", "validate_import",
    "verify_offload", "verify_reload", "write_export", "write_offload",
}  # fmt: skip
KNOWN_WORKFLOWS = {
    "MergeWorkflow", "SplitWorkflow", "DeleteWorkflow", "RetentionWorkflow", "ExportWorkflow",
    "ImportWorkflow", "OffloadWorkflow", "ReloadWorkflow", "IndexWorkflow",
}  # fmt: skip


def kind_problems(operations: tuple[registry.OperationSpec[Any, Any], ...]) -> list[str]:
    kinds = [op.kind for op in operations]
    names = [op.name for op in operations]
    problems = [f"kind {k.value} has no entry" for k in OperationKind if k not in kinds]
    problems += [
        f"kind {k.value} has {kinds.count(k)} entries" for k in set(kinds) if kinds.count(k) > 1
    ]
    problems += [f"workflow {n} runs two kinds" for n in set(names) if names.count(n) > 1]
    return problems


def run_types(cls: type) -> tuple[Any, Any]:
    run = cls.run
    hints = typing.get_type_hints(run)
    [param] = list(inspect.signature(run).parameters)[1:]
    return hints[param], hints["return"]


def offline_activities() -> list[Any]:
    """What the worker registers, built without a database or an engine (the activity
    classes only keep their clients)."""
    pg = Postgres(cast(Any, None))  # repositories over no pool: nothing connects
    return activities(pg, cast(Any, None), cast(Any, None))


# the registry as it is


def test_every_kind_has_exactly_one_entry() -> None:
    assert kind_problems(registry.OPERATIONS) == []
    assert {spec.name for spec in registry.WORKFLOWS} == KNOWN_WORKFLOWS
    for kind in OperationKind:
        assert registry.kind_of(registry.operation(kind).name) is kind
    assert registry.kind_of(registry.INDEX.name) is None  # not an operation


def test_every_workflow_runs_its_declared_types() -> None:
    classes = discovery.workflow_classes()
    assert len(classes) == len(registry.WORKFLOWS)
    for spec, cls in zip(registry.WORKFLOWS, classes, strict=True):
        assert getattr(cls, "__temporal_workflow_definition").name == spec.name
        assert run_types(cls) == (spec.input, spec.result), cls


async def test_the_worker_registers_every_workflow_and_step(runtime: Runtime) -> None:
    # on a task queue of its own: the suite's worker polls the service's
    worker = build_worker(
        runtime.temporal,
        f"registry-{uuid.uuid4().hex}",
        runtime.pg,
        runtime.vectors,
        runtime.artifacts,
    )
    config = worker.config()
    workflows = {getattr(c, "__temporal_workflow_definition").name for c in config["workflows"]}
    assert workflows == {spec.name for spec in registry.WORKFLOWS}
    names = [getattr(fn, "__temporal_activity_definition").name for fn in config["activities"]]
    assert sorted(names) == sorted(KNOWN_STEPS)  # each once, none undeclared
    assert {s.name for s in declared()} == KNOWN_STEPS
    assert len(declared()) == len(KNOWN_STEPS)  # no name declared twice


def test_every_step_is_implemented_exactly_once() -> None:
    implementations: dict[str, list[str]] = {}
    for cls in discovery.activity_classes():
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            step = step_of(fn)
            if step is not None:
                implementations.setdefault(step.name, []).append(f"{cls.__name__}.{name}")
            else:  # a raw @activity.defn would be an undeclared activity
                assert not hasattr(fn, "__temporal_activity_definition"), name
    assert {n: len(v) for n, v in implementations.items()} == dict.fromkeys(KNOWN_STEPS, 1)
    # the worker builds one instance of each of those classes, and registers its steps
    built = offline_activities()
    assert {type(fn.__self__) for fn in built} == set(discovery.activity_classes())
    assert sorted(step_of(fn).name for fn in built) == sorted(KNOWN_STEPS)  # type: ignore[union-attr]


def test_implementations_take_and_return_the_declared_types() -> None:
    for fn in offline_activities():
        step = step_of(fn)
        assert step is not None
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        if step.input is None:
            assert params == [], fn
        else:
            assert [hints[p] for p in params] == [step.input], fn
        assert hints["return"] == (type(None) if step.result is None else step.result), fn


def test_search_attributes_are_declared_once() -> None:
    from session_service.cli.embedded_stack import SEARCH_ATTRIBUTES

    assert SEARCH_ATTRIBUTES == {
        "SessionIds": "KeywordList",
        "OperationKind": "Keyword",
        "OwnerId": "Keyword",
    }
    assert [k.name for k in registry.SEARCH_ATTRIBUTES] == list(SEARCH_ATTRIBUTES)


# each guard, broken once


def test_a_kind_without_an_entry_is_found() -> None:
    without_split = tuple(op for op in registry.OPERATIONS if op.kind is not OperationKind.SPLIT)
    assert kind_problems(without_split) == ["kind split has no entry"]
    twice = (*registry.OPERATIONS, registry.MERGE)
    assert kind_problems(twice) == [
        "kind merge has 2 entries",
        "workflow MergeWorkflow runs two kinds",
    ]


def test_a_workflow_missing_from_the_registry_or_from_the_package_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ghost: registry.WorkflowSpec[MergeInput, SessionModel] = registry.WorkflowSpec(
        "GhostWorkflow", MergeInput, SessionModel
    )
    monkeypatch.setattr(registry, "WORKFLOWS", (*registry.WORKFLOWS, ghost))
    with pytest.raises(TypeError, match="without a class: \\['GhostWorkflow'\\]"):
        discovery.workflow_classes()
    monkeypatch.setattr(registry, "WORKFLOWS", registry.OPERATIONS)  # IndexWorkflow undeclared
    with pytest.raises(TypeError, match="not in the registry: \\['IndexWorkflow'\\]"):
        discovery.workflow_classes()


def test_a_workflow_whose_run_disagrees_with_its_entry_is_refused_at_import() -> None:
    # (checked before workflow.defn applies: a local class could not be a workflow anyway)
    with pytest.raises(TypeError, match="declared with input MergeInput"):

        @registry.MERGE.defn
        class WrongInput:
            async def run(self, inp: LockInput) -> SessionModel:
                raise NotImplementedError

    with pytest.raises(TypeError, match="declared with result SessionModel"):

        @registry.MERGE.defn
        class WrongResult:
            async def run(self, inp: MergeInput) -> LockResult:
                raise NotImplementedError


def test_an_implementation_of_the_wrong_types_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match="takes .*UnlockInput.*the step's input is .*LockInput"):

        class WrongInput:
            @implements(steps.LOCK_SESSIONS)
            async def lock(self, inp: UnlockInput) -> LockResult:  # type: ignore[arg-type]
                raise NotImplementedError

    with pytest.raises(TypeError, match="the step's result is .*LockResult"):

        class WrongResult:
            @implements(steps.LOCK_SESSIONS)
            async def lock(self, inp: LockInput) -> None:  # type: ignore[arg-type]
                raise NotImplementedError

    with pytest.raises(TypeError, match="takes no argument"):

        class ArgumentTooMany:
            @implements(steps.LOAD_POLICY)
            async def load(self, inp: LockInput) -> PolicyLoad:  # type: ignore[arg-type]
                raise NotImplementedError

    with pytest.raises(TypeError, match="the step's result is .*LockResult"):

        @steps.LOCK_SESSIONS.fake
        async def fake(inp: LockInput) -> UnlockInput:  # type: ignore[arg-type]
            raise NotImplementedError


def test_the_worker_refuses_a_step_missing_twice_or_undeclared() -> None:
    built = offline_activities()
    with pytest.raises(TypeError, match="steps without an implementation: \\['lock_sessions'\\]"):
        _by_step([fn for fn in built if step_of(fn) is not steps.LOCK_SESSIONS], ())
    with pytest.raises(TypeError, match="step lock_sessions is implemented twice"):
        _by_step([*built, next(fn for fn in built if step_of(fn) is steps.LOCK_SESSIONS)], ())

    @activity.defn(name="lock_sessions")
    async def raw(inp: LockInput) -> LockResult:
        raise NotImplementedError

    with pytest.raises(TypeError, match="implements no declared step"):
        _by_step([*built, raw], ())
    with pytest.raises(TypeError, match="fakes no declared step"):
        _by_step(built, [raw])
    undeclared: Step[LockInput, LockResult] = Step("lock_sessions_v2", LockInput, LockResult)

    async def unknown(inp: LockInput) -> LockResult:
        raise NotImplementedError

    with pytest.raises(TypeError, match="fakes no declared step"):
        _by_step(built, [undeclared.fake(unknown)])

    @steps.LOCK_SESSIONS.fake
    async def fake(inp: LockInput) -> LockResult:
        raise NotImplementedError

    assert _by_step(built, [fake])["lock_sessions"] is fake  # a fake replaces its step


def test_implemented_by_lists_the_bound_step_methods() -> None:
    class Two:
        @implements(steps.UNLOCK_SESSIONS)
        async def unlock(self, inp: UnlockInput) -> None:
            return None

        async def helper(self) -> None:
            return None

    two = Two()
    assert implemented_by(two) == [two.unlock]


def test_workflow_modules_import_no_store_metrics_or_http_library() -> None:
    """What workflows import is loaded into every sandbox: payload types and the step and
    registry declarations, no engine, database, metrics or HTTP library."""
    import subprocess
    import sys

    banned = [
        "prometheus_client", "httpx", "starlette", "fastapi", "asyncpg", "qdrant_client",
        "qdrant_edge", "numpy", "session_service.stores", "session_service.temporal.activities",
    ]  # fmt: skip
    code = (
        "import sys, pkgutil, importlib, session_service.temporal.workflows as w\n"
        "for m in pkgutil.iter_modules(w.__path__, 'session_service.temporal.workflows.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(sorted(b for b in {banned!r} if b in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
