"""One module per operation. Deterministic orchestration only: no I/O, no clocks, no random.

Each workflow class binds itself to its entry in ``temporal/registry.py``
(``@registry.MERGE.defn``); the worker finds them with ``discovery.workflow_classes()``.
"""
