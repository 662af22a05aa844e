"""The provider on a real Airflow 3.3 deployment: separate components, PostgreSQL, LocalExecutor then Celery.

Everything is asserted from what a deployment shows: the REST API (run and task states, tries, the
triggerer job holding a deferred task, XComs, event logs, task logs), the trigger log files the triggerer
writes (named after its job id), the Parquet files, and the emulator's own record of batches created.
Waits are event-driven (poll the REST API with generous deadlines); nothing depends on timing.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from airflow_batchwork.testing.faults import FaultConfig
from tests.integration.conftest import GateClock
from tests.integration.stack import Api, Deployment, Processes, airflow_env, free_port, make_home, wait_for

pytestmark = pytest.mark.integration

ENRICH, EVAL, BACKFILL = "batchwork_enrichment", "batchwork_nightly_eval", "batchwork_backfill_migration"
EXAMPLES = (ENRICH, EVAL, BACKFILL)
ALIAS = "batchwork-results:batchwork_nightly_eval.collect"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"integration-webhook-secret-0123").decode()
TERMINAL = {"success", "failed"}
RUN_DEADLINE = 420.0  # seconds for a batch of runs on a busy 2-core box (they take ~1 min when idle)


# -- a deployment per executor -------------------------------------------------------------------------------


def deployment(executor: str, name: str, *, base: Path, procs: Processes, services: dict[str, str], emu: Emulator,
               pythonpath: str, tickets: Path) -> Deployment:
    home = make_home(base, name)
    api_port = free_port()
    extra = {
        **connection_env(emu),
        "AIRFLOW_VAR_BATCHWORK_OUTPUT_ROOT": f"file://{base}/out-{name}",
        "AIRFLOW_VAR_BATCHWORK_BACKFILL_INPUT": f"file://{tickets}",
        "OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    if "BATCHWORK_MIN_RESUME_DELAY" in os.environ:  # e.g. 0, to watch Airflow 3.3's race without the hold
        extra["AIRFLOW__BATCHWORK__MIN_RESUME_DELAY"] = os.environ["BATCHWORK_MIN_RESUME_DELAY"]
    if executor == "CeleryExecutor":
        extra |= {
            "AIRFLOW__CELERY__BROKER_URL": services["redis"],
            # Keep the driver explicit: SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3, not psycopg2.
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + services["sql"],
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        }
    env = airflow_env(home=home, sql_url=services["sql"], executor=executor, api_port=api_port,
                      pythonpath=pythonpath, extra=extra)
    return Deployment(procs=procs, home=home, env=env, api_port=api_port)


def stop_airflow(procs: Processes) -> None:
    procs.stop_all(keep=lambda p: p.name in ("postgres", "redis"))


@pytest.fixture(scope="class")
def local(base: Path, procs: Processes, services: dict[str, str], emu: Emulator, pythonpath: str,
          tickets: Path) -> Iterator[Deployment]:
    dep = deployment("LocalExecutor", "local", base=base, procs=procs, services=services, emu=emu,
                     pythonpath=pythonpath, tickets=tickets)
    try:
        dep.migrate()
        dep.start_api_server()
        dep.start_dag_processor()
        dep.start_scheduler()
        with Api(dep.api_url) as client:
            dep.start_triggerer_job("triggerer", client)
        yield dep
    finally:
        stop_airflow(procs)


@pytest.fixture(scope="class")
def celery(base: Path, procs: Processes, services: dict[str, str], emu: Emulator, pythonpath: str,
           tickets: Path) -> Iterator[Deployment]:
    dep = deployment("CeleryExecutor", "celery", base=base, procs=procs, services=services, emu=emu,
                     pythonpath=pythonpath, tickets=tickets)
    try:
        dep.migrate()  # the same metadata DB as the LocalExecutor run: a no-op, or the full schema if alone
        dep.start_api_server()
        dep.start_dag_processor()
        dep.start_scheduler()
        with Api(dep.api_url) as client:  # one after the other, to know which process runs which job
            dep.start_triggerer_job("triggerer-a", client)
            dep.start_triggerer_job("triggerer-b", client)
        dep.start_celery_worker("worker-1")
        dep.start_celery_worker("worker-2")
        yield dep
    finally:
        stop_airflow(procs)


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    dep: Deployment = request.getfixturevalue(request.cls.stack)
    client = Api(dep.api_url)
    yield client
    client.close()


# -- driving runs ----------------------------------------------------------------------------------------------


@dataclass
class Watch:
    """What was seen of a set of runs while they ran: deferrals (with the triggerer job holding them)."""

    runs: list[tuple[str, str]]
    deferred: dict[tuple[str, str, str, int], set[int]] = field(default_factory=dict)
    final: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def snapshot(self, api: Api) -> dict[tuple[str, str], tuple[str, list[dict[str, Any]]]]:
        seen = {}
        for dag_id, run_id in self.runs:
            state = api.run(dag_id, run_id)["state"]  # first: a terminal run's task list below is final
            tis = api.task_instances(dag_id, run_id)
            for ti in tis:
                if ti["state"] == "deferred":
                    # (the response's `triggerer_job` is the job that queued the task, in Airflow 3.3)
                    holder = (ti.get("trigger") or {}).get("triggerer_id")
                    key = (dag_id, run_id, ti["task_id"], ti["map_index"])
                    self.deferred.setdefault(key, set()).update({holder} if holder is not None else set())
            seen[(dag_id, run_id)] = (state, tis)
        return seen


def drive(api: Api, dep: Deployment, runs: list[tuple[str, str]], *,
          on_tick: Callable[[Watch, Any], None] | None = None, timeout: float = RUN_DEADLINE) -> Watch:
    """Poll the REST API until every run is terminal, recording deferrals; `on_tick` may act (kill, restart)."""
    watch = Watch(runs=runs)

    def done() -> bool:
        seen = watch.snapshot(api)
        if on_tick is not None:
            on_tick(watch, seen)
        if all(state in TERMINAL for state, _ in seen.values()):
            watch.final = {key: tis for key, (_, tis) in seen.items()}
            return True
        return False

    wait_for(done, timeout=timeout, what=f"runs {runs} to finish", every=1.0, procs=dep.procs)
    for (dag_id, run_id), tis in watch.final.items():
        states = {(t["task_id"], t["map_index"]): t["state"] for t in tis}
        assert api.run(dag_id, run_id)["state"] == "success", (dag_id, run_id, states, dep.procs.tails())
    return watch


def batch_ids_of(api: Api, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for ti in tis:
        if ti["task_id"] == "submit":
            handle = api.xcom(dag_id, run_id, "submit", ti["map_index"])
            ids += [b["id"] for b in handle["batches"]]
    return ids


def check_outputs(api: Api, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> None:
    """The Parquet a user gets, per example, under a folder named after the run (no logical date needed)."""
    run = api.run(dag_id, run_id)
    folder = run_id.replace(":", "-").replace("+", "-")
    collects = [t for t in tis if t["task_id"] == "collect"]
    manifests = [api.xcom(dag_id, run_id, "collect", t["map_index"]) for t in collects]
    for manifest in manifests:
        path = manifest["path"].removeprefix("file://")
        assert folder in path and run["run_after"][:10] in path, path
        table = pq.read_table(path)
        assert table.num_rows == manifest["rows"]
    if dag_id == ENRICH:
        (manifest,) = manifests
        assert manifest["rows"] == 5 and manifest["counts"] == {"succeeded": 4, "errored": 1}
    elif dag_id == EVAL:
        assert len(manifests) == 7 and all(m["rows"] == 3 and m["counts"] == {"succeeded": 3} for m in manifests)
        scores = api.xcom(dag_id, run_id, "compare")
        assert len(scores) == 7 and set(scores.values()) == {1.0}
    else:
        (manifest,) = manifests
        table = pq.read_table(manifest["path"].removeprefix("file://"))
        assert sorted(table.column("custom_id").to_pylist()) == [f"t{i:04d}" for i in range(30)]


PROGRESS = re.compile(r" — .*, elapsed \d+s")  # BatchCompleteTrigger's progress line


def check_deferred_through_triggerer(api: Api, dep: Deployment, watch: Watch, dag_id: str, run_id: str,
                                     tis: list[dict[str, Any]]) -> None:
    """Collect deferred, a triggerer process polled (progress lines in its trigger log), the task resumed."""
    triggerers = {j["id"] for j in api.jobs("TriggererJob", alive=False)}
    logs = dep.trigger_logs(dag_id, run_id, "collect")
    batch_ids = batch_ids_of(api, dag_id, run_id, tis)
    for ti in (t for t in tis if t["task_id"] == "collect"):
        holders = watch.deferred.get((dag_id, run_id, "collect", ti["map_index"]))
        assert holders, f"{dag_id}/{run_id} collect[{ti['map_index']}] was never seen deferred"
        assert holders <= triggerers and set(logs) & holders, (holders, sorted(logs))
        text = api.task_log(dag_id, run_id, "collect", ti["try_number"], ti["map_index"])
        assert re.search(r"Wrote \d+ rows to ", text), text[-2000:]  # written after the resume, on a worker
        assert ti["hostname"], ti
    polled = "".join(logs[j] for j in logs)
    assert PROGRESS.search(polled), polled[-2000:]
    for batch_id in batch_ids:
        assert batch_id in polled, (batch_id, polled[-2000:])


def fired_events(dep: Deployment) -> dict[int, int]:
    """How often each trigger (by id) fired, over the trigger logs of every triggerer and every task."""
    counts: dict[int, int] = {}
    for path in dep.log_folder.rglob("*.log.trigger.*.log"):
        for line in path.read_text(errors="replace").splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "Trigger fired event":
                trigger_id = int(re.search(r"\(ID (\d+)\)", record["name"]).group(1))  # type: ignore[union-attr]
                counts[trigger_id] = counts.get(trigger_id, 0) + 1
    return counts


def assert_no_state_mismatch(api: Api) -> None:
    logs = api.get("/api/v2/eventLogs", event="state mismatch", limit=100)
    assert logs["total_entries"] == 0, [e.get("extra") for e in logs["event_logs"]]


COLLECTS = {ENRICH: 1, BACKFILL: 1, EVAL: 7}
HELD = "Holding the event"  # BatchCompleteTrigger.hold_resume's log line


def release_once_deferred(gate: GateClock) -> Callable[[Watch, Any], None]:
    """An `on_tick`: end the batches once every collect of every run sits deferred on a triggerer."""
    released = False

    def tick(watch: Watch, seen: Any) -> None:
        nonlocal released
        if released:
            return
        for dag_id, run_id in watch.runs:
            held = [k for k, holders in watch.deferred.items() if k[:3] == (dag_id, run_id, "collect") and holders]
            if len(held) < COLLECTS[dag_id]:
                return
        gate.release()
        released = True

    return tick


def emulator_batch_ids(emu: Emulator) -> set[str]:
    """The provider batches the emulator created (not its internal sub-records of a batch, e.g. xAI's)."""
    views = emu.batches()
    ids = {b.id for b in views}
    return {b.id for b in views if b.metadata.get("batch_id") not in ids}


def wait_parsed(api: Api, dep: Deployment) -> None:
    def parsed() -> bool:
        dags = {d["dag_id"] for d in api.get("/api/v2/dags", limit=100)["dags"]}
        return set(EXAMPLES) <= dags

    wait_for(parsed, timeout=240, what="the example DAGs to be parsed", procs=dep.procs)


def trigger_log_holder(dep: Deployment, dag_id: str, run_id: str, besides: frozenset[int] | set[int] = frozenset()
                       ) -> Callable[[], int | None]:
    """A check: the triggerer job whose trigger log for this run's collect already has a progress line."""
    def polled() -> int | None:
        for job_id, text in dep.trigger_logs(dag_id, run_id, "collect").items():
            if job_id not in besides and PROGRESS.search(text):
                return job_id
        return None

    return polled


# -- the scenarios -------------------------------------------------------------------------------------------------


class Scenarios:
    """The same checks on every executor; `stack` names the deployment fixture."""

    stack = ""

    def test_plugin_served_by_default_api_server(self, api: Api) -> None:
        names = {p["name"] for p in api.get("/api/v2/plugins")["plugins"]}
        assert "batchwork_webhooks" in names, names
        answer = api.http.post("/batchwork/webhooks/openai", json={})
        assert answer.status_code == 400 and answer.json()["error"] == "missing_header", answer.text

    def test_mapped_collect_outlet_at_parse_time(self, api: Api, request: pytest.FixtureRequest) -> None:
        wait_parsed(api, request.getfixturevalue(self.stack))
        aliases = {a["name"] for a in api.get("/api/v2/assets/aliases", limit=100)["asset_aliases"]}
        assert ALIAS in aliases, aliases

    def test_examples_triggered_by_hand(self, api: Api, emu: Emulator, gate: GateClock,
                                        request: pytest.FixtureRequest) -> None:
        dep: Deployment = request.getfixturevalue(self.stack)
        before = emulator_batch_ids(emu)
        old_runs = {(d, r["dag_run_id"]) for d in EXAMPLES for r in api.runs(d)}
        paused = {d for d in EXAMPLES if api.get(f"/api/v2/dags/{d}")["is_paused"]}
        for dag_id in EXAMPLES:
            api.unpause(dag_id)
        # A first unpause also starts the latest scheduled run of the two scheduled examples: run those too.
        scheduled = {ENRICH, EVAL} & paused
        wait_for(lambda: all(any(r["run_type"] == "scheduled" for r in api.runs(d)) for d in scheduled),
                 timeout=120, what="the scheduled runs", procs=dep.procs)
        manual = [(dag_id, api.trigger(dag_id)) for dag_id in EXAMPLES]
        runs = sorted({(d, r["dag_run_id"]) for d in EXAMPLES for r in api.runs(d)} - old_runs)
        assert len(runs) == len(manual) + len(scheduled), runs
        watch = drive(api, dep, runs, on_tick=release_once_deferred(gate))
        made: list[str] = []
        for (dag_id, run_id), tis in watch.final.items():
            assert all(t["try_number"] == 1 for t in tis), [(t["task_id"], t["try_number"]) for t in tis]
            check_outputs(api, dag_id, run_id, tis)
            check_deferred_through_triggerer(api, dep, watch, dag_id, run_id, tis)
            made += batch_ids_of(api, dag_id, run_id, tis)
        assert len(made) == len(set(made)) and emulator_batch_ids(emu) - before == set(made)
        for dag_id, run_id in manual:
            assert api.run(dag_id, run_id)["logical_date"] is None
            if dag_id == EVAL:
                events = api.get("/api/v2/assets/events", source_dag_id=EVAL, source_run_id=run_id, limit=100)
                assert events["total_entries"] == 7, events  # one per mapped collect, through the alias
        assert_no_state_mismatch(api)
        fired = fired_events(dep)
        assert fired and set(fired.values()) == {1}, fired  # one event per trigger
        # The gate ends the batches right after the last collect deferred: that trigger found its batch
        # done within seconds of the deferral (the window of Airflow 3.3's race) and held its event.
        held = [j for d, r in runs for j, text in dep.trigger_logs(d, r, "collect").items() if HELD in text]
        assert held, "no trigger hit the resume window"
        request.node.user_properties.append(("held_events", len(held)))

    def test_triggerer_sigkill_mid_poll(self, api: Api, emu: Emulator, gate: GateClock,
                                        request: pytest.FixtureRequest) -> None:
        dep: Deployment = request.getfixturevalue(self.stack)
        alive = {job_id: proc for job_id, proc in dep.triggerers.items() if proc.alive()}
        before = emulator_batch_ids(emu)
        run_id = api.trigger(ENRICH)  # its batch stays in progress until the gate opens
        first = wait_for(trigger_log_holder(dep, ENRICH, run_id), timeout=RUN_DEADLINE,
                         what="a triggerer to poll the batch", procs=dep.procs)
        alive[first].kill_group()  # SIGKILL mid-poll: the triggerer and its trigger runner subprocess
        if len(alive) == 1:
            with Api(dep.api_url) as client:
                dep.start_triggerer_job("triggerer-restarted", client)
        # Another triggerer takes the trigger over (after the dead one's heartbeat times out) and polls.
        wait_for(trigger_log_holder(dep, ENRICH, run_id, besides={first}), timeout=RUN_DEADLINE,
                 what="another triggerer to poll the batch", procs=dep.procs)
        gate.release()
        watch = drive(api, dep, [(ENRICH, run_id)])
        tis = watch.final[(ENRICH, run_id)]
        logs = dep.trigger_logs(ENRICH, run_id, "collect")
        # Another triggerer took the trigger over and polled too (its own trigger log file).
        assert PROGRESS.search(logs[first]) and any(PROGRESS.search(logs[j]) for j in logs if j != first), logs
        assert all(t["try_number"] == 1 for t in tis)
        check_outputs(api, ENRICH, run_id, tis)
        made = batch_ids_of(api, ENRICH, run_id, tis)
        assert len(made) == 1 and emulator_batch_ids(emu) - before == set(made)
        assert_no_state_mismatch(api)

    def test_scheduler_sigkill_mid_submit(self, api: Api, emu: Emulator, gate: GateClock,
                                          request: pytest.FixtureRequest) -> None:
        dep: Deployment = request.getfixturevalue(self.stack)
        before = emulator_batch_ids(emu)
        answered = len(emu.requests)
        emu.faults = FaultConfig(slow_seconds=8, providers="openai")  # each submit call now takes 8 s
        try:
            run_id = api.trigger(ENRICH)

            def mid_submit() -> bool:
                tis = {t["task_id"]: t for t in api.task_instances(ENRICH, run_id)}
                openai_calls = [r for r in emu.requests[answered:] if r.provider == "openai"]
                # The upload was answered; the next call (the batch create) is in flight for 8 s.
                return tis["submit"]["state"] == "running" and len(openai_calls) >= 1

            wait_for(mid_submit, timeout=RUN_DEADLINE, what="submit to be half-way", procs=dep.procs, every=0.5)
            scheduler = next(p for p in dep.procs.procs if p.name.startswith("scheduler") and p.alive())
            scheduler.kill_group()  # the scheduler and, on LocalExecutor, its workers and the submit with them
        finally:
            emu.faults = FaultConfig()
        dep.start_scheduler("scheduler-restarted")
        watch = drive(api, dep, [(ENRICH, run_id)], on_tick=release_once_deferred(gate))
        tis = watch.final[(ENRICH, run_id)]
        check_outputs(api, ENRICH, run_id, tis)
        made = batch_ids_of(api, ENRICH, run_id, tis)
        new = emulator_batch_ids(emu) - before
        assert len(made) == 1 and new == set(made), (made, new)
        request.node.user_properties.append(("submit_tries", {t["task_id"]: t["try_number"] for t in tis}))


class TestLocalExecutor(Scenarios):
    stack = "local"


class TestCeleryExecutor(Scenarios):
    """Two Celery workers and two triggerers at once (HA): one event per trigger, no duplicate batch."""

    stack = "celery"

    def test_two_triggerers_one_event_per_trigger(self, api: Api, request: pytest.FixtureRequest) -> None:
        dep: Deployment = request.getfixturevalue(self.stack)
        assert len(dep.triggerers) >= 2  # both were running at once from the start (one was killed mid-poll)
        ran = {int(p.name.rsplit(".", 2)[-2]) for p in dep.log_folder.rglob("*.log.trigger.*.log")}
        assert set(dep.triggerers) <= ran, (sorted(dep.triggerers), sorted(ran))  # both ran triggers
        fired = fired_events(dep)  # over every trigger log of this deployment, kills included
        assert fired and set(fired.values()) == {1}, fired  # one event per trigger
        tasks = {p.name: len(re.findall(r"Task execute_workload\[[-0-9a-f]+\] succeeded", p.log_text()))
                 for p in dep.procs.procs if p.name.startswith("worker")}
        assert len(tasks) == 2 and all(tasks.values()), tasks  # both Celery workers ran tasks
        request.node.user_properties.append(("tasks_per_worker", tasks))
        request.node.user_properties.append(("triggers_fired", len(fired)))
        assert_no_state_mismatch(api)
