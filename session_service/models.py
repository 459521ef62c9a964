"""The old import path of the API models, kept for client code written before the layered
layout: the models live in :mod:`session_service.domain.models` (import them from there)."""

from session_service.domain.models import *  # noqa: F403
