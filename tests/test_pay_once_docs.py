"""The Python blocks of docs/pay-once.md run as printed: the operator options parse, and the cache example
prints the manifest and logs the lines the page shows."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "pay-once.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == kind]


def test_operator_block_builds_the_operators() -> None:
    namespace: dict[str, object] = {}
    exec(compile(blocks("python")[0], str(PAGE), "exec"), namespace)
    submit, collect = namespace["submit"], namespace["collect"]
    assert (submit.dedup, submit.cache, submit.incremental) == (  # type: ignore[attr-defined]
        True, "s3://bucket/llm-cache/", "s3://bucket/enriched/")
    assert collect.merge is True and collect.cache == "s3://bucket/llm-cache/"  # type: ignore[attr-defined]


def test_cache_example_logs_what_the_page_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="airflow_batchwork")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks("python")[1], str(PAGE), "exec"), {"__name__": "__docs__"})
    shown = [line.split(": ", 1)[1] for line in blocks("text")[0].strip().splitlines()]
    logged = [record.getMessage() for record in caplog.records]
    for line in shown:
        assert line in logged
    # The README's pay-once section shows the same two lines.
    readme = (PAGE.parent.parent / "README.md").read_text()
    section = readme[readme.index("## Pay once"):readme.index("## Large jobs")]
    [text] = [body for lang, body in BLOCK.findall(section) if lang == "text"]
    assert text.strip().splitlines() == shown
    reuse = eval(out.getvalue().strip())  # the printed dict
    assert reuse == {"cached": 420, "deduplicated": 0, "sent": 580, "saved_usd": 0.84, "stored_in_cache": 580}
    assert "`reuse = " + repr(reuse).replace("'", '"') + "`" in PAGE.read_text()
