"""Per-item cost: a dated price table, the `cost_usd` column, and the `max_cost_usd` guard at submit.

Prices are data, not code: `airflow_batchwork/data/prices.json` lists, per provider, the list price in USD per
million input and output tokens of each model, the batch discount, the date the table was checked (`as_of`)
and the source pages. A user table (a dict, or a YAML/JSON file on any fsspec URL) is merged over it, model by
model. Cost of a row = (input_tokens * input + output_tokens * output) / 1e6 * (1 - batch_discount); a model
that is not in the table gets a null cost, never a guess.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.recorder import DEFAULT_OUTPUT_TOKENS, RequestRecorder
from airflow_batchwork.values.refs import ModelRef, parse_model

log = logging.getLogger(__name__)

PricesLike = Mapping[str, Any] | str
_FIX = ('pass prices={"<provider>/<model id>": {"input": <USD per 1M>, "output": <USD per 1M>, '
        '"batch_discount": 0.5}} or a YAML/JSON file URL in the format of airflow_batchwork/data/prices.json')


@dataclass(frozen=True)
class ModelPrice:
    """One model's prices: USD per million tokens at list price, and the batch discount (0-1)."""

    provider: str
    model: str
    input: float
    output: float
    batch_discount: float
    as_of: str | None = None
    source: str | None = None
    context_window: int | None = None
    """Tokens the model accepts per request (input + output); None when the table does not say."""
    prompt_cache: Mapping[str, Any] | None = None
    """The provider's prompt-cache terms (`prompt_cache` of its block in prices.json): multipliers of the input
    price for `read`, `write_5m` and `write_1h`, and the minimum cacheable prefix per model (`min_tokens`);
    a model's own `cache_read` (in its entry) replaces `read`."""

    def cache_cost(self, read_tokens: int, write_5m_tokens: int, write_1h_tokens: int) -> float | None:
        """Batch cost in USD of prompt-cache reads and writes (None: the provider has no cache prices)."""
        if not self.prompt_cache:
            return None
        terms = self.prompt_cache
        tokens = read_tokens * float(terms.get("read", 1.0)) + write_5m_tokens * float(terms.get("write_5m", 1.0)) \
            + write_1h_tokens * float(terms.get("write_1h", terms.get("write_5m", 1.0)))
        return tokens * self.batch_input / 1e6

    @property
    def min_cache_tokens(self) -> int | None:
        """The shortest prefix the provider caches for this model (None: unknown)."""
        if not self.prompt_cache:
            return None
        value = (self.prompt_cache.get("min_tokens") or {}).get(self.model, self.prompt_cache.get("min_tokens_default"))
        return None if value is None else int(value)

    @property
    def batch_input(self) -> float:
        """USD per million input tokens in a batch."""
        return self.input * (1 - self.batch_discount)

    @property
    def batch_output(self) -> float:
        """USD per million output tokens in a batch."""
        return self.output * (1 - self.batch_discount)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Batch cost in USD of one item."""
        return (input_tokens * self.batch_input + output_tokens * self.batch_output) / 1e6

    def describe(self) -> str:
        dated = f", as of {self.as_of}" if self.as_of else ""
        return (f"{self.provider}/{self.model} at ${self.batch_input:g} input / ${self.batch_output:g} output per 1M "
                f"tokens in batch{dated}")


class PriceTable:
    """Prices by provider and model (the layout of `data/prices.json`)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = _check(data)

    @classmethod
    def packaged(cls) -> PriceTable:
        """The table shipped with the package."""
        text = resources.files("airflow_batchwork").joinpath("data/prices.json").read_text(encoding="utf-8")
        return cls(json.loads(text))

    @property
    def as_of(self) -> str | None:
        return self.data.get("as_of")

    def merged(self, overrides: Mapping[str, Any]) -> PriceTable:
        """This table with `overrides` (same layout) applied model by model."""
        data = json.loads(json.dumps(self.data))
        for name, provider in (overrides.get("providers") or {}).items():
            target = data.setdefault("providers", {}).setdefault(name, {"models": {}})
            for key, value in provider.items():
                if key != "models":
                    target[key] = value
            for model, price in (provider.get("models") or {}).items():
                entry = dict(price)
                entry.setdefault("as_of", overrides.get("as_of") or "user override")
                target.setdefault("models", {})[model] = entry
        return PriceTable(data)

    def lookup(self, model: str | ModelRef) -> ModelPrice | None:
        """The price of `model` (a model string or ref), or None if the table does not list it."""
        ref = parse_model(model)
        provider = (self.data.get("providers") or {}).get(ref.provider)
        if not provider:
            return None
        name = ref.model
        for prefix in provider.get("strip_prefixes") or []:
            name = name.removeprefix(prefix)
        entry = (provider.get("models") or {}).get(name)
        if entry is None:
            return None
        window = entry.get("context_window")
        prompt_cache = provider.get("prompt_cache")
        if entry.get("cache_read") is not None:  # a model's own cached-input multiplier
            prompt_cache = {**(prompt_cache or {}), "read": float(entry["cache_read"])}
        return ModelPrice(
            provider=ref.provider, model=name, input=float(entry["input"]), output=float(entry.get("output", 0.0)),
            batch_discount=float(entry.get("batch_discount", provider.get("batch_discount", 0.0))),
            as_of=entry.get("as_of") or self.as_of, source=entry.get("source") or provider.get("source"),
            context_window=int(window) if window else None,
            prompt_cache=prompt_cache,
        )

    def models(self, provider: str) -> list[str]:
        """The model ids the table lists for `provider`."""
        return list(((self.data.get("providers") or {}).get(provider) or {}).get("models") or {})

    def _base_model(self, ref: ModelRef) -> str | None:
        """The listed model `ref` names: itself, or the model a dated snapshot id starts with
        (`claude-3-5-haiku-20241022` → `claude-3-5-haiku`), else None."""
        provider = (self.data.get("providers") or {}).get(ref.provider) or {}
        name = ref.model
        for prefix in provider.get("strip_prefixes") or []:
            name = name.removeprefix(prefix)
        known = self.models(ref.provider)
        if name in known:
            return name
        snapshot = [k for k in known if name.startswith(f"{k}-") and name[len(k) + 1:][:1].isdigit()]
        return max(snapshot, key=len) if snapshot else None

    def is_known(self, model: str | ModelRef) -> bool:
        """Whether the table lists the model (or the model a dated snapshot belongs to)."""
        return self._base_model(parse_model(model)) is not None

    def suggestions(self, model: str | ModelRef, n: int = 3) -> list[str]:
        """Listed model strings close to `model`'s id (for a "did you mean" hint)."""
        ref = parse_model(model)
        close = difflib.get_close_matches(ref.model.removeprefix("models/"), self.models(ref.provider), n=n,
                                          cutoff=0.6)
        return [f"{ref.provider}/{name}" for name in close]

    def context_window(self, model: str | ModelRef) -> int | None:
        """Tokens per request the model accepts, from the table (snapshots inherit their model's), or None."""
        ref = parse_model(model)
        base = self._base_model(ref)
        if base is None:
            return None
        entry = (self.data["providers"][ref.provider].get("models") or {})[base]
        window = entry.get("context_window")
        return int(window) if window else None


