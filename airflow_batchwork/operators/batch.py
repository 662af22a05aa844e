"""SubmitBatchOperator and CollectResultsOperator: submit a job, then land its results as Parquet.

The operators only orchestrate; validation, wire formats and Parquet writing live in the core.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context, XComArg, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_batchwork.assets import ResultsAssetArg, attach_event_extra, results_alias, results_outlet
from airflow_batchwork.engine.cache import CACHE_MODES, ResponseCache
from airflow_batchwork.engine.ledger import SubmitLedger
from airflow_batchwork.engine.preflight import check_output_url, check_template, is_templated, probe_writable
from airflow_batchwork.engine.resubmit import ResubmitRounds
from airflow_batchwork.engine.sources import read_requests
from airflow_batchwork.hooks.batchwork import BatchworkHook
from airflow_batchwork.hooks.task_state import ledger_for, task_identity
from airflow_batchwork.links import BatchConsoleLink, persist_batch_link
from airflow_batchwork.operators.common import BACKSTOP_MARGIN, parse_time, validate_event
from airflow_batchwork.operators.resubmit import ResubmitMixin
from airflow_batchwork.triggers.batch import BatchCompleteTrigger
from airflow_batchwork.triggers.webhook import WebhookBatchCompleteTrigger
from airflow_batchwork.values.errors import ConfigurationError, ProviderAPIError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.refs import parse_model
from airflow_batchwork.values.structured import to_json_schema

DEFAULT_TIMEOUT = 24 * 3600


def completion_trigger(*, wake_on_webhook: bool, **kwargs: Any) -> BatchCompleteTrigger:
    """The trigger to wait on: polling, or polling cut short by the webhook intake (`wake_on_webhook`)."""
    return WebhookBatchCompleteTrigger(**kwargs) if wake_on_webhook else BatchCompleteTrigger(**kwargs)


def _is_templated(value: object) -> bool:
    return is_templated(value)


def _check_seconds(name: str, value: object, fix: str) -> None:
    """A positive, finite number of seconds (found by fuzzing: None, text, NaN, True slipped through)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value == float("inf"):
        raise ConfigurationError(name, f"{value!r:.60} is not a finite number of seconds", fix)
    if value <= 0:
        raise ConfigurationError(name, f"{value} is not positive", fix)


def check_reuse_options(*, dedup: object = False, cache: object = None, cache_mode: object = "read_write",
                        cache_ttl: object = None) -> None:
    """The pay-once options (docs/pay-once.md), checked when the DAG is parsed."""
    if not isinstance(dedup, bool):
        raise ConfigurationError("dedup", f"{dedup!r:.60} is not True or False", "pass dedup=True or dedup=False")
    if cache is not None and not _is_templated(cache):
        ResponseCache.coerce(cache, mode=str(cache_mode), ttl=cache_ttl)  # type: ignore[arg-type]
    elif cache_mode not in CACHE_MODES:
        raise ConfigurationError("cache_mode", f"{cache_mode!r:.60} is not a cache mode",
                                 f"use one of {', '.join(CACHE_MODES)}")


def _fail_fast(exc: ConfigurationError | ProviderAPIError) -> AirflowFailException:
    # Bad input will not fix itself: fail without retries.
    return AirflowFailException(str(exc))


@contextmanager
def _failing_fast(writing: str | None = None) -> Iterator[None]:
    """Turn errors that a retry cannot fix (bad input, credentials, unwritable destination, a 400/401/403/404
    answer) into `AirflowFailException`, so the task fails at once instead of retrying. `writing`: the URL
    being written, whose `PermissionError` is such an error too."""
    try:
        yield
    except ConfigurationError as exc:
        raise _fail_fast(exc) from None
    except ProviderAPIError as exc:
        if exc.permanent:
            raise _fail_fast(exc) from None
        raise
    except PermissionError as exc:
        if writing is None:
            raise
        raise AirflowFailException(f"output_path: cannot write to {writing!r} ({exc}). Fix: give a location the "
                                   "workers can write to, or fix its permissions") from None


