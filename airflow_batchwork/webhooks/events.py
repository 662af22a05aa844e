"""The provider batch webhooks we accept, as data: route, secret env vars, event types, payload parser.

Only OpenAI and Gemini send batch webhooks (reference §2.8, §4.8); Anthropic, Groq, Mistral, Together
and xAI have none, so their jobs are only ever polled. Both senders sign with Standard Webhooks and
send a thin event: a type and a batch id, never the results, which are fetched from the API as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

NoticeStatus = Literal["completed", "failed", "expired", "cancelled"]


class WebhookPayloadError(ValueError):
    """A verified body that is not a well-formed provider event."""


@dataclass(frozen=True)
class BatchNotice:
    """A provider's word that one batch reached a terminal state."""

    provider: str
    batch_id: str
    status: NoticeStatus
    event_type: str
    event_id: str | None = None
    output_uri: str | None = None
    error: str | None = None


def completions_uri(provider: str) -> str:
    """URI of the per-provider asset that receives one event per batch-completion webhook."""
    return f"batchwork://{provider}/batches"


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WebhookPayloadError(f"{what} is not a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 512:
        raise WebhookPayloadError(f"{what} is missing or not a string")
    return value


@dataclass(frozen=True)
class WebhookSpec:
    """One provider's webhook wire format."""

    provider: str
    route: str
    secret_env: tuple[str, ...]
    statuses: Mapping[str, NoticeStatus]
    parse_batch: Callable[[WebhookSpec, Mapping[str, Any]], BatchNotice]

    @property
    def secret_conn_id(self) -> str:
        """Connection whose password holds the signing secret(s)."""
        return f"batchwork_webhook_{self.provider}"

    def parse(self, payload: Any) -> BatchNotice | None:
        """The notice in a verified body; None for event types that are not batch completions."""
        event = _object(payload, "the body")
        event_type = event.get("type")
        if event_type not in self.statuses:
            return None
        return self.parse_batch(self, event)


def _openai(spec: WebhookSpec, event: Mapping[str, Any]) -> BatchNotice:
    # {"id": "evt_…", "object": "event", "type": "batch.completed", "created_at": 1, "data": {"id": "batch_…"}}
    data = _object(event.get("data"), "data")
    event_id = event.get("id")
    return BatchNotice(
        provider=spec.provider,
        batch_id=_string(data.get("id"), "data.id"),
        status=spec.statuses[event["type"]],
        event_type=event["type"],
        event_id=event_id if isinstance(event_id, str) else None,
    )


def _gemini(spec: WebhookSpec, event: Mapping[str, Any]) -> BatchNotice:
    # {"type": "batch.succeeded", "version": "v1", "timestamp": "…", "data": {"id", "output_file_uri"?}}
    data = _object(event.get("data"), "data")
    batch_id = _string(data.get("id"), "data.id")
    # Our handles carry the resource name `batches/…`; the docs' example shows a bare id.
    if not batch_id.startswith("batches/"):
        batch_id = f"batches/{batch_id}"
    output = data.get("output_file_uri")
    message = data.get("error_message")
    return BatchNotice(
        provider=spec.provider,
        batch_id=batch_id,
        status=spec.statuses[event["type"]],
        event_type=event["type"],
        output_uri=output if isinstance(output, str) else None,
        error=message if isinstance(message, str) else None,
    )


OPENAI = WebhookSpec(
    provider="openai",
    route="openai",
    secret_env=("OPENAI_WEBHOOK_SECRET",),
    statuses={"batch.completed": "completed", "batch.failed": "failed", "batch.expired": "expired",
              "batch.cancelled": "cancelled"},
    parse_batch=_openai,
)
GEMINI = WebhookSpec(
    provider="google",
    route="gemini",
    secret_env=("GEMINI_WEBHOOK_SECRET", "GOOGLE_WEBHOOK_SECRET"),
    # `batch.cancelled` is in the guide's catalog but not in the API enum (reference §4.8): accept both.
    statuses={"batch.succeeded": "completed", "batch.failed": "failed", "batch.expired": "expired",
              "batch.cancelled": "cancelled"},
    parse_batch=_gemini,
)

#: URL route segment -> spec (`/batchwork/webhooks/<route>`).
WEBHOOKS: dict[str, WebhookSpec] = {spec.route: spec for spec in (OPENAI, GEMINI)}
