"""What a newcomer meets first: the demo (quiet, and runnable from a built wheel), the emulator CLI's
paste-ready lines, the install section and LICENSE."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from airflow_batchwork.core import BatchClient
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.emulator import paste_lines

ROOT = Path(__file__).parent.parent


def test_emulator_cli_lines_work_when_pasted(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line for line in paste_lines(emulator).splitlines() if line.startswith("export ")]
    env: dict[str, str] = {}
    for line in lines:
        for word in shlex.split(line)[1:]:  # what the shell would do with the pasted line
            key, _, value = word.partition("=")
            env[key] = value
    assert {f"AIRFLOW_CONN_BATCHWORK_{p.upper()}" for p in emulator.providers} <= set(env)
    assert env["OPENAI_BASE_URL"] == emulator.base_url("openai") and env["GEMINI_API_KEY"]
    conn = json.loads(env["AIRFLOW_CONN_BATCHWORK_ANTHROPIC"])
    assert conn["host"] == emulator.base_url("anthropic") and conn["extra"] == {"provider": "anthropic"}
    # The plain-script lines really reach the emulator.
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    async def listed() -> None:
        async with BatchClient() as client:
            async for _ in client.adapter("openai").list_batches(limit=1):
                break

    import asyncio

    before = len(emulator.requests)
    asyncio.run(listed())
    assert len(emulator.requests) == before + 1


def test_clean_demo_run_is_quiet_and_succeeds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENAI"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # this checkout's code
    done = subprocess.run([sys.executable, "-m", "airflow_batchwork.testing.demo", "--workdir", str(tmp_path / "d")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert '[demo] per status: {"errored": 1, "succeeded": 4}' in output
    noise = [line for line in output.splitlines() if not line.startswith(("[demo]", "  sku-"))]
    assert noise == [], "\n".join(noise)  # no AssetModel warnings, no "XCom not found", nothing else


def test_wheel_ships_the_demo_dag_license_and_price_data(tmp_path: Path) -> None:
    # Built from a copy of the tracked files: an in-tree build leaves `airflow_batchwork.egg-info` in the
    # project root, and every later process started there would see the distribution twice (its plugin
    # entry point registered twice, a warning in the demo).
    source = tmp_path / "src"
    left_before = set(ROOT.glob("*.egg-info"))
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file() and not (ROOT / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert set(ROOT.glob("*.egg-info")) == left_before
    (wheel,) = tmp_path.glob("airflow_batchwork-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for wanted in ("airflow_batchwork/testing/demo_dag.py", "airflow_batchwork/testing/demo.py",
                   "airflow_batchwork/data/prices.json"):
        assert wanted in names, wanted
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # The demo's default DAG is the packaged one, not a file of the clone.
    from airflow_batchwork.testing import demo

    assert demo.DEMO_DAG.is_relative_to(Path(demo.__file__).parent)


def test_license_and_install_section_tell_the_truth() -> None:
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install and connect"):readme.index("## A minimal DAG")]
    for dependency in project["dependencies"]:
        assert f"`{dependency}`" in install, dependency
    assert "pip install airflow-batchwork" not in readme  # not published
