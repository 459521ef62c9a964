"""Observability: logs, metrics and traces. Used by every layer; imports none of them."""
