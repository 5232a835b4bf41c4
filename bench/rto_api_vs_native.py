"""Benchmark: region-failover RTO of ci-smoke through the cloud APIs (--env lab-cloud: RDS, ElastiCache, Route 53
on the lab's AWS control plane) against the lab's own adapters (--env lab), alternating on one lab."""

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
RUNS = int(os.environ.get("BENCH_RUNS", "2"))  # per environment


def _since_fault(timeline: Path) -> dict[str, float]:
    """Seconds from the region fault to the runbook's promote / traffic switch / last verified service."""
    events = [json.loads(x) for x in timeline.read_text().splitlines()]
    fault = next(e["ts"] for e in events if e["kind"] == "fault" and e["event"].startswith("fail_region"))
    out: dict[str, float] = {}
    for e in events:
        if e["kind"] != "failover" or e["data"].get("region") not in (None, "dr"):
            continue
        key = {"detected": "detected", "traffic_switched": "switched", "service_verified": "verified"}.get(e["event"])
        if e["event"] == "promoted" and e["data"].get("component") == "postgresql" and "database" not in out:
            key = "database"
        if key and (key not in out or key == "verified"):
            out[key] = round(e["ts"] - fault, 2)
    return out


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="drill-bench-rto-"))
    state.chmod(0o755)
    env = dict(os.environ, DRILL_STATE_DIR=str(state))
    drill = [sys.executable, "-m", "harness.cli"]
    rto: dict[str, list[float]] = {"lab": [], "lab-cloud": []}
    try:
        subprocess.run([*drill, "lab", "up"], cwd=ROOT, env=env, capture_output=True, timeout=300, check=True)
        for i in range(RUNS):
            for name in ("lab", "lab-cloud"):
                out = state / f"{name}-{i}"
                t0 = time.monotonic()
                r = subprocess.run([*drill, "run", "ci-smoke", "--env", name, "--report-dir", str(out)], cwd=ROOT,
                                   env=env, capture_output=True, text=True, timeout=900)
                wall = time.monotonic() - t0
                if r.returncode != 0:
                    print(f"{name} run {i + 1}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
                    return 1
                rep = json.loads((out / "report.json").read_text())
                worst = max(o["rto_measured_s"] for o in rep["objectives"])
                rto[name].append(worst)
                print(f"{name:9s} run {i + 1}: worst RTO {worst:6.2f} s  since fault {_since_fault(out / 'timeline.jsonl')}"
                      f"  lost {rep['writes']['lost']}  wall {wall:5.1f} s", flush=True)
        native, api = statistics.median(rto["lab"]), statistics.median(rto["lab-cloud"])
        print(f"region failover RTO (median of {RUNS}): native lab {native:.2f} s, through the APIs {api:.2f} s, "
              f"ratio API/native {api / native:.2f}")
        return 0
    finally:
        subprocess.run([*drill, "lab", "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
