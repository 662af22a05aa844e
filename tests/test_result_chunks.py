"""Result streams are re-cut into chunks of whole lines, with every byte kept once and in order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from airflow_batchwork.adapters.arrow_lines import complete_chunks


async def _pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        if at >= len(data):
            break
        yield data[at:at + size]
        at += size
    if at < len(data):
        yield data[at:]


def _chunks(data: bytes, sizes: list[int], size: int) -> list[bytes]:
    async def go() -> list[bytes]:
        return [chunk async for chunk in complete_chunks(_pieces(data, sizes), size)]

    return asyncio.run(go())


@pytest.mark.parametrize("seed", range(20))
def test_chunks_are_whole_lines_and_keep_every_byte(seed: int) -> None:
    rng = random.Random(seed)
    lines = [b'{"custom_id":"c%d","x":"%s"}' % (i, b"y" * rng.randint(0, 300)) for i in range(300)]
    data = b"\n".join(lines) + (b"\n" if seed % 2 else b"")  # with and without a final newline
    sizes = [rng.choice([0, 1, 7, 64, 500, 4096]) for _ in range(2000)]
    size = rng.choice([1, 100, 1000, 10_000])
    chunks = _chunks(data, sizes, size)
    assert b"".join(chunks) == data
    assert all(chunks)
    assert all(chunk.endswith(b"\n") for chunk in chunks[:-1])
    assert len(chunks) > 1


def test_a_stream_without_newlines_is_one_chunk() -> None:
    assert _chunks(b"x" * 5000, [100] * 50, 1000) == [b"x" * 5000]
    assert _chunks(b"", [], 1000) == []