def _check_output_path(output_path: str | None, field: str = "output_path") -> None:
    """At DAG parse time: a literal URL needs an installed filesystem, a templated one must parse."""
    if output_path is None:
        return
    if is_templated(output_path):
        check_template(output_path, field)
    else:
        check_output_url(output_path, field)


class _FailFastTemplates:
    """A template that cannot render (undefined variable, bad filter) fails the task without retries,
    naming the field: rendering it again will not help."""

    template_fields: Sequence[str]

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        import jinja2

        try:
            super().render_template_fields(context, jinja_env)  # type: ignore[misc]
        except jinja2.TemplateError as exc:
            field = next((name for name in self.template_fields
                          if isinstance(getattr(self, name, None), str) and is_templated(getattr(self, name))),
                         "template")
            raise AirflowFailException(
                f"{field}: the template could not be rendered ({type(exc).__name__}: {exc}). Fix: use only "
                "variables Airflow provides (e.g. {{ ds }}, {{ var.value.name }}) or define them in params"
            ) from None


def _console_link(operator: Any, context: Context, handle: JobHandle, hook: BatchworkHook) -> None:
    """Remember (for the extra link) and push the console URL, only for batches on the provider's own API."""
    operator._console_url = ""
    try:
        base_url = hook.credentials(handle.provider).base_url
    except ConfigurationError:
        return
    operator._console_url = persist_batch_link(context, handle, base_url) or ""


def _state_root(state_path: str | None) -> str | None:
    """The configured state store: the operator's `state_path`, else `[batchwork] state_path`."""
    return state_path or conf.get("batchwork", "state_path", fallback=None)