def warn_if_unknown_model(model: str | ModelRef, table: PriceTable) -> list[str]:
    """Log a warning, before anything is paid for, when the model is not in the table; the suggestions.

    An unknown id is not refused (providers add models faster than any table), but a typo such as
    `gpt-4o-mnii` would only fail after upload, or worse run on a model nobody meant."""
    ref = parse_model(model)
    if table.is_known(ref):
        return []
    close = table.suggestions(ref)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    log.warning("Model %s is not in the price/model table: %sIf the id is right, ignore this; its cost_usd will be "
                "null and its context window unchecked (add it with prices=).", ref, hint)
    return close


def load_prices(prices: PricesLike | PriceTable | None = None, *,
                storage_options: Mapping[str, Any] | None = None) -> PriceTable:
    """The packaged table, with `prices` merged over it: a dict in the `prices.json` layout, a flat dict
    `{"<provider>/<model>": {"input", "output", "batch_discount"?}}`, or the URL of a YAML/JSON file."""
    table = PriceTable.packaged()
    if prices is None:
        return table
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, str):
        prices = _read(prices, storage_options)
    if not isinstance(prices, Mapping):
        raise ConfigurationError("prices", f"expected a dict or a file URL, got {type(prices).__name__}", _FIX)
    return table.merged(prices if "providers" in prices else _nest(prices))


