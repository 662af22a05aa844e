"""List the provider SDKs pinned in pyproject.toml's test extra that have a newer release on the package index.

Run from the repository root with ``.venv/bin/python -m tests.conformance.generators.updates`` (``make
sdk-updates``). It asks the index pip is configured with (``pip index versions``), so it needs the network;
no test runs it. For each newer SDK: bump the pin, reinstall, ``make schemas``, review the diff, ``make test``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.conformance.generators import SCHEMAS_DIR

PYPROJECT = SCHEMAS_DIR.parents[2] / "pyproject.toml"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$")


def pinned() -> dict[str, str]:
    """The exactly pinned requirements of the test extra, name to version."""
    extra = tomllib.loads(PYPROJECT.read_text("utf-8"))["project"]["optional-dependencies"]["test"]
    return {m[1]: m[2] for requirement in extra if (m := PIN.match(requirement.strip()))}


def newest(name: str) -> str | None:
    """The newest version the index offers, or None when pip cannot tell."""
    answer = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name],
                            capture_output=True, text=True, check=False)
    found = re.match(rf"^{re.escape(name)} \(([^)]+)\)", answer.stdout.strip(), re.IGNORECASE)
    return found[1] if found else None


def main() -> int:
    behind = 0
    for name, version in sorted(pinned().items()):
        latest = newest(name)
        if latest is None:
            print(f"{name} {version}: the index did not answer")
        elif latest != version:
            behind += 1
            print(f"{name} {version}: {latest} on the index")
        else:
            print(f"{name} {version}: current")
    return 1 if behind else 0


if __name__ == "__main__":
    raise SystemExit(main())
