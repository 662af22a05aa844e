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


def main() -> int:
    print(f"machine: {machine()}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("collect", "submit", "trigger"):
        extra = sys.argv[1:] if name == "collect" else []
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *extra], cwd=ROOT, env=env)
        print(flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
