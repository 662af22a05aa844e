"""Result streams are re-cut into chunks of whole lines, with every byte kept once and in order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pyarrow as pa
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



def _chat_lines(start: int, count: int) -> bytes:
    return b"".join(
        b'{"custom_id":"c%d","response":{"status_code":200,"body":{"choices":[{"message":{"content":"t%d"},'
        b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}}}\n'
        % (i, i) for i in range(start, start + count))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_next_chunks_are_read_while_a_batch_is_handed_over_and_joined_when_closed(
        monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    """While the caller holds the batch of chunk k, the JSON reads of chunks k+1 … k+depth are under way on
    threads of their own (pyarrow's reader releases the GIL), and no later one; the rows are those of each
    chunk, in order; and a caller that stops early leaves no reading thread behind."""
    import threading

    from airflow_batchwork.adapters import arrow_lines
    from airflow_batchwork.adapters.arrow_lines import CHAT_LINE_SCHEMA, parse_chat_chunk, parse_chunks
    from airflow_batchwork.adapters.openai_compat import CANCELED_CODES, EXPIRED_CODES, FINISH_REASONS

    monkeypatch.setattr(arrow_lines, "READ_AHEAD_CHUNKS", depth)
    chunks = [_chat_lines(100 * k, 100) for k in range(depth + 4)]
    reading = {k: threading.Event() for k in range(len(chunks))}
    release = threading.Event()
    read = arrow_lines._read_lines
    held = 1 + depth  # the last chunk whose read starts before the caller stops: still reading then

    def watched(chunk: bytes, schema: pa.Schema, id_column: str) -> arrow_lines.Read:
        k = chunks.index(chunk)
        reading[k].set()
        if k == held:
            release.wait(60)
        return read(chunk, schema, id_column)

    monkeypatch.setattr(arrow_lines, "_read_lines", watched)

    def parse(chunk: bytes) -> pa.RecordBatch:
        records = parse_chat_chunk(chunk, "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES)
        assert records is not None
        return records

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    before = {t.ident for t in threading.enumerate()}

    async def go() -> tuple[list[list[str]], list[list[bool]], list[bool], list[threading.Thread]]:
        ids: list[list[str]] = []
        ahead: list[list[bool]] = []
        beyond: list[bool] = []
        stream = parse_chunks(source(), parse, CHAT_LINE_SCHEMA)
        async for batch in stream:
            k = len(ids)
            # Bounded waits, not timings: without the read-ahead, chunk k+1 is read only after this batch is done.
            ahead.append([reading[k + j].wait(20) for j in range(1, depth + 1)])
            beyond.append(reading[k + depth + 1].is_set())  # the generator is suspended: nothing else starts
            ids.append(batch.column("custom_id").to_pylist())
            if k == 1:
                break
        release.set()
        await stream.aclose()  # joins the reads still under way
        alive = [t for t in threading.enumerate() if t.ident not in before and t.name == "batchwork-read-ahead"]
        return ids, ahead, beyond, alive

    try:
        ids, ahead, beyond, alive = asyncio.run(go())
    finally:
        release.set()
    assert ahead == [[True] * depth, [True] * depth]
    assert beyond == [False, False]  # at most `depth` chunks read ahead
    assert ids == [[f"c{i}" for i in range(100)], [f"c{i}" for i in range(100, 200)]]
    assert alive == []
