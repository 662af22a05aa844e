"""The provider SDKs that judge the wire formats are pinned exactly, and the pinned versions are installed."""

from __future__ import annotations

from importlib.metadata import version

from tests.conformance import drift
from tests.conformance.generators.updates import pinned

JUDGES = {"openai", "anthropic", "google-genai", "google-ai-generativelanguage", "groq", "mistralai", "together",
          "xai-sdk"}


def test_every_provider_sdk_is_pinned_and_installed_at_its_pin() -> None:
    pins = pinned()
    assert set(pins) >= JUDGES, f"not pinned with ==: {sorted(JUDGES - set(pins))}"
    assert {name: version(name) for name in JUDGES} == {name: pins[name] for name in JUDGES}


def test_drift_report_names_the_differences() -> None:
    shipped = {"provider": "p", "version": "sdk 1.0", "$defs": {"A": {"type": "string"}, "B": {"type": "object"}}}
    fresh = {"provider": "p", "version": "sdk 1.1", "$defs": {"A": {"type": "integer"}, "C": {"type": "object"}}}
    assert drift.differences(fresh, shipped) == [
        "version: shipped 'sdk 1.0', generated 'sdk 1.1'",
        "types added: C",
        "types removed: B",
        "types changed: A",
    ]
    assert drift.differences(shipped, shipped) == []
