"""Shared drill steps and fixtures: the lab, the recording session, timed polling, and the timeline hooks."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from pytest_bdd import given, parsers, then

from harness.drill import session as drill_session

#: every "after N seconds" wait is scaled by this (slow CI machines: DRILL_TIMEOUT_MULTIPLIER=2)
TIMEOUT_MULTIPLIER = float(os.environ.get("DRILL_TIMEOUT_MULTIPLIER", "1"))


def poll(pred: Callable[[], Any], seconds: float, what: str, interval: float = 0.2) -> Any:
    """Poll `pred` until it returns a truthy value, for `seconds` × the timeout multiplier."""
    deadline = time.monotonic() + seconds * TIMEOUT_MULTIPLIER
    last: Any = None
    while True:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # the system under test may be down while we wait
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not true after {seconds * TIMEOUT_MULTIPLIER:.0f} seconds (last: {last!r})")
        time.sleep(interval)


@pytest.fixture(scope="session")
def drill_lab():
    """The embedded lab: reused when one is running under $DRILL_STATE_DIR, else started (and stopped) here."""
    from harness.lab.manager import Lab

    state = os.environ.get("DRILL_STATE_DIR") or tempfile.mkdtemp(prefix="drill-bdd-lab-")
    lab = Lab(state)
    was_running = lab.is_running()
    lab.up()
    os.environ["DRILL_STATE_DIR"] = str(lab.state)
    try:
        yield lab
    finally:
        if not was_running:
            lab.down()


@pytest.fixture
def drill_configuration(drill_lab) -> dict[str, Any]:
    """The Chaos Toolkit style configuration the target adapters take."""
    cfg: dict[str, Any] = {"drill_state_dir": str(drill_lab.state)}
    if os.environ.get("DRILL_DRY_RUN"):
        cfg["drill_dry_run"] = True
    return cfg


@pytest.fixture
def drill_run(drill_lab, drill_configuration):
    """Holds the session a Background step opens; on teardown: roll back, write the report, close."""
    holder: dict[str, Any] = {}
    yield holder
    s = holder.get("session")
    if s is None:
        return
    from harness.config import load_plan
    from harness.drill import finalize
    from harness.drill.fault_ledger import FaultLedger, ledger_path

    try:
        if s.workload is not None and s.final_keys is None:
            try:
                s.workload.stop()
            except Exception as e:
                s.note(f"stopping the workload during teardown failed: {e}")
        # rollback strategy "always": whatever happened, leave the lab on its primary region
        from harness.failover.failback import fail_back

        try:
            fail_back(to_region="primary", configuration=drill_configuration)
        except Exception as e:
            s.harness_error = s.harness_error or f"rollback failed: {e}"
            s.note(f"rollback (fail_back) failed: {e}")
        for entry, error in FaultLedger(ledger_path(drill_lab.state)).revert_all(how="scenario teardown"):
            s.note(f"reverted leftover fault {entry.fault} on {entry.target}" + (f" (error: {error})" if error else ""))
        plan = load_plan(overrides=s.config.get("drill_plan_overrides"))
        finalize.write(s, plan)
    finally:
        drill_session.end()


@given(parsers.parse('a drill of kind "{kind}" is recording'), target_fixture="drill")
def drill_recording(drill_run, kind: str):
    report_dir = os.environ.get("DRILL_REPORT_DIR")
    s = drill_session.begin(kind, os.environ.get("DRILL_FEATURE", "features"), run_id=os.environ.get("DRILL_RUN_ID"),
                            report_dir=Path(report_dir) if report_dir else None)
    s.approvals |= {g for g in os.environ.get("DRILL_APPROVALS", "").split(",") if g}
    overrides = os.environ.get("DRILL_PLAN_OVERRIDES")
    if overrides:
        from harness.config import read_yaml

        s.config["drill_plan_overrides"] = read_yaml(Path(overrides))
    drill_run["session"] = s
    return s


@given("the embedded lab is up")
def lab_is_up(drill_lab):
    topo = drill_lab.status()
    assert topo["healthy"], f"lab unhealthy: {[k for k, v in topo['health'].items() if not v.get('alive')]}"


@then(parsers.parse('the global endpoint routes to the {region} region after {seconds:d} seconds'))
def routes_to(drill, drill_lab, region: str, seconds: int):
    import httpx

    want = "dr" if region.lower() in ("dr", "disaster recovery") else "primary"
    url = drill_lab.topology()["router"]["url"]

    def active() -> bool:
        state = httpx.get(url + "/_router/state", timeout=2).json()
        r = httpx.get(url + "/health", timeout=2)
        return state["active_region"] == want and r.status_code == 200 and r.headers.get("x-drill-region") == want

    poll(active, seconds, f"global endpoint active on {want}")


# --- timeline hooks: every Gherkin step is recorded in the drill's timeline ---------------------------
def pytest_bdd_before_step(request, feature, scenario, step, step_func):
    s = drill_session.current(required=False)
    if s is not None:
        s.event("note", f"step started: {step.keyword} {step.name}")


def pytest_bdd_after_step(request, feature, scenario, step, step_func, step_func_args):
    s = drill_session.current(required=False)
    if s is not None:
        s.event("check", f"step passed: {step.keyword} {step.name}", status="pass")


def pytest_bdd_step_error(request, feature, scenario, step, step_func, step_func_args, exception):
    s = drill_session.current(required=False)
    if s is not None:
        s.event("check", f"step failed: {step.keyword} {step.name}", status="fail",
                error=f"{type(exception).__name__}: {str(exception)[:300]}")
        if not isinstance(exception, AssertionError) and s.harness_error is None:
            from harness.errors import SafetyRefusal

            if isinstance(exception, SafetyRefusal):
                s.refused = str(exception)
            else:
                s.harness_error = f"step {step.name!r} raised {type(exception).__name__}: {exception}"
