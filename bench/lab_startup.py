"""Benchmark of the embedded lab's start and stop: N x (cold `drill lab up`, then `drill lab down`).

Each round uses a fresh state dir and the CLI in subprocesses, as a user would run it; `up` is timed
until the command returns (the lab is then healthy: replication streaming, global endpoint 200).
Prints every round, the medians, and PASS/FAIL against the targets (up <= 10 s, down <= 3 s on a
2-core machine). Exit 0 on PASS, 1 on FAIL or when a command fails.

    python bench/lab_startup.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UP_TARGET_S = 10.0
DOWN_TARGET_S = 3.0
COMMAND_TIMEOUT_S = 30.0  # one command (3 x the up target)
BUDGET_S = 110.0  # the whole bench stays under 2 minutes: commands get what is left of it
_deadline = time.monotonic() + BUDGET_S


def drill(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k != "DRILL_STATE_DIR"}
    timeout = max(5.0, min(COMMAND_TIMEOUT_S, _deadline - time.monotonic()))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    return time.perf_counter() - t0, r


def one_round(i: int) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix=f"drill-bench-lab-{i}-"))
    state.chmod(0o755)  # as root the PostgreSQL servers run as an unprivileged user
    try:
        up_s, r = drill("lab", "up", "--state-dir", str(state))
        if r.returncode != 0:
            raise RuntimeError(f"round {i}: lab up failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        down_s, r = drill("lab", "down", "--state-dir", str(state))
        if r.returncode != 0 or "lab stopped" not in r.stdout:
            raise RuntimeError(f"round {i}: lab down failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        return {"up_s": up_s, "down_s": down_s}
    finally:
        if (state / "lab.json").exists():  # never leave a lab behind, even past the budget
            subprocess.run([sys.executable, "-m", "harness.cli", "lab", "down", "--state-dir", str(state)],
                           capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()

    t_all = time.perf_counter()
    rounds = []
    print(f"lab start/stop, {args.rounds} rounds, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    try:
        for i in range(1, args.rounds + 1):
            if time.monotonic() >= _deadline:
                raise RuntimeError(f"time budget of {BUDGET_S:.0f} s used up after {len(rounds)} rounds")
            fig = one_round(i)
            rounds.append(fig)
            print(f"  round {i}: up {fig['up_s']:6.2f} s   down {fig['down_s']:5.2f} s", flush=True)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}")
        return 1
    up = statistics.median(r["up_s"] for r in rounds)
    down = statistics.median(r["down_s"] for r in rounds)
    up_ok, down_ok = up <= UP_TARGET_S, down <= DOWN_TARGET_S
    print(f"median up   {up:6.2f} s  (target <= {UP_TARGET_S:.0f} s)  {'PASS' if up_ok else 'FAIL'}")
    print(f"median down {down:6.2f} s  (target <= {DOWN_TARGET_S:.0f} s)  {'PASS' if down_ok else 'FAIL'}")
    print(f"max up {max(r['up_s'] for r in rounds):.2f} s, max down {max(r['down_s'] for r in rounds):.2f} s; "
          f"bench took {time.perf_counter() - t_all:.1f} s")
    verdict = "PASS" if up_ok and down_ok else "FAIL"
    print(verdict)
    if args.json:
        print(json.dumps({"rounds": rounds, "median_up_s": round(up, 3), "median_down_s": round(down, 3),
                          "up_target_s": UP_TARGET_S, "down_target_s": DOWN_TARGET_S, "verdict": verdict}))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
