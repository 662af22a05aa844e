"""Real process kills (SIGKILL of a child process) during an incremental submit + merge-collect: the
10,000-row backfill, then the same input with 10 rows changed and 5 added. After every kill a reader that
follows the dataset's `_SUCCESS` sees exactly one committed version, the old 10,000 rows or the new 10,005
(changed rows replaced, the others byte-identical), never a mix; a rerun completes to exactly 10,005 rows
with the 15 requests paid once (the emulator's item count: one batch, 15 items, per scenario).

The kill moment is an event the child reports (tests/crash_merge_child.py prints a line before and after
every file change and at each phase), never a time: the parent picks the K-th line of a class (K from a
seeded RNG; `BATCHWORK_CRASH_SEED` changes it). The first kill of each scenario is exact: the child waits
after each line for the parent's go-ahead, so the kill lands right at that line and its outcome is known
(old before the `_SUCCESS` move, new after it). The second lands on the rerun at a random line plus a
random extra delay while the child keeps running, so it may fall inside a write or a move; only "valid"
is asserted for it. Scenarios are built so that exact kills land both before and after the commit point.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchwork.engine.incremental import TMP_PREFIX
from airflow_batchwork.testing import Emulator
from tests.test_crash_kill import check_exit
from tests.test_incremental import COLUMNS, MODEL, backfill, rows_of, write_source

SEED = int(os.environ.get("BATCHWORK_CRASH_SEED", "13"))
N, ADDED = 10_000, 5
CHANGED = range(0, 1000, 100)  # 10 rows
ROOT = Path(__file__).resolve().parent.parent
WAIT = 240.0  # generous: a busy 2-core box
COMMIT_START, COMMIT_DONE = "fs mv start _SUCCESS", "fs mv done _SUCCESS"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.3) as emulator:
        yield emulator


def classify(lines: list[str]) -> list[str]:
    """The class of each reported line: `submit` (submit and wait), `merge` (collect, up to and including
    the start of the `_SUCCESS` move) or `committed` (from the line saying that move is done)."""
    out, phase = [], "submit"
    for line in lines:
        if line == "phase collect":
            phase = "merge"
        if line == COMMIT_DONE:
            phase = "committed"
        out.append(phase)
    return out


Killer = Callable[[list[str]], bool]


def at_line(cls: str, k: int) -> Killer:
    """Kill at the k-th line of class `cls`."""
    def decide(lines: list[str]) -> bool:
        classes = classify(lines)
        return classes[-1] == cls and classes.count(cls) == k
    return decide


def at_count(k: int) -> Killer:
    """Kill at the k-th line, whatever it is."""
    return lambda lines: len(lines) == k


def run_child(spec: dict[str, Any], kill: Killer | None, *, extra_delay: float = 0.0) -> tuple[list[str], bool]:
    """Run the child to its end, or SIGKILL it when `kill` says so (after `extra_delay` seconds in which a
    child without handshake keeps running). Returns its lines and whether it was killed."""
    err_path = Path(spec["state"]).parent / f"child-{time.monotonic_ns()}.err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.crash_merge_child", json.dumps(spec)], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    watchdog = threading.Timer(WAIT, proc.kill)  # a hung child is itself a failure (asserted below)
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for raw in proc.stdout:
            lines.append(raw.decode().rstrip("\n"))
            if kill is not None and kill(lines):
                if extra_delay:
                    time.sleep(extra_delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return lines, True
            if spec.get("handshake"):
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
        proc.wait(timeout=30)
        assert watchdog.is_alive(), f"the child hung; its last lines: {lines[-5:]}"
        check_exit(spec, proc.returncode, err_path.read_bytes())
        assert lines and lines[-1].startswith("phase done"), lines[-5:]
        return lines, False
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_valid(dataset: str, old: dict[str, dict[str, Any]]) -> str:
    """What a reader sees: exactly the old or exactly the new version ('old' / 'new'), else it fails."""
    rows = rows_of(dataset)  # reads only the files _SUCCESS names; one row per custom_id
    if len(rows) == N:
        assert rows == old, "a 10,000-row dataset that is not the old one"
        return "old"
    assert len(rows) == N + ADDED, f"a partial or mixed dataset: {len(rows)} rows"
    for cid, row in old.items():
        i = int(cid[1:])
        if i in CHANGED:
            assert row["text"] != rows[cid]["text"] == f"echo: describe item {i} again", cid
        else:
            assert rows[cid] == row, cid
    for i in range(ADDED):
        assert rows[f"new{i}"]["text"] == f"echo: new item {i}" and rows[f"new{i}"]["status"] == "succeeded"
    return "new"


def test_sigkilled_merge_leaves_a_valid_dataset_and_a_rerun_pays_once(emu: Emulator, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-merge")
    pristine = f"{tmp_path}/pristine/"
    write_source(tmp_path / "v1.parquet", N)
    asyncio.run(backfill(emu, tmp_path, tmp_path / "v1.parquet", pristine, "base"))
    old = rows_of(pristine)
    assert len(old) == N
    write_source(tmp_path / "v2.parquet", N, changed=CHANGED, added=ADDED)

    def scenario(name: str) -> dict[str, Any]:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copytree(tmp_path / "pristine", folder / "dataset")
        return {"base_url": emu.base_url("openai"), "model": MODEL, "columns": COLUMNS,
                "source": str(tmp_path / "v2.parquet"), "dataset": f"{folder}/dataset/",
                "state": str(folder / "state"), "identity": f"merge-{name}"}

    def batches() -> set[str]:
        return {b.id for b in emu.batches("openai")}

    def paid_once(before: set[str], spec: dict[str, Any]) -> None:
        made = [b for b in emu.batches("openai") if b.id not in before]
        assert len(made) == 1 and len(made[0].items) == 15, [(b.id, len(b.items)) for b in made]
        final = check_valid(spec["dataset"], old)
        assert final == "new"
        folder = Path(spec["dataset"])
        listed = json.loads((folder / "_SUCCESS").read_text())["files"]
        names = [p.name for p in folder.iterdir()]
        assert not [n for n in names if n.startswith(TMP_PREFIX)], names  # no leftover of a killed try
        assert sorted(n for n in names if n.startswith("part-")) == sorted(listed)

    # A reference run, not killed: its lines are the moments the kills below choose from.
    before = batches()
    spec = scenario("reference")
    reference, killed = run_child(spec, None)
    assert not killed
    paid_once(before, spec)
    done = json.loads(reference[-1].removeprefix("phase done "))
    assert done["rows"] == N + ADDED and done["incremental"]["submitted"] == 15
    classes = classify(reference)
    counts = {c: classes.count(c) for c in ("submit", "merge", "committed")}
    assert COMMIT_DONE in reference and all(counts.values()), counts

    # Each scenario: an exact kill (its outcome known), a loose kill of the rerun, then a rerun to the end.
    plans = [("merge", "old"), ("committed", "new"), ("merge", "old"), ("submit", "old"), ("committed", "new")]
    outcomes: list[str] = []
    loose_kills = 0
    for n, (cls, expected) in enumerate(plans):
        before = batches()
        spec = scenario(f"s{n}")
        k = rng.randint(1, counts[cls])
        lines, killed = run_child({**spec, "handshake": True}, at_line(cls, k))
        assert killed, f"scenario {n}: the child ended before line {k} of class {cls}"
        outcome = check_valid(spec["dataset"], old)
        assert outcome == expected, (n, cls, k, lines[-1])
        print(f"scenario {n}: exact kill at line {k} of {cls} ({lines[-1]!r}): {outcome}")
        outcomes.append(outcome)

        at = rng.randint(1, len(reference))
        lines, killed = run_child(spec, at_count(at), extra_delay=rng.uniform(0.0, 0.05))
        loose_kills += killed
        outcomes.append(check_valid(spec["dataset"], old))

        run_child(spec, None)
        paid_once(before, spec)
    print(f"reference: {len(reference)} lines {counts}; outcomes after kills: {outcomes}; loose kills: {loose_kills}")
    assert {"old", "new"} <= set(outcomes) and loose_kills >= 1, (outcomes, loose_kills)
