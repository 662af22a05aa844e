"""Optional bridge: batchwork's seven providers as Airflow common-ai ``BatchAdapter`` s for ``@task.llm_batch``.

Loaded only through the entry-point group ``airflow.providers.common.ai.batch_adapters`` when
``apache-airflow-providers-common-ai`` (>= 1.0, experimental API) is installed; batchwork never imports it.
One adapter per provider, under its own model prefix, because common-ai hands an adapter nothing but
``api_key``/``base_url`` and later only a batch id, so the provider must be known from the prefix alone:

    @task.llm_batch(model_id="batchwork-anthropic:claude-haiku-4-5", llm_conn_id="batchwork_anthropic", ...)

Prefixes are ``batchwork-<provider>``: the bare ``openai``/``anthropic`` prefixes belong to common-ai's
built-in adapters, which take precedence over entry points. Limits of the bridge (see docs/events.md):
the provider's default endpoint only (chat, or Gemini generateContent), no extra headers from the
connection, one provider batch per task (a job over the provider's limits is refused; split it with
``.expand()``), and orphan lookup where the provider stores batch metadata (OpenAI-compatible ones).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from airflow.providers.common.ai.batch.base import (
    BatchAdapter,
    BatchRequest,
    BatchState,
    ExtractedOutput,
    RawResultItem,
    SubmitResult,
)
from airflow.providers.common.ai.exceptions import LLMBatchInputError, LLMBatchLimitExceededError

from airflow_batchwork.adapters import ADAPTERS, adapter_class
from airflow_batchwork.adapters.base import ProviderAdapter
from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.engine.submission import prepare_job
from airflow_batchwork.values.credentials import Credentials, credentials_from_env
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.refs import ModelRef, parse_model
from airflow_batchwork.values.status import ItemResult

T = TypeVar("T")

_STATES = {"completed": "completed", "failed": "failed", "expired": "expired", "cancelled": "cancelled"}
_ITEM_STATUS = {"succeeded": "success", "errored": "errored", "expired": "expired", "canceled": "cancelled",
                "invalid_output": "errored", "missing": "errored"}
# common-ai request params that are batchwork request fields; anything else goes to provider_options.
_PARAMS = ("temperature", "top_p", "top_k", "stop_sequences", "seed", "presence_penalty", "frequency_penalty")
KEY_TAG, FINGERPRINT_TAG = "airflow_batch_key", "airflow_input_fp"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code (common-ai calls adapters synchronously)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside a running loop: use a private thread so that loop is not blocked re-entrantly.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _BatchworkAdapter(BatchAdapter):
    """Common-ai adapter over one batchwork provider adapter."""

    provider: ClassVar[str]
    conn_types: ClassVar[frozenset[str]] = frozenset({"batchwork", "pydanticai"})
    allows_per_request_model: ClassVar[bool] = False

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, client: Any | None = None) -> None:
        super().__init__(api_key=api_key, base_url=base_url, client=client)
        cls = adapter_class(self.provider)
        self._credentials = (Credentials(api_key=api_key, base_url=base_url or None) if api_key
                             else credentials_from_env(self.provider, cls.key_env_vars))

    # --- helpers -------------------------------------------------------------------------------
    def _batch_client(self) -> BatchClient:
        return BatchClient(credentials={self.provider: self._credentials})

    def _ref(self, model: str = "default") -> ModelRef:
        return parse_model(f"{self.provider}/{model}")

    def _requests(self, requests: list[BatchRequest], key: str, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
        built = []
        for index, request in enumerate(requests):
            params = dict(request.get("params") or kwargs.get("request_params") or {})
            item: dict[str, Any] = {"custom_id": f"{key}-{index}", "prompt": request["prompt"]}
            system = request.get("system_prompt") or kwargs.get("system_prompt")
            max_tokens = request.get("max_tokens") or kwargs.get("max_tokens")
            if system:
                item["system"] = system
            if max_tokens:
                item["max_output_tokens"] = max_tokens
            item.update({name: params.pop(name) for name in _PARAMS if name in params})
            if params:
                item["provider_options"] = params
            built.append(item)
        return built

    @staticmethod
    def _defaults(output_spec: Any) -> dict[str, Any] | None:
        if getattr(output_spec, "is_structured", False):
            return {"output_schema": dict(output_spec.json_schema)}
        return None

    # --- BatchAdapter --------------------------------------------------------------------------
    def validate_requests(self, requests: list[BatchRequest], *, model: str, output_spec: Any,
                          idempotency_key: str, **kwargs: Any) -> None:
        self.check_custom_id_length(idempotency_key, len(requests))
        try:
            with prepare_job(self._ref(model), self._requests(requests, idempotency_key, kwargs),
                             defaults=self._defaults(output_spec)) as job:
                shards = len(job.shards)
        except ConfigurationError as exc:
            raise LLMBatchInputError(str(exc)) from None
        if shards > 1:
            raise LLMBatchLimitExceededError(
                f"{len(requests)} requests exceed one {self.provider} batch (max {job.limits.max_requests} "
                f"requests, {job.limits.max_bytes} bytes); split the input with .expand()"
            )

    def submit(self, requests: list[BatchRequest], *, model: str, idempotency_key: str, input_fingerprint: str,
               output_spec: Any, **kwargs: Any) -> SubmitResult:
        self.validate_requests(requests, model=model, output_spec=output_spec, idempotency_key=idempotency_key,
                               **kwargs)

        async def go() -> str:
            async with self._batch_client() as client:
                handle = await client.submit(
                    self._ref(model), self._requests(requests, idempotency_key, kwargs),
                    defaults=self._defaults(output_spec),
                    metadata={KEY_TAG: idempotency_key, FINGERPRINT_TAG: input_fingerprint[:64]},
                )
            return handle.batch_ids[0]

        return SubmitResult(batch_id=_run(go()), provider_input_ref=None)

    def get_batch(self, batch_id: str) -> BatchState:
        async def go() -> BatchState:
            async with self._batch_client() as client:
                status = await client.adapter(self.provider).status(batch_id)
            counts = status.counts.as_dict()
            return BatchState(status=_STATES.get(status.state, "in_progress"),  # type: ignore[arg-type]
                              counts=counts, error_message=status.error_message)

        return _run(go())

    def cancel_batch(self, batch_id: str) -> None:
        async def go() -> None:
            async with self._batch_client() as client:
                await client.adapter(self.provider).cancel(batch_id)

        _run(go())

    def iter_results(self, batch_id: str) -> Iterator[RawResultItem]:
        self.get_batch(batch_id)  # fail now, not at first iteration, for an unknown id
        return self._stream(batch_id)

    def _stream(self, batch_id: str) -> Iterator[RawResultItem]:
        loop = asyncio.new_event_loop()
        client = self._batch_client()
        adapter: ProviderAdapter = client.adapter(self.provider)
        results = adapter.results(self._ref(), batch_id)
        try:
            while True:
                try:
                    item = loop.run_until_complete(anext(results))
                except StopAsyncIteration:
                    return
                yield self._raw(item)
        finally:
            loop.run_until_complete(results.aclose())
            loop.run_until_complete(client.aclose())
            loop.close()

    @staticmethod
    def _raw(item: ItemResult) -> RawResultItem:
        _, _, index = item.custom_id.rpartition("-")
        usage = {k: v for k, v in (("input_tokens", item.input_tokens), ("output_tokens", item.output_tokens),
                                   ("total_tokens", item.total_tokens)) if v is not None}
        error = ({"code": item.error_code, "message": item.error_message}
                 if item.error_code or item.error_message else None)
        return RawResultItem(
            custom_id=item.custom_id, index=int(index) if index.isdigit() else -1,
            provider_status=_ITEM_STATUS.get(item.status, "errored"),  # type: ignore[arg-type]
            model=None, usage=usage or None, finish_reason=item.finish_reason, error=error, raw=item,
        )

    def build_output_directive(self, spec: Any) -> dict[str, Any]:
        # Structured output is requested through batchwork's own output_schema, per provider, in submit.
        return {}

    def extract_output(self, raw: RawResultItem, spec: Any) -> ExtractedOutput:
        text = raw.raw.text if isinstance(raw.raw, ItemResult) else None
        if text is None:
            return ExtractedOutput(kind="absent")
        return ExtractedOutput(kind="json_text" if getattr(spec, "is_structured", False) else "text", text=text)

    def find_orphaned_batch(self, idempotency_key: str, input_fingerprint: str, not_before: str) -> str | None:
        """Newest batch tagged with this key and fingerprint, on providers that store batch metadata
        (OpenAI-compatible ones); None elsewhere. ``not_before`` is not checked: listings are newest first,
        and an older batch with the same key and fingerprint carries the same requests."""

        async def go() -> str | None:
            async with self._batch_client() as client:
                return await client.adapter(self.provider).find_batch(
                    {KEY_TAG: idempotency_key, FINGERPRINT_TAG: input_fingerprint[:64]})

        return _run(go())


def _adapter_for(provider: str) -> type[_BatchworkAdapter]:
    limits = ADAPTERS[provider].limits
    return type(f"Batchwork{provider.title()}BatchAdapter", (_BatchworkAdapter,), {
        "__module__": __name__,
        "__doc__": f"common-ai adapter for batchwork's {provider} batches (model prefix ``batchwork-{provider}``).",
        "name": f"batchwork-{provider}",
        "provider": provider,
        "max_requests": limits.max_requests,
        "max_payload_bytes": limits.max_bytes,
    })


BatchworkOpenaiBatchAdapter = _adapter_for("openai")
BatchworkAnthropicBatchAdapter = _adapter_for("anthropic")
BatchworkGoogleBatchAdapter = _adapter_for("google")
BatchworkGroqBatchAdapter = _adapter_for("groq")
BatchworkMistralBatchAdapter = _adapter_for("mistral")
BatchworkTogetherBatchAdapter = _adapter_for("together")
BatchworkXaiBatchAdapter = _adapter_for("xai")

#: Entry-point name -> "module:Class" (pyproject group "airflow.providers.common.ai.batch_adapters").
ENTRY_POINTS = {cls.name: f"{__name__}:{cls.__name__}" for cls in (
    BatchworkOpenaiBatchAdapter, BatchworkAnthropicBatchAdapter, BatchworkGoogleBatchAdapter, BatchworkGroqBatchAdapter,
    BatchworkMistralBatchAdapter, BatchworkTogetherBatchAdapter, BatchworkXaiBatchAdapter)}
