"""Provider drift: compare a freshly generated schema document with the shipped one, naming what differs."""

from __future__ import annotations

from typing import Any


def differences(fresh: dict[str, Any], shipped: dict[str, Any]) -> list[str]:
    """What differs between two schema documents: metadata keys by value, types by name only."""
    found = []
    for key in sorted((set(fresh) | set(shipped)) - {"$defs"}):
        if fresh.get(key) != shipped.get(key):
            found.append(f"{key}: shipped {shipped.get(key)!r}, generated {fresh.get(key)!r}")
    new, old = fresh.get("$defs", {}), shipped.get("$defs", {})
    if added := sorted(set(new) - set(old)):
        found.append(f"types added: {', '.join(added)}")
    if removed := sorted(set(old) - set(new)):
        found.append(f"types removed: {', '.join(removed)}")
    if changed := sorted(name for name in set(new) & set(old) if new[name] != old[name]):
        found.append(f"types changed: {', '.join(changed)}")
    return found


def assert_current(provider: str, fresh: dict[str, Any], shipped: dict[str, Any]) -> None:
    """Fail with a short list of the differences (not a dump of two 200-type documents)."""
    found = differences(fresh, shipped)
    assert not found, (
        f"testing/schemas/{provider}.json is not what its generator makes from the installed SDK:\n  "
        + "\n  ".join(found)
        + f"\nThe SDK versions are pinned in pyproject.toml's test extra; after bumping one, run "
        f"`python -m tests.conformance.generators.{provider}` and review the diff (docs/conformance.md)."
    )
