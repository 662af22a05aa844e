"""Automatic resubmission for CollectResultsOperator (`max_item_retries`): the Airflow side of engine/resubmit.py.

Each round is collected on the worker; when retryable items remain, the next round is submitted (idempotently,
through its ledger in the output's staging folder) and the task defers on `BatchCompleteTrigger` until that
round's batches end, then resumes in `execute_round_complete`. The resumed task learns which round ended from
the trigger event's `job` (deferral kwargs are not relied on: `dag.test()` drops them) and the round ledgers.
A retried task starts again from attempt 1: collecting is repeatable and every round re-attaches to the batches
it already submitted.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.engine.resubmit import ResubmitRounds, RoundStep
from airflow_batchwork.operators.common import BACKSTOP_MARGIN, parse_time, validate_event
from airflow_batchwork.triggers.batch import BatchCompleteTrigger
from airflow_batchwork.values.credentials import Credentials
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.handle import JobHandle


async def _step(rounds: ResubmitRounds, provider: str, creds: Credentials, attempt: int, job: JobHandle
                ) -> RoundStep:
    async with BatchClient({provider: creds}) as client:
        return await rounds.step(client, attempt, job)


class ResubmitMixin:
    """`max_item_retries` rounds for an operator that has CollectResultsOperator's attributes and `_collect`."""

    def _write_rounds(self, handle: JobHandle, state: str, round_job: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """Collect the job (or the ended round `round_job`) and the rounds after it; defers while a round
        runs. The merged manifest."""
        op: Any = self
        try:
            rounds = ResubmitRounds(handle, op.output_path, max_item_retries=op.max_item_retries,
                                    keep_history=op.keep_history, storage_options=op.storage_options,
                                    prices=op.prices)
        except ConfigurationError as exc:
            raise AirflowFailException(str(exc)) from None  # a retry would not fix it
        hook = op._hook(handle)
        creds = hook.credentials(handle.provider)
        try:  # a round's state files live in its staging folder (the trigger event is not trusted either)
            current = JobHandle.coerce(round_job, state_root=rounds.stage) if round_job else handle
        except ConfigurationError as exc:
            raise AirflowFailException(str(exc)) from None
        attempt = rounds.attempt_of(current)
        while True:
            step = asyncio.run(_step(rounds, handle.provider, creds, attempt, current))
            if step.manifest is not None:
                return step.manifest
            assert step.next_job is not None
            current, attempt = step.next_job, step.attempt
            status = hook.status(current)
            op.log.info("Attempt %d (%s): %s", attempt, ",".join(current.batch_ids), status.progress_line())
            if status.terminal:
                continue
            end_time = max(parse_time(current.submitted_at) + op.timeout, time.time() + 1)
            op.defer(
                trigger=BatchCompleteTrigger(
                    job=current.to_dict(), conn_id=op.conn_id or handle.conn_id,
                    poll_interval=op.poll_interval, end_time=end_time, deferred_at=time.time(),
                ),
                method_name="execute_round_complete",
                kwargs={"state": state},
                timeout=timedelta(seconds=end_time - time.time() + op.poll_interval + BACKSTOP_MARGIN),
            )

    def execute_round_complete(self, context: Context, event: Any = None, state: str | None = None
                               ) -> dict[str, Any]:
        """Resume after a resubmission round's batches ended (the event's `job` is that round)."""
        op: Any = self
        outcome = validate_event(event)
        if outcome["status"] in ("timeout", "error"):
            raise AirflowException(f"resubmission round {outcome['status']}: {outcome.get('message')}")
        handle = op._handle(op.job)
        if state is None:
            state = op._hook(handle).status(handle).state
        manifest: dict[str, Any] = op._collect(handle, state, context, round_job=outcome["job"])
        return manifest