def _read(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    try:
        with fsspec.open(url, "rt", encoding="utf-8", **dict(storage_options or {})) as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigurationError("prices", f"{url!r} does not exist", "check the path") from None
    try:
        return json.loads(text) if url.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError("prices", f"{url!r} is not valid YAML/JSON ({exc})", _FIX) from None


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {"providers": {}}
    for key, price in flat.items():
        if not isinstance(key, str) or "/" not in key:
            raise ConfigurationError(f"prices[{key!r}]", "is not a '<provider>/<model id>' key", _FIX)
        ref = parse_model(key, field=f"prices[{key!r}]")
        nested["providers"].setdefault(ref.provider, {"models": {}})["models"][ref.model] = price
    return nested


def _check(data: Mapping[str, Any]) -> dict[str, Any]:
    for provider, block in (data.get("providers") or {}).items():
        if not isinstance(block, Mapping):
            raise ConfigurationError(f"prices.providers.{provider}", "is not a mapping", _FIX)
        for model, entry in (block.get("models") or {}).items():
            where = f"prices {provider}/{model}"
            if not isinstance(entry, Mapping) or "input" not in entry:
                raise ConfigurationError(where, "needs at least an `input` price", _FIX)
            window = entry.get("context_window")
            if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
                raise ConfigurationError(f"{where}.context_window", f"{window!r} is not a whole number of tokens",
                                         "give the model's context window in tokens, e.g. 128000")
            for key in ("input", "output"):
                value = entry.get(key, 0.0)
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ConfigurationError(f"{where}.{key}", f"{value!r} is not a price in USD per 1M tokens", _FIX)
        for holder in (block, *(block.get("models") or {}).values()):
            discount = holder.get("batch_discount", 0.0)
            if isinstance(discount, bool) or not isinstance(discount, int | float) or not 0 <= discount <= 1:
                raise ConfigurationError(f"prices {provider}.batch_discount", f"{discount!r} is not between 0 and 1",
                                         "give the discount as a fraction, e.g. 0.5 for 50% off")
    return dict(data)


class CostEnricher:
    """Fills `cost_usd` from each row's tokens (a `RowEnricher`); null when the model has no price or the
    row has no input token count."""

    fields: Sequence[pa.Field] = ()

    def __init__(self, price: ModelPrice | None) -> None:
        self.price = price

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        n = items.num_rows
        if self.price is None:
            return {"cost_usd": pa.nulls(n, pa.float64())}
        tokens_in = pc.cast(items.column("input_tokens"), pa.float64())
        tokens_out = pc.fill_null(pc.cast(items.column("output_tokens"), pa.float64()), 0.0)
        cost = pc.divide(pc.add(pc.multiply(tokens_in, self.price.batch_input),
                                pc.multiply(tokens_out, self.price.batch_output)), 1e6)
        return {"cost_usd": cost}


def estimate_cost(recorder: RequestRecorder, price: ModelPrice) -> float:
    """Estimated batch cost of a prepared job (token estimates of `RequestRecorder`)."""
    return price.cost(recorder.estimated_input_tokens, recorder.estimated_output_tokens)


def check_max_cost(model: str | ModelRef, recorder: RequestRecorder | None, max_cost_usd: float | None,
                   prices: PricesLike | PriceTable | None = None, *,
                   storage_options: Mapping[str, Any] | None = None) -> float | None:
    """Refuse a job whose estimated cost exceeds `max_cost_usd` (before any API call); the estimate."""
    if max_cost_usd is None:
        return None
    if isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, int | float) or not max_cost_usd > 0:
        raise ConfigurationError("max_cost_usd", f"{max_cost_usd!r} is not a positive amount",
                                 "give a number of US dollars, e.g. max_cost_usd=25")
    price = load_prices(prices, storage_options=storage_options).lookup(model)
    if price is None:
        raise ConfigurationError(
            "max_cost_usd", f"no price is known for {model}, so the job's cost cannot be checked against it", _FIX,
        )
    assert recorder is not None
    estimate = estimate_cost(recorder, price)
    if estimate > max_cost_usd:
        raise ConfigurationError(
            "max_cost_usd",
            f"the job's estimated cost is ${estimate:,.4f} (~{recorder.estimated_input_tokens:,} input and "
            f"~{recorder.estimated_output_tokens:,} output tokens, {price.describe()}), above "
            f"max_cost_usd={max_cost_usd:g}",
            f"raise max_cost_usd, set a lower max_output_tokens (without it each text request counts "
            f"{DEFAULT_OUTPUT_TOKENS} output tokens), or split the job",
        )
    log.info("Estimated cost $%.4f is within max_cost_usd=%g (%s)", estimate, max_cost_usd, price.describe())
    return estimate


def total_cost(files: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> float | None:
    """Sum of `cost_usd` over written result files; None when no row has a cost."""
    total = 0.0
    priced = False
    for url in files:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        with fs.open(path, "rb") as handle:
            # On the calling thread: no Arrow pool thread is started (apache/arrow#34314, engine/parquet.py).
            table = pq.ParquetFile(handle, pre_buffer=False).read(columns=["cost_usd"], use_threads=False)
            column = table.column("cost_usd")
        if column.null_count < len(column):
            priced = True
            total += float(pc.sum(column).as_py() or 0.0)
    return round(total, 10) if priced and math.isfinite(total) else None
