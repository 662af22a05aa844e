"""Helpers for tests that run DAGs with dag.test() against the emulator."""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any

from airflow.models.xcom import XComModel
from airflow.sdk import DAG
from airflow.utils.session import create_session


@cache
def _dags() -> dict[str, DAG]:
    found: dict[str, DAG] = {}
    for path in sorted(Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"batchwork_test_dags.{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.update({v.dag_id: v for v in vars(module).values() if isinstance(v, DAG)})
    return found


def load_dag(dag_id: str) -> DAG:
    """A DAG from the test DAGs folder (where dag.test() requires it to live)."""
    return _dags()[dag_id]


def xcom(run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """One XCom value of a finished dag.test() run."""
    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key=key, map_indexes=map_index
        )
        row = session.scalars(query).first()
        return None if row is None else XComModel.deserialize_value(row)


def task_states(run: Any) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis}
