"""Benchmark: wall time of the ci-smoke drill (`drill run ci-smoke`) on the embedded lab, lab start excluded and included."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 60.0
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="drill-bench-smoke-"))
    state.chmod(0o755)
    env = dict(os.environ, DRILL_STATE_DIR=str(state))
    drill = [sys.executable, "-m", "harness.cli"]
    walls, drills = [], []
    try:
        t0 = time.monotonic()
        r = subprocess.run([*drill, "run", "ci-smoke", "--report-dir", str(state / "r0")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        cold = time.monotonic() - t0
        print(f"cold run (lab up included): {cold:6.1f} s  exit {r.returncode}")
        if r.returncode != 0:
            print(r.stderr[-2000:])
            return 1
        for i in range(1, RUNS + 1):
            t0 = time.monotonic()
            r = subprocess.run([*drill, "run", "ci-smoke", "--report-dir", str(state / f"r{i}")], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - t0
            rep = json.loads((state / f"r{i}" / "report.json").read_text())
            walls.append(wall)
            drills.append(rep["duration_s"])
            worst = max(o["rto_measured_s"] for o in rep["objectives"])
            print(f"warm run {i}: wall {wall:6.1f} s, drill {rep['duration_s']:6.1f} s, exit {r.returncode}, "
                  f"worst RTO {worst:.2f} s, acknowledged {rep['writes']['acknowledged']}, lost {rep['writes']['lost']}")
        med = statistics.median(walls)
        print(f"ci-smoke wall time: cold {cold:.1f} s, warm median {med:.1f} s (drill itself "
              f"{statistics.median(drills):.1f} s); target <= {TARGET_S:.0f} s: {'PASS' if cold <= TARGET_S else 'FAIL'}")
        return 0
    finally:
        subprocess.run([*drill, "lab", "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
