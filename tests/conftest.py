"""Shared fixtures: an isolated Airflow home (SQLite) and the provider emulator on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration at import: isolate it before anything imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="batchwork-airflow-"))
# dag.test() runs only DAGs found in the DAGs folder: it gets the example DAGs and the test DAGs.
DAGS_FOLDER = _AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
for _source in [*Path(__file__).parent.parent.glob("dags_examples/*.py"), *Path(__file__).parent.glob("dags/*.py")]:
    shutil.copy(_source, DAGS_FOLDER / _source.name)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
for _var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GROQ_API_KEY",
             "MISTRAL_API_KEY", "TOGETHER_API_KEY", "XAI_API_KEY"):
    os.environ.pop(_var, None)

from airflow_batchwork.testing import Emulator  # noqa: E402


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One emulator for the whole run; batches are isolated by their ids."""
    with Emulator(processing_seconds=0.3) as emu:
        yield emu


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the temporary AIRFLOW_HOME (needed by dag.test())."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    return _AIRFLOW_HOME
