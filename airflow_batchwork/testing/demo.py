"""`make demo`: run the packaged demo DAG end to end against the emulator, offline.

Creates a throwaway Airflow home (SQLite) under `.demo/`, starts the emulator, points the default
connections at it, runs `dag.test()` and prints where the Parquet landed with a per-status summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO_DAG = Path(__file__).with_name("demo_dag.py")


def _prepare_home(root: Path, dag_file: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    dags = root / "dags"
    dags.mkdir(parents=True)
    shutil.copy(dag_file, dags / dag_file.name)
    os.environ.update({
        "AIRFLOW_HOME": str(root.resolve() / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("BATCHWORK_DEMO_LOG_LEVEL", "WARNING"),
        "AIRFLOW_VAR_BATCHWORK_OUTPUT_ROOT": f"file://{root.resolve() / 'output'}",
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return dags / dag_file.name


def _load_dag(path: Path, dag_id: str) -> object:
    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location("batchwork_demo_dag", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if isinstance(value, DAG) and value.dag_id == dag_id:
            return value
    raise SystemExit(f"no DAG {dag_id!r} in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dag-file", default=str(DEMO_DAG), help="default: the demo DAG packaged with the wheel")
    parser.add_argument("--dag-id", default="batchwork_demo")
    parser.add_argument("--workdir", default=".demo")
    args = parser.parse_args(argv)

    started = time.time()
    root = Path(args.workdir)
    print(f"[demo] Airflow home in {root}/airflow (SQLite), DAG {args.dag_id}")
    dag_path = _prepare_home(root, Path(args.dag_file))

    from airflow_batchwork.testing import Emulator
    from airflow_batchwork.testing.airflow_env import connection_env

    with Emulator(processing_seconds=3) as emu:
        os.environ.update(connection_env(emu))
        print(f"[demo] emulator serving {', '.join(emu.providers)} on {emu.url}")
        dag = _load_dag(dag_path, args.dag_id)
        run = dag.test()  # type: ignore[attr-defined]

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids="collect", key="return_value"
        )).first()
        manifest = XComModel.deserialize_value(row) if row is not None else None
    print(f"[demo] DAG run finished: {run.state} in {time.time() - started:.1f}s")
    if not manifest:
        print("[demo] no manifest: the collect task did not finish; set BATCHWORK_DEMO_LOG_LEVEL=INFO to see why")
        return 1
    print(f"[demo] Parquet written to {manifest['path']} ({', '.join(manifest['files'])})")
    print(f"[demo] rows: {manifest['rows']}  provider: {manifest['provider']}  model: {manifest['model']}")
    print(f"[demo] per status: {json.dumps(manifest['counts'], sort_keys=True)}")

    import pyarrow.parquet as pq

    table = pq.read_table(manifest["path"].removeprefix("file://"),
                          columns=["custom_id", "status", "text", "output_tokens", "error_code"])
    for record in table.sort_by("custom_id").to_pylist():
        text = (record["text"] or f"<{record['error_code']}>")[:70]
        print(f"  {record['custom_id']:10s} {record['status']:10s} {text}")
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
