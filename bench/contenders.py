"""The collect contenders: other ways to turn a result file into the same normalized columns.

Every contender writes the columns `custom_id, status, text, input_tokens, output_tokens,
total_tokens, response` (the raw line) with the same values as ours, so the timings compare equal
work. Each format is described once as data (`FORMATS`) and every engine derives its expressions
from that description.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Path_ = tuple[str | int, ...]
COLUMNS = ("custom_id", "status", "text", "input_tokens", "output_tokens", "total_tokens", "response")


@dataclass(frozen=True)
class Format:
    """Where one provider's result line keeps each normalized value."""

    custom_id: Path_
    text: Path_
    input_tokens: Path_
    output_tokens: Path_
    total_tokens: Path_ | None  # None: input + output
    ok_equals: tuple[tuple[Path_, Any], ...] = ()  # succeeded when every path holds the value …
    ok_null: tuple[Path_, ...] = ()  # … and every one of these paths is null

    def string_paths(self) -> list[Path_]:
        keys = [self.custom_id, self.text, *self.ok_null]
        return keys + [p for p, v in self.ok_equals if isinstance(v, str)]

    def int_paths(self) -> list[Path_]:
        keys = [self.input_tokens, self.output_tokens, *([self.total_tokens] if self.total_tokens else [])]
        return keys + [p for p, v in self.ok_equals if isinstance(v, int)]


FORMATS = {
    "openai": Format(
        custom_id=("custom_id",),
        text=("response", "body", "choices", 0, "message", "content"),
        input_tokens=("response", "body", "usage", "prompt_tokens"),
        output_tokens=("response", "body", "usage", "completion_tokens"),
        total_tokens=("response", "body", "usage", "total_tokens"),
        ok_equals=((("response", "status_code"), 200),),
        ok_null=(("error", "message"),),
    ),
    "anthropic": Format(
        custom_id=("custom_id",),
        text=("result", "message", "content", 0, "text"),
        input_tokens=("result", "message", "usage", "input_tokens"),
        output_tokens=("result", "message", "usage", "output_tokens"),
        total_tokens=None,
        ok_equals=((("result", "type"), "succeeded"),),
    ),
    "gemini": Format(
        custom_id=("key",),
        text=("response", "candidates", 0, "content", "parts", 0, "text"),
        input_tokens=("response", "usageMetadata", "promptTokenCount"),
        output_tokens=("response", "usageMetadata", "candidatesTokenCount"),
        total_tokens=("response", "usageMetadata", "totalTokenCount"),
        ok_null=(("error", "message"),),
    ),
}

BATCH_ROWS = 131_072


# ---------------------------------------------------------------- plain Python (naive, orjson)

def _get(obj: Any, path: Path_) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or len(obj) <= key:
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
    return obj


def _row(fmt: Format, obj: Any, line: str) -> tuple[Any, ...]:
    ok = all(_get(obj, p) == v for p, v in fmt.ok_equals) and all(_get(obj, p) is None for p in fmt.ok_null)
    if not ok:
        return (_get(obj, fmt.custom_id), "errored", None, None, None, None, line)
    tin, tout = _get(obj, fmt.input_tokens), _get(obj, fmt.output_tokens)
    total = _get(obj, fmt.total_tokens) if fmt.total_tokens else tin + (tout or 0)
    return (_get(obj, fmt.custom_id), "succeeded", _get(obj, fmt.text), tin, tout, total, line)


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(c, pa.int64() if c.endswith("_tokens") else pa.string()) for c in COLUMNS])


