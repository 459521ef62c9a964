"""Everything Temporal: contracts of the steps, the registry of operation kinds, the
workflows (deterministic, no I/O), the activities (the I/O), the worker and the client
connection."""
