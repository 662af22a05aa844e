"""The emulator's fault model: what to break (:class:`FaultConfig`) and the live state that breaks it (:class:`Faults`).

One model serves every provider; provider route modules contain no fault logic. They reach it in three
places only:

- the fault middleware (:mod:`~airflow_batchwork.testing.middleware`) opens :meth:`Faults.request` for every
  HTTP request under a provider's prefix: 429s, 5xx, dropped connections, slow responses, lost create answers;
- :meth:`Store.create_batch <airflow_batchwork.testing.store.Store.create_batch>` asks :meth:`Faults.on_create`
  whether the new batch fails validation or expires half-done, and whether the answer of this create call is lost;
- where a provider delivers results it passes them through one hook: :meth:`Faults.result_file` (JSONL file
  downloads), :meth:`Faults.result_lines` (a JSONL stream) or :meth:`Faults.result_entries` (results inside a
  JSON document).

Counting is per provider. Request faults count every request to that provider (``rate_limit_every=3``: its
3rd, 6th, ... request), ``lose_create_response_every`` counts the batches its create calls made, and result
faults count line (or entry) positions, 1-based, within one delivered file, stream or result list, so they are
deterministic: downloading the same file twice gives the same damage. The :class:`FaultConfig` is read anew for
every request, so a test may change ``emu.faults`` at runtime. Item faults chosen by prompt text
(``[[error]]``, ``[[expire]]``) are not here; see :mod:`airflow_batchwork.testing.echo`.
"""

from __future__ import annotations

import contextvars
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

__all__ = [
    "FAULT_KINDS",
    "SERVER_ERROR_STATUSES",
    "VALIDATION_FAILURE_MESSAGE",
    "CreateFaults",
    "FaultConfig",
    "Faults",
    "RequestFaults",
    "ResultFile",
    "malformed_line",
]

# Names used in RequestRecord.fault and in Faults.counts().
FAULT_KINDS: tuple[str, ...] = (
    "slow",
    "rate_limit",
    "server_error",
    "drop_connection",
    "lose_create_response",
    "fail_validation",
    "expire_partial",
    "truncate_results",
    "malformed_results",
)
# Injected 5xx answers cycle through these, per provider.
SERVER_ERROR_STATUSES: tuple[int, ...] = (500, 502, 503)
VALIDATION_FAILURE_MESSAGE = "The batch failed validation (fault injected by the batchwork emulator: fail_validation)."
# FaultConfig fields that shape the knobs rather than inject a fault themselves.
_SETTINGS = ("retry_after_seconds", "random_seed", "providers", "per_provider")
_MALFORMED = "!!malformed result line (batchwork emulator fault)!!"