def run_naive(fmt_name: str, src: Path, dst: Path) -> int:
    """json.loads every line, keep every row in memory, one table at the end."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fmt = FORMATS[fmt_name]
    with src.open() as handle:
        rows = [_row(fmt, json.loads(line), line.rstrip("\n")) for line in handle if line.strip()]
    table = pa.Table.from_arrays([pa.array(col, t) for col, t in zip(zip(*rows, strict=True), _schema().types,
                                                                       strict=True)], schema=_schema())
    pq.write_table(table, dst)
    return table.num_rows


def run_orjson(fmt_name: str, src: Path, dst: Path) -> int:
    """orjson per line, rows streamed to Parquet in batches of BATCH_ROWS (bounded memory)."""
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    fmt, schema, count = FORMATS[fmt_name], _schema(), 0
    with src.open("rb") as handle, pq.ParquetWriter(dst, schema) as writer:
        rows: list[tuple[Any, ...]] = []

        def flush() -> None:
            columns = zip(*rows, strict=True)
            writer.write_batch(pa.RecordBatch.from_arrays(
                [pa.array(c, t) for c, t in zip(columns, schema.types, strict=True)], schema=schema))
            rows.clear()

        for raw in handle:
            if raw.strip():
                rows.append(_row(fmt, orjson.loads(raw), raw.rstrip(b"\n").decode()))
                if len(rows) == BATCH_ROWS:
                    count += len(rows)
                    flush()
        if rows:
            count += len(rows)
            flush()
    return count


# ---------------------------------------------------------------- pyarrow.json

def _arrow_type(paths: list[tuple[Path_, Any]]) -> Any:
    """The nested Arrow type holding every (path, leaf type)."""
    import pyarrow as pa

    if len(paths) == 1 and not paths[0][0]:
        return paths[0][1]
    if isinstance(paths[0][0][0], int):
        return pa.list_(_arrow_type([(p[1:], t) for p, t in paths]))
    children: dict[str, list[tuple[Path_, Any]]] = {}
    for p, t in paths:
        children.setdefault(str(p[0]), []).append((p[1:], t))
    return pa.struct([(k, _arrow_type(v)) for k, v in children.items()])


def _leaves(fmt: Format) -> list[tuple[Path_, Any]]:
    import pyarrow as pa

    return [(p, pa.string()) for p in fmt.string_paths()] + [(p, pa.int64()) for p in fmt.int_paths()]


def run_pyarrow(fmt_name: str, src: Path, dst: Path) -> int:
    """pyarrow's JSON reader over the whole file with an explicit schema, then Arrow compute."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    fmt = FORMATS[fmt_name]
    schema = pa.schema(list(_arrow_type(_leaves(fmt))))
    table = pj.read_json(src, parse_options=pj.ParseOptions(explicit_schema=schema,
                                                             unexpected_field_behavior="ignore"))

    def get(path: Path_) -> Any:
        array: Any = table.column(str(path[0]))
        for key in path[1:]:
            array = pc.list_element(array, key) if isinstance(key, int) else pc.struct_field(array, key)
        return array

    ok = pa.chunked_array([pa.array([True] * table.num_rows)])
    for p, v in fmt.ok_equals:
        ok = pc.and_(ok, pc.fill_null(pc.equal(get(p), v), False))
    for p in fmt.ok_null:
        ok = pc.and_(ok, pc.is_null(get(p)))
    tin, tout = get(fmt.input_tokens), get(fmt.output_tokens)
    total = get(fmt.total_tokens) if fmt.total_tokens else pc.add(tin, pc.fill_null(tout, 0))
    raw = pa.memory_map(str(src)).read_buffer()
    lines = pc.split_pattern(pa.array([raw.to_pybytes()], pa.large_binary()), "\n").flatten()
    lines = lines.filter(pc.greater(pc.binary_length(lines), 0)).cast(pa.large_string())

    def when_ok(values: Any) -> Any:
        return pc.if_else(ok, values, pa.nulls(table.num_rows, values.type))

    out = pa.table({"custom_id": get(fmt.custom_id), "status": pc.if_else(ok, "succeeded", "errored"),
                    "text": when_ok(get(fmt.text)), "input_tokens": when_ok(tin),
                    "output_tokens": when_ok(tout), "total_tokens": when_ok(total), "response": lines})
    pq.write_table(out, dst)
    return out.num_rows


# ---------------------------------------------------------------- polars

def _polars_type(paths: list[tuple[Path_, Any]]) -> Any:
    import polars as pl

    if len(paths) == 1 and not paths[0][0]:
        return paths[0][1]
    if isinstance(paths[0][0][0], int):
        return pl.List(_polars_type([(p[1:], t) for p, t in paths]))
    children: dict[str, list[tuple[Path_, Any]]] = {}
    for p, t in paths:
        children.setdefault(str(p[0]), []).append((p[1:], t))
    return pl.Struct({k: _polars_type(v) for k, v in children.items()})


