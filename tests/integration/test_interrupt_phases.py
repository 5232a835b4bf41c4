"""`drill run ci-smoke` interrupted at every phase (each found in the run's timeline as it is written): exit 130,
the lab healthy on the primary region, the fault ledger empty (or one line naming what is left, and `drill recover`
finishing it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_drill_run import ROOT, drill, wait_for_events
from tests.timing import scaled

# a phase is waited for until it appears in the timeline or the run ends: generous, as two labs drilling at once on
# two loaded cores stretch a run several times over (the wait ends as soon as the phase is there)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]
REACH_S = 480.0


def _event(name: str, kind: str | None = None):
    return lambda e: e["event"] == name and (kind is None or e["kind"] == kind)


def _inject(e: dict) -> bool:
    return e["kind"] == "fault" and e["data"].get("phase", "inject") == "inject"


#: phase -> (signal, events that mark it, in order); a second (signal, events) pair interrupts the clean-up too
PHASES = {
    "before-the-fault": ("SIGTERM", [_event("workload started")]),
    "after-the-fault": ("SIGINT", [_inject]),
    "during-failover": ("SIGTERM", [_inject, _event("promoted", "failover")]),
    "failback-start": ("SIGINT", [_event("failback_started", "failover")]),
    "failback-rejoined": ("SIGTERM", [_event("failback_started", "failover"), _event("rejoined", "failover")]),
    "failback-switchover": ("SIGTERM", [_event("failback_started", "failover"), _event("stopped", "failover")]),
    "failback-promoted": ("SIGTERM", [_event("failback_started", "failover"), _event("promoted", "failover")]),
    "rollback": ("SIGINT", [_inject, _event("promoted", "failover")],
                 ("SIGTERM", [_event("rollbacks started"), _event("failback_started", "failover")])),
    "report-writing": ("SIGTERM", [_event("writing the report")]),
}


@pytest.fixture(scope="module")
def lab(drill_lab):
    """One lab for every phase of this module: the worker's session lab (each phase is a unit of its own under xdist,
    tests/conftest.py SPREAD: the phases run on both workers' labs at once)."""
    return drill_lab


@pytest.fixture(autouse=True)
def recovered(lab):
    """Each test starts from a recovered lab, whatever the one before left."""
    yield
    if _ledger_active(lab):
        drill("recover", state=lab.state)


def _ledger_active(lab) -> list:
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    return FaultLedger(ledger_path(lab.state)).active()


def _lab_status(lab) -> dict:
    r = drill("lab", "status", "--json", state=lab.state, timeout=scaled(300))  # bounds a hang only
    return json.loads(r.stdout)


def _assert_healthy_on_primary(lab) -> None:
    st = _lab_status(lab)
    assert st["healthy"], {k: v for k, v in st["health"].items() if not v.get("alive")}
    assert st["router"]["active_region"] == "primary", st["router"]


@pytest.mark.parametrize("phase", list(PHASES))
def test_interrupted_at_every_phase_restores_the_lab(lab, tmp_path, phase):
    sig, marks, *then = PHASES[phase]
    out = tmp_path / "report"
    env = dict(os.environ, DRILL_STATE_DIR=str(lab.state))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "ci-smoke", "--report-dir", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hit = wait_for_events(out / "timeline.jsonl", proc, scaled(REACH_S), *marks)
        assert hit is not None, f"the run never reached {phase} (exit {proc.poll()})"
        proc.send_signal(getattr(signal, sig))
        if then:
            sig2, marks2 = then[0]
            assert wait_for_events(out / "timeline.jsonl", proc, scaled(REACH_S), *marks, *marks2) is not None, \
                f"the run never reached its clean-up after {sig}"
            proc.send_signal(getattr(signal, sig2))
        _, stderr = proc.communicate(timeout=scaled(REACH_S))
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - t0
    print(f"{phase}: {sig} at +{hit['ts'] - _started(out):.2f} s ({hit['event']}), exit {proc.returncode}, "
          f"{took:.1f} s")
    assert proc.returncode == 130, stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "aborted" and report["exit_code"] == 130
    assert any(e["event"].startswith(f"{sig} received") for e in report["timeline"])
    left = _ledger_active(lab)
    if left:  # allowed only with one line naming what is left, which `drill recover` then finishes
        lines = [line for line in stderr.splitlines() if "drill recover" in line]
        assert len(lines) == 1 and all(e.fault in lines[0] for e in left), stderr[-3000:]
        assert drill("recover", state=lab.state).returncode == 0
        assert _ledger_active(lab) == []
    _assert_healthy_on_primary(lab)


def _started(out: Path) -> float:
    first = (out / "timeline.jsonl").read_text().splitlines()[0]
    return json.loads(first)["ts"]
