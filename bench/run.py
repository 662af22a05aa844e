"""`make bench`: every benchmark, each printing its own table (extra arguments go to the collect bench)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, " \
           f"Python {platform.python_version()}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    busy = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _cpu_bound(p)]
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min); {len(busy)} other runnable processes"


def _cpu_bound(proc: Path) -> bool:
    try:
        return proc.name != str(os.getpid()) and (proc / "stat").read_text().split(") ", 1)[1][0] == "R"
    except (OSError, IndexError):
        return False


def main() -> int:
    print(f"machine: {machine()}")
    print(f"at start: {load()}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("collect", "submit", "trigger"):
        extra = sys.argv[1:] if name == "collect" else []
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *extra], cwd=ROOT, env=env)
        print(flush=True)
        if code:
            print(f"bench {name} failed with exit code {code}", file=sys.stderr)
            return code
    print(f"at end: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