@dataclass
class FaultConfig:
    """Which faults to inject; the defaults inject none. ``N`` knobs are "every Nth", 0 disables them.

    ``providers`` scopes every knob to those providers (names or aliases, e.g. ``{"openai", "gemini"}``, or a
    comma-separated string); None means all. ``per_provider`` gives a provider its own config, which then
    replaces this one for that provider entirely (its own ``providers`` and ``per_provider`` are ignored).
    """

    rate_limit_every: int = 0
    """Every Nth request per provider answers the provider's 429 with ``Retry-After``."""
    retry_after_seconds: int = 1
    """Value of the ``Retry-After`` header on injected 429s."""
    server_error_every: int = 0
    """Every Nth request per provider answers a provider-shaped 5xx, cycling 500, 502, 503."""
    drop_connection_every: int = 0
    """Every Nth request per provider: the status line, headers and half of the first body chunk are sent, then
    the connection is closed (a response without body is dropped before any byte)."""
    lose_create_response_every: int = 0
    """Every Nth batch a create call makes, per provider: the batch is created but the connection is closed
    before any byte of the answer is sent."""
    truncate_results_every: int = 0
    """Every Nth result line (or entry) of each delivery is cut in half."""
    malformed_results_every: int = 0
    """Every Nth result line (or entry) of each delivery is replaced by non-JSON garbage (see
    :func:`malformed_line`)."""
    fail_validation: bool = False
    """Batches created from now on fail validation: the provider's failed state, a batch-level error, no
    results (Anthropic has no failed state: every request ends ``errored`` instead)."""
    expire_partial: bool = False
    """Batches created from now on end expired after ``processing_seconds``: the first half of their requests
    (rounded down) succeed, the rest expire."""
    slow_seconds: float = 0.0
    """Every response is delayed this long (asynchronously; other requests are served meanwhile)."""
    random_seed: int | None = None
    """With a seed, the request knobs (``rate_limit_every``, ``server_error_every``, ``drop_connection_every``)
    fire at random with probability 1/N each (a storm "1 in N"), from a generator seeded per provider, instead
    of on every Nth request. Deterministic counting can alias with a client's call pattern (a create that is
    always the even-numbered call after a one-call lookup fails forever at 1 in 2); random storms cannot."""
    providers: Collection[str] | str | None = None
    """Providers the knobs apply to; None = all."""
    per_provider: dict[str, FaultConfig] = field(default_factory=dict)
    """Provider name (or alias) -> the config used for that provider instead of this one."""

    def __post_init__(self) -> None:
        if isinstance(self.providers, str):
            self.providers = frozenset(p.strip() for p in self.providers.split(",") if p.strip())
        elif self.providers is not None:
            self.providers = frozenset(self.providers)
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"FaultConfig.{spec.name} must be >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        """True if any fault is configured (for this config or a per-provider one)."""
        knobs = (getattr(self, spec.name) for spec in fields(self) if spec.name not in _SETTINGS)
        return any(knobs) or any(c.active for c in self.per_provider.values())

    def describe(self) -> str:
        """The non-default knobs as ``name=value`` pairs, e.g. for a banner; ``"none"`` without faults."""
        default = FaultConfig()
        parts = [
            f"{spec.name}={getattr(self, spec.name)}"
            for spec in fields(self)
            if spec.name not in _SETTINGS and getattr(self, spec.name) != getattr(default, spec.name)
        ]
        if parts and self.rate_limit_every:
            parts.append(f"retry_after_seconds={self.retry_after_seconds}")
        if parts and self.random_seed is not None:
            parts.append(f"random_seed={self.random_seed}")
        if parts and self.providers is not None:
            parts.append(f"providers={','.join(sorted(self.providers))}")
        parts += [f"{name}: [{config.describe()}]" for name, config in self.per_provider.items()]
        return ", ".join(parts) or "none"

    def transport_fault(self, request_number: int, rng: random.Random | None = None) -> str | None:
        """The fault answering the ``request_number``-th (1-based) request, if any; 429 wins over 5xx over drop.
        With ``rng`` (``random_seed`` mode) each knob fires with probability 1/N instead."""
        for kind, every in (
            ("rate_limit", self.rate_limit_every),
            ("server_error", self.server_error_every),
            ("drop_connection", self.drop_connection_every),
        ):
            if every <= 0:
                continue
            if rng is not None:
                if rng.random() < 1 / every:
                    return kind
            elif request_number % every == 0:
                return kind
        return None


_NO_FAULTS = FaultConfig()
T = TypeVar("T")


class ResultFile(Protocol):
    """What :meth:`Faults.result_file` reads of a file (the store's ``StoredFile`` is one; this module does
    not import the store: the store imports the fault model, never the reverse)."""

    @property
    def data(self) -> bytes: ...

    @property
    def result_of(self) -> str | None: ...


@dataclass(frozen=True)
class CreateFaults:
    """What :meth:`Faults.on_create` decided for a new batch."""

    fail_validation: bool = False
    expire_from: int | None = None
    """Index of the first request that expires (``expire_partial``), or None."""


@dataclass
class RequestFaults:
    """The faults of one HTTP request, shared by the middleware, the store and the result hooks."""

    owner: Faults
    provider: str
    config: FaultConfig
    transport: str | None = None
    """``rate_limit``, ``server_error`` or ``drop_connection`` if one answers this request."""
    server_error_status: int = 500
    lose_response: bool = False
    """Set when this request created a batch whose answer must be lost."""
    injected: list[str] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """The injected faults joined by commas (``RequestRecord.fault``), or None."""
        return ",".join(self.injected) or None


_CURRENT: contextvars.ContextVar[RequestFaults | None] = contextvars.ContextVar("batchwork_faults", default=None)


def malformed_line(position: int, every: int, custom_id: str | None) -> str:
    """The garbage replacing the result line at ``position`` (a multiple of ``every``).

    The 1st, 3rd, 5th, ... malformed line of a delivery still contains its custom_id text (``... custom_id=X``);
    the 2nd, 4th, ... do not. Neither is JSON.
    """
    keeps_id = (position // every) % 2 == 1
    return f"{_MALFORMED} custom_id={custom_id}" if keeps_id and custom_id is not None else _MALFORMED


class Faults:
    """The live fault model of one store: reads the current :class:`FaultConfig`, decides, counts and records.

    ``source`` returns the config to use (``Emulator`` passes ``lambda: emu.faults``); ``aliases`` maps a
    provider name to its other names, so scopes may say ``gemini`` for ``google``.
    """

    def __init__(
        self,
        source: Callable[[], FaultConfig] | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.source: Callable[[], FaultConfig] = source or FaultConfig
        self.aliases: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (aliases or {}).items()}
        self._lock = threading.Lock()
        self._sequence: Counter[tuple[str, str]] = Counter()
        self._counts: dict[str, Counter[str]] = {}
        self._rngs: dict[tuple[str, int], random.Random] = {}

    # -- configuration ---------------------------------------------------------------------------

    def config_for(self, provider: str) -> FaultConfig:
        """The config that applies to ``provider`` now (an empty one if it is out of scope)."""
        config = self.source()
        names = (provider, *self.aliases.get(provider, ()))
        for name in names:
            if name in config.per_provider:
                return config.per_provider[name]
        if config.providers is None or any(name in config.providers for name in names):
            return config
        return _NO_FAULTS

    def _current(self, provider: str) -> RequestFaults | None:
        context = _CURRENT.get()
        return context if context is not None and context.owner is self and context.provider == provider else None

    def _config_now(self, provider: str) -> FaultConfig:
        context = self._current(provider)
        return context.config if context is not None else self.config_for(provider)

    def _next(self, provider: str, counter: str) -> int:
        with self._lock:
            self._sequence[provider, counter] += 1
            return self._sequence[provider, counter]

    # -- recording -------------------------------------------------------------------------------

    def record(self, provider: str, kind: str, amount: int = 1) -> None:
        """Count ``amount`` injected faults of ``kind`` and name it on the current request's record."""
        if amount <= 0:
            return
        with self._lock:
            self._counts.setdefault(provider, Counter())[kind] += amount
        context = self._current(provider)
        if context is not None and kind not in context.injected:
            context.injected.append(kind)

    def counts(self, provider: str | None = None) -> dict[str, dict[str, int]]:
        """Injected faults so far: provider -> fault kind -> count (result faults count lines or entries)."""
        with self._lock:
            return {
                name: dict(counter)
                for name, counter in self._counts.items()
                if provider is None or name == provider or provider in self.aliases.get(name, ())
            }

    # -- requests (called by the middleware) -----------------------------------------------------

    @contextmanager
    def request(self, provider: str) -> Iterator[RequestFaults]:
        """Decide the transport faults of one request to ``provider``; the store and hooks see it meanwhile."""
        config = self.config_for(provider)
        context = RequestFaults(self, provider, config)
        number = self._next(provider, "request")
        if config.random_seed is not None:
            with self._lock:
                key = (provider, config.random_seed)
                rng = self._rngs.setdefault(key, random.Random(f"{config.random_seed}-{provider}"))
                context.transport = config.transport_fault(number, rng)
        else:
            context.transport = config.transport_fault(number)
        if context.transport == "server_error":
            index = self._next(provider, "server_error_status") - 1
            context.server_error_status = SERVER_ERROR_STATUSES[index % len(SERVER_ERROR_STATUSES)]
        token = _CURRENT.set(context)
        try:
            if config.slow_seconds > 0:
                self.record(provider, "slow")
            if context.transport is not None:
                self.record(provider, context.transport)
            yield context
        finally:
            _CURRENT.reset(token)

    # -- batches (called by the store) -----------------------------------------------------------

    def on_create(self, namespace: str, item_count: int) -> CreateFaults:
        """Faults of a batch being created in store ``namespace`` with ``item_count`` valid requests.

        ``provider.sub`` namespaces (e.g. xAI's request groups) belong to ``provider`` but are not create calls.
        A batch without valid requests neither fails nor expires by fault (it already fails, or is empty).
        """
        provider, _, sub = namespace.partition(".")
        config = self._config_now(provider)
        context = self._current(provider)
        fail = config.fail_validation and item_count > 0
        expire_from = item_count // 2 if config.expire_partial and item_count > 0 and not fail else None
        if fail:
            self.record(provider, "fail_validation")
        if expire_from is not None:
            self.record(provider, "expire_partial")
        every = config.lose_create_response_every
        if not sub and every > 0 and context is not None and self._next(provider, "create") % every == 0:
            context.lose_response = True
            self.record(provider, "lose_create_response")
        return CreateFaults(fail_validation=fail, expire_from=expire_from)

    # -- result delivery (called by provider modules) --------------------------------------------

    def result_file(self, provider: str, stored: ResultFile, id_key: str = "custom_id") -> bytes:
        """The bytes to send for a file download: a batch's result file (JSONL) goes through the result faults."""
        if stored.result_of is None:
            return stored.data
        config = self._config_now(provider)
        if not (config.truncate_results_every or config.malformed_results_every):
            return stored.data
        text = stored.data.decode("utf-8", errors="replace")
        lines = text.splitlines()
        ids = [_line_id(line, id_key) for line in lines]
        mangled = self._damage(provider, config, lines, ids, _half)
        return ("\n".join(mangled) + ("\n" if text.endswith("\n") else "")).encode("utf-8")

    def result_lines(
        self, provider: str, lines: Sequence[Mapping[str, Any]], id_key: str = "custom_id"
    ) -> list[str]:
        """``lines`` as compact JSONL lines (each ending in ``\\n``) after the result faults."""
        config = self._config_now(provider)
        serialized = [json.dumps(line, separators=(",", ":")) for line in lines]
        ids = [_text(line.get(id_key)) for line in lines]
        return [line + "\n" for line in self._damage(provider, config, serialized, ids, _half)]

    def result_entries(
        self, provider: str, entries: Sequence[Mapping[str, Any]], id_keys: Sequence[str], start: int = 0
    ) -> list[Any]:
        """Result objects inside a JSON document (a page, an Operation) after the result faults.

        JSON cannot be cut per line, so the equivalent is: a truncated entry keeps only its ``id_keys`` (its
        result is missing), a malformed entry becomes a string of garbage (:func:`malformed_line`) where an
        object is expected. ``start`` is the index of ``entries[0]`` in the whole result list (for pages).
        """
        config = self._config_now(provider)
        if not (config.truncate_results_every or config.malformed_results_every):
            return list(entries)
        ids = [next((_text(entry[k]) for k in id_keys if k in entry), None) for entry in entries]
        return self._damage(provider, config, entries, ids, lambda e: {k: e[k] for k in id_keys if k in e}, start)

    def _damage(
        self, provider: str, config: FaultConfig, values: Sequence[T], ids: Sequence[str | None],
        cut: Callable[[T], T], start: int = 0,
    ) -> list[T | str]:
        """``values`` with every Nth (1-based, from ``start + 1``) replaced by garbage or ``cut``, counted."""
        truncate, malformed = config.truncate_results_every, config.malformed_results_every
        out: list[T | str] = []
        cut_count = garbled = 0
        for position, (value, value_id) in enumerate(zip(values, ids, strict=True), start=start + 1):
            if malformed and position % malformed == 0:
                out.append(malformed_line(position, malformed, value_id))
                garbled += 1
            elif truncate and position % truncate == 0:
                out.append(cut(value))
                cut_count += 1
            else:
                out.append(value)
        self.record(provider, "truncate_results", cut_count)
        self.record(provider, "malformed_results", garbled)
        return out


def _half(line: str) -> str:
    return line[: len(line) // 2]


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _line_id(line: str, id_key: str) -> str | None:
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return _text(parsed.get(id_key)) if isinstance(parsed, dict) else None
