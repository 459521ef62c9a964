"""Histories recorded from earlier releases (tests/histories/) replay with today's workflows,
so a change that is not deterministic for running operations fails here before it ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from session_service.temporal import discovery
from session_service.temporal.workflows.record import OperationRecord

HERE = Path(__file__).resolve().parent / "histories"
HISTORIES = sorted(p for p in HERE.glob("*.json") if p.name != "workflow_ids.json")
WORKFLOW_IDS: dict[str, str] = json.loads((HERE / "workflow_ids.json").read_text())
KINDS = {"merge", "split", "delete", "import", "export", "cleanup", "offload", "reload"}


def test_every_kind_has_a_recorded_history() -> None:
    assert KINDS <= {p.stem.partition("@")[0] for p in HISTORIES}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=discovery.workflow_classes(),
        data_converter=pydantic_data_converter,
        interceptors=[OperationRecord()],
    )
    workflow_id = WORKFLOW_IDS.get(path.stem, path.stem)
    history = WorkflowHistory.from_json(workflow_id, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