class SubmitBatchOperator(_FailFastTemplates, BaseOperator):
    """Validate and submit a batch job; return its handle (XCom `return_value`) and push `batch_ids`.

    :param model: model reference, e.g. ``"openai/gpt-4o-mini"``, ``"anthropic/claude-sonnet-4-5"``
        (templated).
    :param requests: list of request dicts (AI SDK `generateText` fields plus ``custom_id``), or an
        upstream task's output. Not Jinja-rendered, so prompts may contain ``{{``.
    :param requests_path: a ``.jsonl`` or ``.parquet`` file on any fsspec URL, read streaming
        (templated). Give exactly one of ``requests`` and ``requests_path``.
    :param columns: for ``requests_path``: request field -> source column, e.g. ``{"prompt": "text"}``.
    :param passthrough_columns: for ``requests_path``: source columns copied into the result rows (joined
        by custom_id at collect), so a backfill can join back without another lookup. Needs a state store
        with files (``state_path``).
    :param defaults: request fields applied where a request leaves them unset (templated).
    :param conn_id: a ``batchwork`` connection; default ``batchwork_<provider>``, else env vars.
    :param wait_for_completion: defer on :class:`BatchCompleteTrigger` until every batch is terminal.
    :param timeout: seconds the job may take; past it the batches are cancelled and the task fails.
    :param wake_on_webhook: with ``wait_for_completion``, also wake when the webhook intake reports the
        batch ended (OpenAI, Gemini; see docs/events.md); polling stays as the fallback.
    :param state_path: fsspec folder for the submission state (templated); default the Airflow config
        ``[batchwork] state_path``, else Airflow 3.3's task state store.
    :param on_changed_input: a retry whose input differs from what was submitted: ``"resubmit"``
        (cancel the stale batches, submit anew) or ``"fail"``.
    :param on_orphaned_intent: an earlier try may have created a batch whose id was lost and the provider
        cannot be searched for it: ``"resubmit"`` (may pay twice) or ``"fail"``.
    :param output_schema: structured output for every request: a JSON Schema dict or a pydantic model class
        (a request's own ``output_schema`` wins); see docs/beyond.md.
    :param max_cost_usd: refuse the job, before any API call, when its estimated cost is higher.
    :param prices: price table overrides (a dict, or a YAML/JSON file URL; templated) for ``max_cost_usd``,
        the context window check and the model-id warning.
    :param output_path: the URL the results will be collected to (templated; the same value as the collect
        task's). Optional: when given, the submit writes and removes a small probe file there before any paid
        call, so an unwritable destination or an undefined template variable fails before the batch exists.
    :param dedup: send requests with the same provider-facing body once; each custom_id keeps its row
        (``dedup_of`` names the request whose answer it shares). Needs ``state_path``; see docs/pay-once.md.
    :param cache: a response cache folder on any fsspec URL (templated): requests it has an answer for are
        not sent (rows with ``cached = true``, ``cost_usd = 0``); give the same ``cache`` to the collect task
        to store new answers. Off by default; needs ``state_path``.
    :param cache_mode: ``"read_write"`` (default), ``"read_only"`` or ``"refresh"`` (ask again, replace).
    :param cache_ttl: seconds after which a cached answer is no longer used (default: never).
    :param incremental: the folder of a keyed dataset (templated; the ``output_path`` of a collect task with
        ``merge=True``): only requests whose custom_id is new, whose input changed, or whose row had not
        succeeded are sent. Needs ``state_path``; see docs/pay-once.md.
    :param cache_prefix: Anthropic prompt caching: mark every request's system prompt with ``cache_control``
        (``True``/``"1h"``, or ``"5m"``); when the prefix is long enough the first request is sent alone first
        and the rest follow when it ended (at most ``prime_timeout`` seconds later), reading the cache. On
        Gemini, a long system prompt shared by every request goes in one ``cachedContents`` resource that the
        items name (deleted at collect). On OpenAI, Groq and xAI, which cache on their own, it only adds the
        cache token columns.

    Bad input (model, requests, defaults, credentials) fails the task before any API call, without
    retries. A job over the provider's limits is split into several batches under one handle. Retries are
    idempotent: an intent is recorded before each paid call and the batch id right after, under an
    identity made of dag, task, run and map index; a retried task re-attaches to its batches.
    """

    template_fields: Sequence[str] = ("model", "requests_path", "defaults", "conn_id", "metadata", "state_path",
                                      "prices", "output_path", "cache", "incremental")
    template_fields_renderers = {"defaults": "json", "metadata": "json"}
    ui_color = "#e8f1ff"
    operator_extra_links = (BatchConsoleLink(),)

    def __init__(
        self,
        *,
        model: str,
        requests: list[dict[str, Any]] | XComArg | None = None,
        requests_path: str | None = None,
        columns: Mapping[str, str] | None = None,
        passthrough_columns: Sequence[str] | None = None,
        defaults: dict[str, Any] | None = None,
        conn_id: str | None = None,
        wait_for_completion: bool = False,
        poll_interval: float = 60,
        timeout: float = DEFAULT_TIMEOUT,
        metadata: dict[str, str] | None = None,
        limits: dict[str, int] | None = None,
        storage_options: dict[str, Any] | None = None,
        cancel_on_kill: bool = True,
        wake_on_webhook: bool = False,
        state_path: str | None = None,
        on_changed_input: str = "resubmit",
        on_orphaned_intent: str = "resubmit",
        output_schema: Any = None,
        max_cost_usd: float | None = None,
        prices: dict[str, Any] | str | None = None,
        output_path: str | None = None,
        dedup: bool = False,
        cache: str | None = None,
        cache_mode: str = "read_write",
        cache_ttl: float | None = None,
        incremental: str | None = None,
        cache_prefix: bool | str | None = None,
        prime_timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if cache_prefix not in (None, True, False, "5m", "1h"):
            raise ConfigurationError("cache_prefix", f"{cache_prefix!r:.60} is not an option",
                                     'use True (one-hour cache), "1h" or "5m"')
        if isinstance(prime_timeout, bool) or not isinstance(prime_timeout, int | float) or not prime_timeout > 0:
            raise ConfigurationError("prime_timeout", f"{prime_timeout!r:.60} is not a positive number of seconds",
                                     "use e.g. 3600")
        self.cache_prefix = cache_prefix
        self.prime_timeout = prime_timeout
        check_reuse_options(dedup=dedup, cache=cache, cache_mode=cache_mode, cache_ttl=cache_ttl)
        if incremental is not None and not _is_templated(incremental):
            check_output_url(incremental, "incremental")
            if not incremental.endswith("/"):
                raise ConfigurationError("incremental", f"{incremental!r:.120} is not a folder URL",
                                         "give the output_path of the collect task (merge=True), ending in '/'")
        self.incremental = incremental
        self.dedup = dedup
        self.cache = cache
        self.cache_mode = cache_mode
        self.cache_ttl = cache_ttl
        self.output_schema = to_json_schema(output_schema) if output_schema is not None else None
        if isinstance(requests, Mapping | str | bytes):
            raise ConfigurationError("requests", f"expected a list of request dicts, got a {type(requests).__name__}",
                                     'wrap it in a list, e.g. requests=[{"custom_id": "a", "prompt": "…"}]')
        _check_output_path(output_path)
        self.output_path = output_path
        self.max_cost_usd = max_cost_usd
        self.prices = prices
        for name, value in (("on_changed_input", on_changed_input), ("on_orphaned_intent", on_orphaned_intent)):
            if value not in ("resubmit", "fail"):
                raise ConfigurationError(name, f"{value!r} is not an option", "use 'resubmit' or 'fail'")
        if (requests is None) == (requests_path is None):
            raise ConfigurationError(
                "requests", "give exactly one of requests and requests_path",
                "pass the requests inline (requests=[...]) or as a file URL (requests_path='s3://…/in.jsonl')",
            )
        if not _is_templated(model):
            parse_model(model)
        _check_seconds("poll_interval", poll_interval, "use e.g. 60 (seconds)")
        _check_seconds("timeout", timeout, "use e.g. 86400 (seconds)")
        self.model = model
        self.requests = requests
        if isinstance(requests, XComArg):
            XComArg.apply_upstream_relationship(self, requests)
        self.requests_path = requests_path
        self.columns = dict(columns) if columns else None
        if passthrough_columns and requests_path is None:
            raise ConfigurationError("passthrough_columns", "works only with requests_path",
                                     "read the requests from a file, or put the values in custom_id")
        self.passthrough_columns = list(passthrough_columns or [])
        self.defaults = defaults
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.metadata = metadata
        self.limits = limits
        self.storage_options = storage_options
        self.cancel_on_kill = cancel_on_kill
        self.wake_on_webhook = wake_on_webhook
        self.state_path = state_path
        self.on_changed_input = on_changed_input
        self.on_orphaned_intent = on_orphaned_intent
        self._job: JobHandle | None = None

    def _requests(self, context: Context) -> Any:
        if self.requests_path is not None:
            return read_requests(self.requests_path, columns=self.columns, passthrough=self.passthrough_columns,
                                 storage_options=self.storage_options)
        requests = self.requests
        if isinstance(requests, XComArg):
            requests = requests.resolve(context)
        return requests

    def _state_root(self) -> str | None:
        return _state_root(self.state_path)

    def _ledger(self, context: Context) -> tuple[str, SubmitLedger | None]:
        ti = context["ti"]
        identity = task_identity(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
        state_path = self._state_root()
        ledger = ledger_for(context, identity, state_path, self.storage_options)
        if ledger is None:
            self.log.warning("No submission state store (set state_path or [batchwork] state_path): "
                             "a retry of this task cannot re-attach and would submit again")
        return identity, ledger

    def execute(self, context: Context) -> dict[str, Any]:
        self._console_url = ""
        with _failing_fast():
            ref = parse_model(self.model)
            hook = BatchworkHook(conn_id=self.conn_id)
            if self.output_path:
                probe_writable(self.output_path, storage_options=self.storage_options)
            identity, ledger = self._ledger(context)
            job = hook.submit(
                self.model, self._requests(context), provider=ref.provider, defaults=self.defaults,
                metadata=self.metadata, limits=self.limits, ledger=ledger, identity=identity,
                on_changed_input=self.on_changed_input, on_orphaned_intent=self.on_orphaned_intent,
                output_schema=self.output_schema, max_cost_usd=self.max_cost_usd, prices=self.prices,
                dedup=self.dedup, cache=self.cache, cache_mode=self.cache_mode, cache_ttl=self.cache_ttl,
                cache_storage_options=self.storage_options, incremental=self.incremental,
                incremental_storage_options=self.storage_options, cache_prefix=self.cache_prefix,
                prime_timeout=self.prime_timeout,
            )
        self._job = job
        if job.batches:
            self.log.info("Submitted %s job: %d requests in batches %s", job.provider, job.request_count,
                          ", ".join(job.batch_ids))
        else:
            self.log.info("All %d answers of this %s job are reused (cache/dedup): no batch was created",
                          job.request_count, job.provider)
        context["ti"].xcom_push(key="batch_ids", value=job.batch_ids)
        _console_link(self, context, job, hook)
        if self.wait_for_completion:
            self.defer(
                trigger=completion_trigger(
                    job=job.to_dict(), conn_id=self.conn_id, poll_interval=self.poll_interval,
                    end_time=time.time() + self.timeout, wake_on_webhook=self.wake_on_webhook,
                    deferred_at=time.time(),
                ),
                method_name="execute_complete",
                kwargs={"job": job.to_dict()},
                timeout=timedelta(seconds=self.timeout + self.poll_interval + BACKSTOP_MARGIN),
            )
        return job.to_dict()

    def execute_complete(self, context: Context, event: Any = None, job: dict[str, Any] | None = None
                         ) -> dict[str, Any]:
        self._console_url = ""
        outcome = validate_event(event)
        try:
            handle = JobHandle.coerce(job or outcome.get("job") or {}, state_root=self._state_root())
        except ConfigurationError as exc:
            raise _fail_fast(exc) from None
        _console_link(self, context, handle, BatchworkHook(conn_id=self.conn_id))
        status = outcome["status"]
        if status in ("error", "timeout", "failed"):
            raise AirflowException(f"batch job {status}: {outcome.get('message')}")
        self.log.info("Job ended %s: %s", status, outcome.get("message"))
        return handle.to_dict()

    def on_kill(self) -> None:
        if self._job is not None and self.cancel_on_kill:
            BatchworkHook(conn_id=self.conn_id).cancel(self._job)


class CollectResultsOperator(_FailFastTemplates, ResubmitMixin, BaseOperator):
    """Wait for a job (deferring if it is still running), then write one Parquet row per request.

    :param job: the job handle: ``submit.output``, a dict, or Jinja rendering to one (templated).
    :param output_path: any fsspec URL (templated, e.g. ``s3://bucket/evals/{{ ds }}/``). A URL ending
        in ``/`` is a folder that gets one ``part-NNNNN.parquet`` per provider batch; otherwise one file.
    :param wake_on_webhook: wake when the webhook intake reports the batch ended (OpenAI, Gemini), not only at
        the next poll; give the task ``inlets=[batch_completions(provider)]`` (see docs/events.md).
    :param fail_on_error: fail the task, after the file is written, when any item errored, expired or
        was canceled.
    :param timeout: seconds from the job's submission after which the batches are cancelled.
    :param results_asset: the outlet announcing new results (event ``extra``: counts, rows, cost): an
        ``Asset``, ``AssetAlias`` or static URI; default ``Asset(output_path)``, or for a templated
        ``output_path`` the alias ``batchwork-results:<dag_id>.<task_id>``; ``False`` for none.
    :param max_item_retries: resubmit items that expired or failed with a retryable error (rate limit, server
        error, timeout, overload) up to this many times, deferring while each round runs; the dataset keeps
        one row per custom_id, from its last ``attempt``. Needs the job submitted with ``state_path``.
    :param keep_history: with ``max_item_retries``: keep the replaced rows of earlier attempts in a Parquet
        file (``True``: next to the output, see the manifest's ``history_path``; or a URL).
    :param prices: price table overrides for the ``cost_usd`` column (a dict, or a YAML/JSON file URL;
        templated).
    :param cache: the response cache folder (templated) to store this job's new successful answers in,
        atomically after the dataset is written; ``cache_mode="read_only"`` stores nothing.
    :param state_path: the state store the job was submitted with (templated); default the Airflow config
        ``[batchwork] state_path``. A handle whose state files (``ids_url``) lie elsewhere is refused before
        any API call (the handle comes from XCom, which users can write).
    :param merge: ``output_path`` is a keyed dataset folder: this job's rows replace those with the same
        custom_id, the others stay, atomically; the manifest's ``incremental`` entry counts new, changed and
        unchanged rows (the job must be submitted with ``incremental=`` the same folder).

    Returns a manifest ``{path, files, rows, counts, provider, model, batch_ids}``. Files are written
    under a temporary name and moved into place, so a retry overwrites, never appends.
    """

    template_fields: Sequence[str] = ("job", "output_path", "conn_id", "prices", "cache", "state_path")
    ui_color = "#eafbea"
    operator_extra_links = (BatchConsoleLink(),)

    def __init__(
        self,
        *,
        job: dict[str, Any] | XComArg | str,
        output_path: str,
        conn_id: str | None = None,
        poll_interval: float = 60,
        timeout: float = DEFAULT_TIMEOUT,
        fail_on_error: bool = False,
        wake_on_webhook: bool = False,
        storage_options: dict[str, Any] | None = None,
        results_asset: ResultsAssetArg = None,
        max_item_retries: int = 0,
        keep_history: bool | str = False,
        prices: dict[str, Any] | str | None = None,
        cache: str | None = None,
        cache_mode: str = "read_write",
        merge: bool = False,
        state_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.state_path = state_path
        if not output_path or not isinstance(output_path, str):
            raise ConfigurationError("output_path", "is empty" if not output_path else
                                     f"a {type(output_path).__name__} is not a URL",
                                     "give a URL such as s3://bucket/results/")
        _check_seconds("poll_interval", poll_interval, "use e.g. 60 (seconds)")
        _check_seconds("timeout", timeout, "use e.g. 86400 (seconds)")
        check_reuse_options(cache=cache, cache_mode=cache_mode)
        if not isinstance(merge, bool):
            raise ConfigurationError("merge", f"{merge!r:.60} is not True or False", "pass merge=True or merge=False")
        if merge and max_item_retries:
            raise ConfigurationError("merge", "is not supported together with max_item_retries yet",
                                     "drop max_item_retries (the next incremental run sends the rows that failed "
                                     "again), or collect without merge=True")
        if merge and not (_is_templated(output_path) or str(output_path).endswith("/")):
            raise ConfigurationError("output_path", f"{output_path!r:.120} is not a folder URL",
                                     "a merged dataset is a folder: end output_path with '/'")
        self.merge = merge
        if cache is not None and max_item_retries:
            raise ConfigurationError("cache", "is not supported together with max_item_retries yet",
                                     "drop max_item_retries, or collect without cache= (answers then stay uncached)")
        self.cache = cache
        self.cache_mode = cache_mode
        _check_output_path(output_path)
        self.job = job
        self.output_path = output_path
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.fail_on_error = fail_on_error
        self.wake_on_webhook = wake_on_webhook
        self.storage_options = storage_options
        if isinstance(max_item_retries, bool) or not isinstance(max_item_retries, int) or max_item_retries < 0:
            raise ConfigurationError("max_item_retries", f"{max_item_retries!r} is not a whole number >= 0",
                                     "use e.g. max_item_retries=2")
        self.max_item_retries = max_item_retries
        self.keep_history = keep_history
        self.prices = prices
        # Outlets are resolved at parse time: a templated output_path publishes through an AssetAlias.
        self.results_outlet = results_outlet(output_path, results_asset, dag_id=self.dag_id, task_id=self.task_id)
        if self.results_outlet is not None and self.results_outlet not in self.outlets:
            self.outlets = [*self.outlets, self.results_outlet]

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Like ``BaseOperator.partial``, but the results outlet is declared now, at parse time.

        A mapped task's ``__init__`` runs only on the worker, so without this the serialized DAG has no
        outlet and the first mapped task to finish would create the AssetAlias at run time (several racing
        into a unique violation on a fresh DB). The outlet is :func:`mapped_results_outlet`'s.
        """
        outlet = mapped_results_outlet(kwargs)
        if outlet is not None:
            kwargs["results_asset"] = outlet
            outlets = list(kwargs.get("outlets") or [])
            kwargs["outlets"] = outlets if outlet in outlets else [*outlets, outlet]
        return super().partial(**kwargs)

    def _handle(self, job: Any) -> JobHandle:
        try:
            return JobHandle.coerce(job, state_root=_state_root(self.state_path))
        except ConfigurationError as exc:
            raise _fail_fast(exc) from None

    def _hook(self, handle: JobHandle) -> BatchworkHook:
        return BatchworkHook(conn_id=self.conn_id or handle.conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        self._console_url = ""
        handle = self._handle(self.job)
        with _failing_fast():
            if self.max_item_retries:  # refuses a job it cannot resubmit (e.g. one submitted with dedup)
                ResubmitRounds(handle, self.output_path, max_item_retries=self.max_item_retries,
                               storage_options=self.storage_options)
            probe_writable(self.output_path, storage_options=self.storage_options)
            hook = self._hook(handle)
            _console_link(self, context, handle, hook)
            status = hook.status(handle)
        self.log.info("Job %s: %s", ",".join(handle.batch_ids), status.progress_line())
        if status.terminal:
            return self._collect(handle, status.state, context)
        submitted = parse_time(handle.submitted_at)
        end_time = max(submitted + self.timeout, time.time() + 1)
        self.defer(
            trigger=completion_trigger(
                job=handle.to_dict(), conn_id=self.conn_id or handle.conn_id,
                poll_interval=self.poll_interval, end_time=end_time, wake_on_webhook=self.wake_on_webhook,
                deferred_at=time.time(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=end_time - time.time() + self.poll_interval + BACKSTOP_MARGIN),
        )
        raise AssertionError("defer() returns only by raising")  # pragma: no cover

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        self._console_url = ""
        outcome = validate_event(event)
        handle = self._handle(self.job)
        with _failing_fast():
            _console_link(self, context, handle, self._hook(handle))
        status = outcome["status"]
        if status in ("timeout", "error"):
            raise AirflowException(f"batch job {status}: {outcome.get('message')}")
        return self._collect(handle, status, context)

    def _collect(self, handle: JobHandle, state: str, context: Context, **resume: Any) -> dict[str, Any]:
        with _failing_fast(writing=self.output_path):
            if self.max_item_retries:
                manifest = self._write_rounds(handle, state, **resume)
            else:
                manifest = self._hook(handle).write_parquet(handle, self.output_path,
                                                            storage_options=self.storage_options, prices=self.prices,
                                                            cache=self.cache, cache_mode=self.cache_mode,
                                                            cache_storage_options=self.storage_options,
                                                            merge=self.merge)
        manifest["state"] = state
        attach_event_extra(context, self.results_outlet, manifest)
        self.log.info("Wrote %d rows to %s: %s (cost_usd: %s)", manifest["rows"], manifest["path"],
                      manifest["counts"], manifest.get("cost_usd"))
        if state == "failed":
            raise AirflowException(f"the provider rejected the job (state failed); {manifest['rows']} rows "
                                   f"written to {manifest['path']}")
        bad = {k: v for k, v in manifest["counts"].items() if k != "succeeded" and v}
        if self.fail_on_error and bad:
            raise AirflowException(f"{sum(bad.values())} items did not succeed ({bad}); results at {manifest['path']}")
        return manifest


def mapped_results_outlet(partial_kwargs: Mapping[str, Any]) -> Any:
    """The outlet of a mapped collect, from its ``partial()`` arguments (``None``: no outlet, or no DAG yet).

    An explicit ``results_asset`` (Asset, alias, URI) is used as is; a static ``output_path`` given to
    ``partial()`` gives ``Asset(output_path)``; otherwise (the path is templated or mapped) every map index
    publishes its rendered path through the alias ``batchwork-results:<dag_id>.<task_id>``.
    """
    from airflow.sdk.definitions._internal.contextmanager import DagContext, TaskGroupContext

    choice = partial_kwargs.get("results_asset")
    output_path = partial_kwargs.get("output_path")
    if choice is False:
        return None
    if choice is not None or (isinstance(output_path, str) and not _is_templated(output_path)):
        return results_outlet(str(output_path or ""), choice, dag_id="", task_id="")
    dag = partial_kwargs.get("dag") or DagContext.get_current()
    if dag is None:
        return None  # no DAG to name the alias after: __init__ derives the outlet at run time, as before
    group = partial_kwargs.get("task_group") or TaskGroupContext.get_current(dag)
    task_id = str(partial_kwargs["task_id"])
    return results_alias(dag.dag_id, group.child_id(task_id) if group else task_id)
