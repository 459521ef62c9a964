"""Thin, idempotent units of work: each a call or two into the stores.

Activities are methods of classes that receive their clients, so the worker
builds them once. Each method implements a step declared in ``temporal/steps.py``
(``@implements(steps.LOCK_SESSIONS)``), which names it; a test replaces one with a
fake of the same step (``steps.COPY_POINTS.fake(fn)``) to inject a fault.
"""

from session_service.temporal.activities.cold_steps import ColdSteps
from session_service.temporal.activities.index_steps import IndexSteps
from session_service.temporal.activities.point_steps import PointSteps
from session_service.temporal.activities.record_steps import RecordSteps
from session_service.temporal.activities.retention_steps import RetentionSteps
from session_service.temporal.activities.session_steps import SessionSteps
from session_service.temporal.activities.transfer_steps import TransferSteps

__all__ = [
    "ColdSteps",
    "IndexSteps",
    "PointSteps",
    "RecordSteps",
    "RetentionSteps",
    "SessionSteps",
    "TransferSteps",
]
