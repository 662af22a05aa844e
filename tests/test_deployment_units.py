"""The deployment fixes, checked without a deployment (tests/integration/ runs them on real components).

- the webhook plugin is an `airflow.plugins` entry point (found by a default api-server), not provider info
- a mapped collect's outlet is in the serialized DAG, where the dag-processor registers it
- on a triggerer, a batch trigger's event comes no sooner than `min_resume_delay` after the deferral
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import Asset, AssetAlias, dag

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.get_provider_info import get_provider_info
from airflow_batchwork.operators.batch import CollectResultsOperator
from airflow_batchwork.plugins.webhooks import BatchworkWebhooksPlugin
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import EMULATOR_API_KEY, connection_env
from airflow_batchwork.triggers.batch import BatchCompleteTrigger

ROOT = Path(__file__).resolve().parents[1]


def test_plugin_is_an_airflow_plugins_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["airflow.plugins"]["batchwork_webhooks"]
    module, _, name = target.partition(":")
    assert (module, name) == ("airflow_batchwork.plugins.webhooks", "BatchworkWebhooksPlugin")
    assert BatchworkWebhooksPlugin.name == "batchwork_webhooks"
    # Not in provider info as well: with lazy_discover_providers=False it would be registered twice.
    assert "plugins" not in get_provider_info()


def _serialized_outlets(dag_obj: object) -> dict[str, list[object]]:
    from airflow.dag_processing.collection import _get_dag_assets
    from airflow.serialization.definitions.assets import SerializedAsset, SerializedAssetAlias
    from airflow.serialization.serialized_objects import DagSerialization, LazyDeserializedDAG

    lazy = LazyDeserializedDAG(data=json.loads(json.dumps(DagSerialization.to_dict(dag_obj))))
    found: dict[str, list[object]] = {}
    for kind in (SerializedAsset, SerializedAssetAlias):
        for task_id, port in _get_dag_assets(lazy, of=kind, inlets=False):
            found.setdefault(task_id, []).append(port.name)
    return found


def test_nightly_eval_mapped_collect_has_its_alias_at_parse_time() -> None:
    from tests.airflow_helpers import load_dag

    outlets = _serialized_outlets(load_dag("batchwork_nightly_eval"))
    assert outlets.get("collect") == ["batchwork-results:batchwork_nightly_eval.collect"]


def test_mapped_collect_outlet_choices() -> None:
    @dag(dag_id="mapped_outlets", schedule=None)
    def mapped_outlets() -> None:
        jobs = [{"provider": "openai"}]
        CollectResultsOperator.partial(task_id="templated", output_path="s3://b/{{ run_id }}/").expand(job=jobs)
        CollectResultsOperator.partial(task_id="explicit", results_asset=Asset("s3://b/all")).expand_kwargs(
            [{"job": j, "output_path": "s3://b/x/"} for j in jobs])
        CollectResultsOperator.partial(task_id="static", output_path="s3://b/fixed.parquet").expand(job=jobs)
        CollectResultsOperator.partial(task_id="none", results_asset=False).expand_kwargs(
            [{"job": j, "output_path": "s3://b/y/"} for j in jobs])
        CollectResultsOperator.partial(task_id="mine", outlets=[AssetAlias("mine")]).expand_kwargs(
            [{"job": j, "output_path": "s3://b/z/"} for j in jobs])

    outlets = _serialized_outlets(mapped_outlets())
    assert outlets == {
        "templated": ["batchwork-results:mapped_outlets.templated"],
        "explicit": ["s3://b/all"],
        "static": ["s3://b/fixed.parquet"],
        "mine": ["mine", "batchwork-results:mapped_outlets.mine"],
    }


def test_unmapped_collect_declares_its_outlet_once() -> None:
    alias = AssetAlias("batchwork-results:d.collect")
    op = CollectResultsOperator(task_id="collect", job={}, output_path="s3://b/{{ ds }}/", results_asset=alias,
                                outlets=[alias])
    assert op.outlets == [alias]


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        for key, value in connection_env(emulator).items():
            monkeypatch.setenv(key, value)
        yield emulator


async def _job(emulator: Emulator) -> dict[str, object]:
    creds = {"openai": Credentials(EMULATOR_API_KEY, emulator.base_url("openai"))}
    async with BatchClient(creds) as client:
        return (await client.submit("openai/gpt-4o-mini", [{"prompt": "p"}])).to_dict()


async def test_event_held_after_deferral_on_a_triggerer(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__BATCHWORK__MIN_RESUME_DELAY", "3")
    job = await _job(emu)
    deferred_at = time.time()
    trigger = BatchCompleteTrigger(job=job, poll_interval=0.1, end_time=deferred_at + 60, deferred_at=deferred_at)
    trigger.task_instance = SimpleNamespace(task_id="collect")  # what the triggerer attaches
    events = [event async for event in trigger.run()]
    assert [e.payload["status"] for e in events] == ["completed"]
    assert time.time() - deferred_at >= 3  # a lower bound: sleep never returns early


async def test_no_hold_inline_and_none_for_an_old_deferral(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__BATCHWORK__MIN_RESUME_DELAY", "120")
    job = await _job(emu)
    start = time.time()
    inline = BatchCompleteTrigger(job=job, poll_interval=0.1, end_time=start + 60, deferred_at=start)
    assert [e.payload["status"] async for e in inline.run()] == ["completed"]  # dag.test(): no task_instance
    restored = BatchCompleteTrigger(job=job, poll_interval=0.1, end_time=start + 60, deferred_at=start - 600)
    restored.task_instance = SimpleNamespace(task_id="collect")  # a triggerer restart long after the deferral
    assert [e.payload["status"] async for e in restored.run()] == ["completed"]
    assert time.time() - start < 60  # far below the 120 s hold either would have had


def test_deferred_at_survives_serialization() -> None:
    job = {"provider": "openai", "model": "openai.chat/m", "batches": [{"id": "batch_1", "request_count": 1}],
           "request_count": 1}
    trigger = BatchCompleteTrigger(job=job, deferred_at=1234.5)
    path, kwargs = trigger.serialize()
    assert kwargs["deferred_at"] == 1234.5 and BatchCompleteTrigger(**kwargs).serialize() == (path, kwargs)
