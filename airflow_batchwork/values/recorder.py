"""What a job's preparation records per request, beyond its custom_id, for the steps that come later.

- the encoded item, byte for byte, so that failed items can be resubmitted later exactly as they were sent
  (column `_batchwork_item` of the submitted-ids file, see `engine/resubmit.py`);
- the digest of its output schema, when requests differ in their schema (column `_batchwork_schema`, read by
  the structured output check at collect, see `values/structured.py`);
- token estimates for `max_cost_usd` (`values/pricing.py`): input = characters / 4 of the prompt, messages,
  system prompt, embedding value and output schema; output = `max_output_tokens`, else
  `DEFAULT_OUTPUT_TOKENS` per text request (0 for embeddings).
"""

from __future__ import annotations

import itertools
import json
import math
from array import array
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import pyarrow as pa

from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import BatchRequest, PlainSpec
from airflow_batchwork.values.structured import SCHEMA_COLUMN, SchemaSet

ITEM_COLUMN = "_batchwork_item"
CHARS_PER_TOKEN = 4
# Output estimate of a text request without max_output_tokens; set max_output_tokens for a tight bound.
DEFAULT_OUTPUT_TOKENS = 1024
# The ids file is written in row groups; buffered items are flushed past this many bytes.
FLUSH_BYTES = 4 * 1024 * 1024


def estimated_input_tokens(request: BatchRequest) -> int:
    """Input tokens of one request at `CHARS_PER_TOKEN` (text of prompt, messages, system and value)."""
    chars = sum(len(m.text) for m in request.messages or []) + len(request.prompt or "") \
        + len(request.system or "") + len(request.value or "")
    return math.ceil(chars / CHARS_PER_TOKEN)


class RequestRecorder:
    """Collects the per-request extras of one job while it is prepared (see the module docstring)."""

    flush_bytes = FLUSH_BYTES

    def __init__(self, ref: ModelRef) -> None:
        self.embedding = ref.kind == "embedding"
        self.schemas = SchemaSet()
        self.estimated_input_tokens = 0
        self.estimated_output_tokens = 0
        self.nbytes = 0
        # The items back to back plus their offsets: an encoder's bytes object can hold several times its
        # length in spare capacity (orjson's hold ~4 KB each), so the items are not kept as objects.
        self._data = bytearray()
        self._offsets = array("q", [0])
        self._digests: list[str | None] = []
        self._schema_chars: dict[str | None, int] = {None: 0}

    def add(self, request: BatchRequest, item: bytes) -> None:
        """Record one encoded request."""
        schema = request.output_schema
        digest = self.schemas.add(schema)
        if digest not in self._schema_chars:
            self._schema_chars[digest] = len(json.dumps(schema))
        messages = request.messages
        chars = len(request.prompt or "") + len(request.system or "") + len(request.value or "") \
            + self._schema_chars[digest]
        if messages:
            chars += sum(len(m.text) for m in messages)
        self.estimated_input_tokens += -(-chars // CHARS_PER_TOKEN)
        if not self.embedding:
            self.estimated_output_tokens += request.max_output_tokens or DEFAULT_OUTPUT_TOKENS
        data = self._data
        data += item
        self._offsets.append(len(data))
        self._digests.append(digest)
        self.nbytes += len(item)

    def add_plain(self, requests: Sequence[PlainSpec], items: Sequence[bytes]) -> None:
        """Record a chunk of encoded plain requests (no schema, no messages): `add` of each, at once."""
        self.schemas.add_absent(len(requests))
        name = "value" if self.embedding else "prompt"  # what PlainEmbedding / PlainText carry
        texts: list[str] = list(map(attrgetter(name), requests))
        self.estimated_input_tokens += sum([-(-(len(text) + len(r.system or "")) // CHARS_PER_TOKEN)
                                            for text, r in zip(texts, requests, strict=True)])
        if not self.embedding:
            self.estimated_output_tokens += sum([r.max_output_tokens or DEFAULT_OUTPUT_TOKENS for r in requests])
        data = self._data
        offset = len(data)
        data += b"".join(items)
        self._offsets.extend(itertools.islice(itertools.accumulate(map(len, items), initial=offset), 1, None))
        self._digests += [None] * len(items)
        self.nbytes += len(data) - offset

    def flush(self) -> dict[str, Any]:
        """The extra columns of the rows recorded since the last flush (then forgotten)."""
        items = pa.Array.from_buffers(pa.large_binary(), len(self._offsets) - 1,
                                      [None, pa.py_buffer(self._offsets), pa.py_buffer(self._data)])
        columns = {
            ITEM_COLUMN: items.cast(pa.binary()),
            SCHEMA_COLUMN: pa.array(self._digests, pa.string()),
        }
        self._data, self._offsets = bytearray(), array("q", [0])
        self._digests, self.nbytes = [], 0
        return columns
