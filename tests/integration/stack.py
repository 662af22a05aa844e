"""A real Airflow 3.3 deployment for the integration tests, started and stopped by the tests themselves.

- PostgreSQL and Redis from the Debian packages (installed with apt-get when missing, as root), each in a
  private data dir under a temp folder, listening on loopback ports picked at random.
- Airflow components as separate OS processes, each in its own process group (api-server, scheduler,
  dag-processor, one or more triggerers, Celery workers), with their own AIRFLOW_HOME in a temp dir, the
  example DAGs as the DAGs folder, and the emulator (in the test process) as every provider.
- The package under test is the checkout: when the installed metadata of `airflow-batchwork` is older than
  this checkout's pyproject (entry points differ), a wheel is built from the checkout and unpacked on the
  components' PYTHONPATH, so plugin discovery is tested the way an installed package is found.

Everything started here is registered in a :class:`Processes` and stopped (SIGTERM, then SIGKILL of the
whole process group) by :meth:`Processes.stop_all`, also when a test fails.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = [sys.executable, "-m", "airflow"]
T = TypeVar("T")
# Every wait of a session ends by this time, whatever its own deadline: a stuck deployment cannot hold CI
# past it (seconds from the first import; the full run takes 5-8 minutes on a busy 2-core box).
BUDGET_END = time.monotonic() + float(os.environ.get("BATCHWORK_INTEGRATION_BUDGET", "1200"))


class DeploymentError(AssertionError):
    """A component did not come up or a wait ran past its deadline (carries the component log tails)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- OS packages ------------------------------------------------------------------------------------------


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def ensure_os_packages(executor_packages: Iterable[str] = ("postgresql", "redis-server")) -> None:
    """apt-get the Debian packages that are missing (`apt-get update` once first); needs root."""
    have = {"postgresql": pg_bindir() is not None, "redis-server": shutil.which("redis-server") is not None}
    missing = [p for p in executor_packages if not have.get(p, False)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise DeploymentError(f"missing OS packages {missing}: install them (apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    # policy-rc.d (or no init system) keeps the packaged services from starting; ours run in private dirs.
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


# -- processes --------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    killed: bool = False  # by the test, on purpose

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the component and every child it forked: executor workers, ...)."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class Processes:
    """Every process a test started, so that all of them are stopped, whatever happened."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: Mapping[str, str], *, stop_signal: int = signal.SIGTERM,
              cwd: Path | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd or self.log_dir, start_new_session=True)
        proc = Proc(name, popen, log_path, stop_signal)
        self.procs.append(proc)
        return proc

    def get(self, name: str) -> Proc:
        return next(p for p in reversed(self.procs) if p.name == name)

    def stop(self, proc: Proc, grace: float = 20.0) -> None:
        if proc.alive():
            proc.kill_group(proc.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=grace)
        proc.kill_group(signal.SIGKILL)  # leftovers of the group (orphaned workers) too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)

    def stop_all(self, keep: Callable[[Proc], bool] = lambda p: False) -> None:
        for proc in reversed(self.procs):
            if not keep(proc):
                self.stop(proc)
        self.procs = [p for p in self.procs if keep(p)]

    def tails(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}, {'alive' if p.alive() else 'exited'}) ---\n{p.tail()}"
                         for p in self.procs)


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 1.0,
             procs: Processes | None = None) -> T:
    """Call `check` until it returns something truthy; past `timeout` seconds fail with the component logs."""
    started = time.monotonic()
    deadline = min(started + timeout, BUDGET_END)
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:  # a component still starting, or restarting
            last = exc
            result = None
        else:
            result = last
        if result:
            return result
        crashed = [p for p in procs.procs if not p.alive() and not p.killed] if procs else []
        if crashed:
            raise DeploymentError(f"{', '.join(p.name for p in crashed)} exited while waiting for {what}\n"
                                  f"{procs.tails() if procs else ''}")
        if time.monotonic() > deadline:
            logs = procs.tails() if procs else ""
            raise DeploymentError(f"timed out after {time.monotonic() - started:.0f}s (limit {timeout:.0f}s, session "
                                  f"budget BATCHWORK_INTEGRATION_BUDGET) waiting for {what} (last: {last!r})\n{logs}")
        time.sleep(every)


# -- services ---------------------------------------------------------------------------------------------


def start_postgres(procs: Processes, base: Path) -> str:
    """A private PostgreSQL cluster on a loopback port; returns the SQLAlchemy URL of database `airflow`."""
    bindir = pg_bindir()
    if bindir is None:
        raise DeploymentError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
    # initdb refuses root: run the server as the packaged `postgres` user, in a dir it owns.
    data = base / "pgdata"
    data.mkdir(mode=0o700)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    procs.start("postgres", [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                             "-c", "full_page_writes=off", "-c", "max_connections=300"],
                os.environ, stop_signal=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown

    import psycopg2

    def ready() -> bool:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        except psycopg2.OperationalError:
            return False
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE airflow")
        conn.close()
        return True

    wait_for(ready, timeout=60, what="PostgreSQL", procs=procs, every=0.5)
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/airflow"


def start_redis(procs: Processes, base: Path) -> str:
    port = free_port()
    (base / "redis").mkdir()
    procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(base / "redis")], os.environ)

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_for(ready, timeout=30, what="Redis", procs=procs, every=0.5)
    return f"redis://127.0.0.1:{port}/0"


# -- the package under test -------------------------------------------------------------------------------


def _entry_points(group_map: Mapping[str, Mapping[str, str]]) -> set[tuple[str, str, str]]:
    return {(g, n, v.replace(" ", "")) for g, items in group_map.items() for n, v in items.items()}


def installed_is_current() -> bool:
    """Does the installed `airflow-batchwork` metadata carry this checkout's entry points?"""
    from importlib.metadata import PackageNotFoundError, distribution

    wanted = _entry_points(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"])
    try:
        dist = distribution("airflow-batchwork")
    except PackageNotFoundError:
        return False
    have = {(e.group, e.name, e.value.replace(" ", "")) for e in dist.entry_points}
    return wanted <= have


def package_path(base: Path) -> str:
    """PYTHONPATH for the components: empty if the installed package is current, else a wheel of the checkout."""
    if installed_is_current():
        return ""
    src, wheels, site = base / "src", base / "wheels", base / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "airflow_batchwork", src / "airflow_batchwork",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True)
    (wheel,) = wheels.glob("airflow_batchwork-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return str(site)


# -- REST API ---------------------------------------------------------------------------------------------


class Api:
    """The few calls of Airflow's public REST API (/api/v2) the tests make."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    @staticmethod
    def run_path(dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def unpause(self, dag_id: str) -> None:
        self.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str) -> str:
        """A run as a user's manual trigger makes it: no logical date."""
        response = self.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        response.raise_for_status()
        return str(response.json()["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(self.run_path(dag_id, run_id)))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(self.run_path(dag_id, run_id) + "/taskInstances", limit=100)["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self.get(self.run_path(dag_id, run_id) + f"/taskInstances/{task_id}/xcomEntries/return_value",
                         map_index=map_index, deserialize=True)
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task log as the UI shows it (task and trigger parts), one JSON line per log event."""
        body = self.get(self.run_path(dag_id, run_id) + f"/taskInstances/{task_id}/logs/{try_number}",
                        map_index=map_index, full_content=True)
        return "\n".join(json.dumps(line) for line in body["content"])

    def jobs(self, job_type: str, alive: bool = True) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"job_type": job_type, "limit": 100}
        if alive:
            params["is_alive"] = True  # any value of is_alive filters to the live ones
        return list(self.get("/api/v2/jobs", **params)["jobs"])


# -- the Airflow deployment -------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Airflow components on one metadata DB; `start_*` launch one component each (registered in `procs`)."""

    procs: Processes
    home: Path
    env: dict[str, str]
    api_port: int
    triggerers: dict[int, Proc] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log_folder(self) -> Path:
        return self.home / "logs"

    def airflow(self, name: str, *args: str) -> Proc:
        return self.procs.start(name, [*AIRFLOW, *args], self.env)

    def migrate(self) -> None:
        result = subprocess.run([*AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise DeploymentError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def start_api_server(self) -> Proc:
        proc = self.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port),
                            "--workers", "1")
        wait_for(lambda: httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).status_code == 200,
                 timeout=180, what="the api-server", procs=self.procs)
        return proc

    def start_scheduler(self, name: str = "scheduler") -> Proc:
        return self.airflow(name, "scheduler", "--skip-serve-logs")

    def start_dag_processor(self) -> Proc:
        return self.airflow("dag-processor", "dag-processor")

    def start_triggerer(self, name: str = "triggerer") -> Proc:
        return self.airflow(name, "triggerer", "--skip-serve-logs")

    def start_celery_worker(self, name: str) -> Proc:
        return self.airflow(name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "2",
                            "--skip-serve-logs", "--without-gossip", "--without-mingle")

    def trigger_logs(self, dag_id: str, run_id: str, task_id: str) -> dict[int, str]:
        """The trigger log files of a task's tries: {triggerer job id: text} (file suffix `.trigger.<id>.log`)."""
        folder = self.log_folder / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        found: dict[int, str] = {}
        for path in folder.rglob("*.log.trigger.*.log"):
            job_id = int(path.name.rsplit(".", 2)[-2])
            found[job_id] = found.get(job_id, "") + "\n".join(map(_log_event, path.read_text(errors="replace")
                                                                    .splitlines()))
        return found

    def start_triggerer_job(self, name: str, api: Api) -> int:
        """Start a triggerer and wait for its job row: returns its job id (recorded in `triggerers`)."""
        known = {j["id"] for j in api.jobs("TriggererJob", alive=False)}
        proc = self.start_triggerer(name)
        job_id = wait_for(lambda: next((j["id"] for j in api.jobs("TriggererJob") if j["id"] not in known), None),
                          timeout=180, what=f"{name}'s job", procs=self.procs)
        self.triggerers[int(job_id)] = proc
        return int(job_id)


def _log_event(line: str) -> str:
    """A structured (JSON) log line as its message, so that non-ASCII text is searchable; others as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return f"{record.get('event', '')} {line}" if isinstance(record, dict) else line


def airflow_env(*, home: Path, sql_url: str, executor: str, api_port: int, pythonpath: str,
                extra: Mapping[str, str]) -> dict[str, str]:
    """The environment every component gets: nothing from the test process's own Airflow settings."""
    from cryptography.fernet import Fernet

    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("AIRFLOW") and not k.endswith("_API_KEY") and k != "PYTHONPATH"}
    env = {
        **keep,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_url,
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
        "AIRFLOW__API__SECRET_KEY": os.urandom(16).hex(),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # A busy 2-core box: few task processes at once; short retry delay and orphan checks so the crash
        # scenarios end in minutes. The health thresholds must stay generous: a scheduler whose own heartbeat
        # lags past scheduler_health_check_threshold marks ITSELF failed and resets its running tasks (seen
        # here at 15 s), and a lagging triggerer would have its triggers taken by another.
        "AIRFLOW__CORE__PARALLELISM": "6",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "60",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "120",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        **extra,
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def make_home(base: Path, name: str) -> Path:
    home = base / name
    (home / "dags").mkdir(parents=True)
    for source in sorted((ROOT / "dags_examples").glob("*.py")):
        shutil.copy(source, home / "dags" / source.name)
    return home


def temp_base() -> Path:
    """A world-traversable temp folder (the postgres user must reach its data dir inside it)."""
    base = Path(tempfile.mkdtemp(prefix="batchwork-deploy-"))
    base.chmod(0o755)
    return base
