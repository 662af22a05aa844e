"""Every Python block of README.md runs, exactly as printed, against the emulator.

A block may say in its first line which documented steps precede it: `# After: …` names steps outside
Python (done here by the fixtures: a migrated metadata DB, the DAG file in the DAGs folder);
`# After the … block(s) above` continues the namespace of the previous block.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.testing import Emulator

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SUMMARIES = Path("/tmp/batchwork-summaries")


def blocks(lang: str = "python") -> list[str]:
    return [body for kind, body in BLOCK.findall(README.read_text()) if kind == lang]


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end > 0 else None]


def run_block(code: str, namespace: dict[str, object] | None = None) -> tuple[str, dict[str, object]]:
    namespace = namespace if namespace is not None else {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    return out.getvalue(), namespace


def in_section(title: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(section(title)) if kind == "python"]


def test_every_python_block_is_covered_by_a_test_below() -> None:
    covered = [*in_section("A minimal DAG"), *in_section("What will this cost"),
               *in_section("From a plain script (no Airflow)"), *in_section("Testing your DAGs offline: the emulator"),
               *in_section("Structured output, embeddings, cost and automatic resubmission"),
               *in_section("Requests")]
    assert sorted(covered) == sorted(blocks()) and len(blocks()) == 10


def test_minimal_dag_runs_offline_as_documented(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dag_file, runner = in_section("A minimal DAG")
    assert runner.startswith("# After: `airflow db migrate`, and the DAG above saved as summarise.py")
    from airflow.configuration import conf

    (Path(conf.get("core", "dags_folder")) / "summarise.py").write_text(dag_file)
    shutil.rmtree(SUMMARIES, ignore_errors=True)
    for var in [v for v in os.environ if v.startswith("AIRFLOW_CONN_")]:
        monkeypatch.delenv(var)
    saved = dict(os.environ)
    try:
        printed, _ = run_block(runner)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert printed.strip().splitlines()[-1] == "success"
    files = list(SUMMARIES.glob("*/part-00000.parquet"))
    assert len(files) == 1
    table = pq.read_table(files[0])
    assert sorted(table.column("custom_id").to_pylist()) == ["a", "b"]
    assert table.column("text").to_pylist()[0].startswith("echo: Summarise:")


def test_cost_estimate_block_prints_an_estimate() -> None:
    (code,) = in_section("What will this cost")
    printed, _ = run_block(code)
    assert re.fullmatch(r"about \$\d+\.\d\d for 1000 requests \(openai/gpt-4o-mini at .* per 1M tokens in batch, "
                        r"as of \d{4}-\d\d-\d\d\)\n", printed), printed


def test_plain_script_block_runs_against_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = in_section("From a plain script (no Airflow)")
    monkeypatch.chdir(tmp_path)
    with Emulator(processing_seconds=0) as emu:  # done at once: the block's poll_interval=30 never sleeps
        monkeypatch.setenv("OPENAI_API_KEY", "emulator-key")
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url("openai"))
        printed, _ = run_block(code)
    assert "a succeeded echo: Hello" in printed
    assert pq.read_table(tmp_path / "results.parquet").num_rows == 1


def test_parts_and_tools_block_runs_against_the_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = in_section("Requests")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shoe.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "invoice.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    with Emulator(processing_seconds=0) as emu:  # done at once: the block's poll_interval=30 never sleeps
        monkeypatch.setenv("ANTHROPIC_API_KEY", "emulator-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", emu.base_url("anthropic"))
        printed, _ = run_block(code)
    lines = sorted(printed.splitlines())
    assert lines[0] == "invoice stop echo: What is the total? (saw 0 images, 1 file)", lines
    assert lines[1] == "photo stop echo: Describe this product. (saw 1 image, 0 files)", lines
    assert lines[2].startswith('weather tool_calls [{"id":"toolu_') and '"name":"get_weather"' in lines[2], lines


def test_emulator_pytest_block_passes() -> None:
    (code,) = in_section("Testing your DAGs offline: the emulator")
    run_block(code)  # ends by calling its test function, which asserts


def test_beyond_blocks_build_operators() -> None:
    namespace: dict[str, object] | None = None
    for code in in_section("Structured output, embeddings, cost and automatic resubmission"):
        continues = re.match(r"# After the .*blocks? above", code) is not None
        _, namespace = run_block(code, namespace if continues else None)
    assert namespace is not None and namespace["submit"].__class__.__name__ == "SubmitBatchOperator"


def test_no_links_outside_the_repository() -> None:
    for doc in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)]+)\)", text):
            if target.startswith(("http://", "https://", "#")):
                raise AssertionError(f"{doc.name}: link outside the repository: {target}")
            assert (doc.parent / target.split("#")[0]).resolve().is_relative_to(README.parent.resolve()), target
            assert (doc.parent / target.split("#")[0]).exists(), f"{doc.name}: broken link {target}"
        assert "../shared" not in text, doc.name
    # Sections of a contract that is not in the repository (docs/providers.md still has two: its owners').
    for doc in (README, *(README.parent / "docs" / name for name in ("airflow.md", "emulator.md", "errors.md",
                                                                    "beyond.md"))):
        assert "ontract §" not in doc.read_text(), doc.name


def test_results_table_lists_each_column_once() -> None:
    rows = [line.split("|")[1].strip() for line in section("Results: one Parquet schema for every provider")
            .splitlines() if line.startswith("| ") and not line.startswith("| column")]
    assert len(rows) == len(set(rows))


def test_documented_progress_line_is_the_one_the_trigger_logs() -> None:
    from airflow_batchwork.engine.progress import ProgressReporter
    from airflow_batchwork.values.status import Counts, JobStatus

    now = [0.0]
    reporter = ProgressReporter(clock=lambda: now[0])
    reporter.update(JobStatus(state="in_progress", counts=Counts(total=1000, succeeded=190, processing=810)))
    now[0] = 240.0
    line = reporter.update(JobStatus(state="in_progress",
                                     counts=Counts(total=1000, succeeded=809, errored=3, processing=188)))
    # The trigger logs "<provider> <batch ids> — <line>, elapsed <n>s" (triggers/batch.py).
    for doc in (section("Watching progress"), (README.parent / "docs" / "airflow.md").read_text()):
        assert f"— {line}, elapsed 240s" in doc, (line, doc)


def test_flow_diagram_names_every_step() -> None:
    (diagram,) = blocks("mermaid")
    for step in ("SubmitBatchOperator", "BatchCompleteTrigger", "CollectResultsOperator", "Parquet", "downstream"):
        assert step in diagram, step
    assert diagram.startswith("flowchart")
