"""Finding the classes the worker registers: every workflow class of
``temporal/workflows`` and every activity class of ``temporal/activities``, checked
against the registry (a class it doesn't declare, or a declared one without a class, is
an error at start, not at run time).

Apart from the registry because it imports the workflow and activity packages: the
registry itself is imported by workflow code in the sandbox and must stay name-only.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

from session_service.temporal import activities, registry, workflows
from session_service.temporal.steps import step_of


def _members(package: ModuleType) -> list[Any]:
    """Every top-level class of every module of ``package``, each module imported."""
    found: list[Any] = []
    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(info.name)
        found += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__
        ]
    return found


def workflow_classes() -> list[type]:
    """The workflow classes of ``session_service.temporal.workflows``: exactly one per entry of
    :data:`registry.WORKFLOWS`, and none that isn't declared here."""
    by_name: dict[str, list[type]] = {}
    for cls in _members(workflows):
        defn = getattr(cls, "__temporal_workflow_definition", None)
        if defn is not None:
            by_name.setdefault(defn.name, []).append(cls)
    declared = {spec.name for spec in registry.WORKFLOWS}
    if unknown := sorted(set(by_name) - declared):
        raise TypeError(f"workflows not in the registry: {unknown}")
    if missing := sorted(declared - set(by_name)):
        raise TypeError(f"registered workflows without a class: {missing}")
    if twice := sorted(name for name, classes in by_name.items() if len(classes) > 1):
        raise TypeError(f"workflows defined more than once: {twice}")
    return [by_name[spec.name][0] for spec in registry.WORKFLOWS]


def activity_classes() -> list[type]:
    """The classes of ``session_service.temporal.activities`` whose methods implement steps (the
    worker builds one of each and registers those methods)."""
    return [
        cls
        for cls in _members(activities)
        if any(step_of(m) for _, m in inspect.getmembers(cls, inspect.isfunction))
    ]
