"""The search index of new collections, built after the operation that filled them.

Started by merge, split and import as an abandoned child once they have
succeeded: their answer and their locks never wait for an HNSW build, queries
scan until the index is there, and a crash resumes the build (it is durable
like any workflow). Not an operation of the API: operators see it in the
Temporal UI as ``index-<operation id>``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from session_service.temporal import registry, steps
    from session_service.temporal.contracts import IndexInput, IndexResult


@registry.INDEX.defn
class IndexWorkflow:
    @workflow.run
    async def run(self, inp: IndexInput) -> IndexResult:
        out = IndexResult()
        for collection in inp.collections:
            workflow.set_current_details(f"building the search index of {collection}")
            outcome = await workflow.execute_activity(
                steps.BUILD_INDEX.name,
                collection,
                result_type=steps.BUILD_INDEX.result,
                start_to_close_timeout=timedelta(hours=6),
                heartbeat_timeout=inp.options.heartbeat_timeout,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=5),
                    maximum_interval=timedelta(minutes=5),
                    maximum_attempts=inp.options.maximum_attempts,
                ),
            )
            out.collections.append(outcome)
        built = sum(1 for c in out.collections if c.built)
        workflow.set_current_details(f"done: {built} of {len(out.collections)} indexed")
        return out
