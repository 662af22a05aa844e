"""Every test under tests/conformance is a conformance test (``make conformance`` runs only these)."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/conformance/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.conformance)