def run_polars(fmt_name: str, src: Path, dst: Path) -> int:
    """Lines read as one string column, decoded with a typed `json_decode`, streamed to Parquet."""
    import polars as pl

    fmt = FORMATS[fmt_name]
    leaves = [(p, pl.String) for p in fmt.string_paths()] + [(p, pl.Int64) for p in fmt.int_paths()]
    dtype = _polars_type(leaves)

    def get(path: Path_) -> Any:
        expr = pl.col("j")
        for key in path:
            expr = expr.list.get(key, null_on_oob=True) if isinstance(key, int) else expr.struct.field(key)
        return expr

    ok = pl.lit(True)
    for p, v in fmt.ok_equals:
        ok = ok & (get(p) == v).fill_null(False)
    for p in fmt.ok_null:
        ok = ok & get(p).is_null()
    tin, tout = get(fmt.input_tokens), get(fmt.output_tokens)
    total = get(fmt.total_tokens) if fmt.total_tokens else tin + tout.fill_null(0)
    lines = pl.scan_csv(src, has_header=False, separator="\x1f", quote_char=None, new_columns=["response"],
                        schema={"response": pl.String})
    query = (lines.filter(pl.col("response").str.len_bytes() > 0)
             .with_columns(pl.col("response").str.json_decode(dtype).alias("j"))
             .with_columns(ok.alias("ok"))
             .select(get(fmt.custom_id).alias("custom_id"),
                     pl.when(pl.col("ok")).then(pl.lit("succeeded")).otherwise(pl.lit("errored")).alias("status"),
                     pl.when(pl.col("ok")).then(get(fmt.text)).alias("text"),
                     pl.when(pl.col("ok")).then(tin).alias("input_tokens"),
                     pl.when(pl.col("ok")).then(tout).alias("output_tokens"),
                     pl.when(pl.col("ok")).then(total).alias("total_tokens"),
                     pl.col("response")))
    query.sink_parquet(dst)
    return int(pl.scan_parquet(dst).select(pl.len()).collect().item())


# ---------------------------------------------------------------- duckdb

def _duck_structure(paths: list[tuple[Path_, str]]) -> Any:
    if len(paths) == 1 and not paths[0][0]:
        return paths[0][1]
    if isinstance(paths[0][0][0], int):
        return [_duck_structure([(p[1:], t) for p, t in paths])]
    children: dict[str, list[tuple[Path_, str]]] = {}
    for p, t in paths:
        children.setdefault(str(p[0]), []).append((p[1:], t))
    return {k: _duck_structure(v) for k, v in children.items()}


def run_duckdb(fmt_name: str, src: Path, dst: Path) -> int:
    """Lines read as one VARCHAR column, `json_transform` to a typed struct, COPY TO Parquet."""
    import duckdb

    fmt = FORMATS[fmt_name]
    leaves = [(p, "VARCHAR") for p in fmt.string_paths()] + [(p, "BIGINT") for p in fmt.int_paths()]
    structure = json.dumps(_duck_structure(leaves))

    def get(path: Path_) -> str:
        expr = "j"
        for key in path:
            expr += f"[{key + 1}]" if isinstance(key, int) else f".{key}"
        return expr

    def lit(value: Any) -> str:
        return f"'{value}'" if isinstance(value, str) else str(value)

    conds = [f"coalesce({get(p)} = {lit(v)}, false)" for p, v in fmt.ok_equals] + \
            [f"{get(p)} IS NULL" for p in fmt.ok_null]
    ok = " AND ".join(conds)
    tin, tout = get(fmt.input_tokens), get(fmt.output_tokens)
    total = get(fmt.total_tokens) if fmt.total_tokens else f"{tin} + coalesce({tout}, 0)"
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    sql = f"""
        COPY (
          SELECT {get(fmt.custom_id)} AS custom_id,
                 CASE WHEN ok THEN 'succeeded' ELSE 'errored' END AS status,
                 CASE WHEN ok THEN {get(fmt.text)} END AS text,
                 CASE WHEN ok THEN {tin} END AS input_tokens,
                 CASE WHEN ok THEN {tout} END AS output_tokens,
                 CASE WHEN ok THEN {total} END AS total_tokens,
                 response
          FROM (SELECT *, {ok} AS ok FROM (
                  SELECT line AS response, json_transform(line, '{structure}') AS j
                  FROM read_csv('{src}', columns={{'line': 'VARCHAR'}}, delim='\x1f', quote='', escape='',
                                header=false, auto_detect=false, max_line_size=16777216)
                  WHERE length(line) > 0))
        ) TO '{dst}' (FORMAT parquet)
    """
    con.execute(sql)
    count = con.execute(f"SELECT count(*) FROM read_parquet('{dst}')").fetchone()
    return int(count[0]) if count else 0


RUNNERS: dict[str, Callable[[str, Path, Path], int]] = {
    "naive": run_naive, "orjson": run_orjson, "pyarrow": run_pyarrow, "polars": run_polars, "duckdb": run_duckdb,
}


def digest(path: Path) -> str:
    """A fingerprint of the seven compared columns of a Parquet file (row order included)."""
    import hashlib

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    hashes = {c: hashlib.sha256() for c in COLUMNS}
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=list(COLUMNS)):
        for name in COLUMNS:
            values = pc.cast(batch.column(name), "large_string").to_pylist()
            hashes[name].update("".join(("\x00" if v is None else v) + "\x1e" for v in values).encode())
    return ",".join(f"{c}={hashes[c].hexdigest()[:12]}" for c in COLUMNS)
