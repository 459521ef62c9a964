"""Thin, idempotent units of work: each a call or two into the stores.

Activities are methods of classes that receive their clients, so the worker
builds them once. Each method implements a step declared in ``temporal/steps.py``
(``@implements(steps.LOCK_SESSIONS)``), which names it; a test replaces one with a
fake of the same step (``steps.COPY_POINTS.fake(fn)``) to inject a fault.
"""

from session_service.activities.cold import ColdSteps
from session_service.activities.index import IndexSteps
from session_service.activities.points import PointSteps
from session_service.activities.record import RecordSteps
from session_service.activities.retention import RetentionSteps
from session_service.activities.sessions import SessionSteps
from session_service.activities.transfer import TransferSteps

__all__ = [
    "ColdSteps",
    "IndexSteps",
    "PointSteps",
    "RecordSteps",
    "RetentionSteps",
    "SessionSteps",
    "TransferSteps",
]
