"""Shared drill steps and fixtures: the lab, the recording session, timed polling, and the timeline hooks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from harness.drill import session as drill_session
from harness.safety import context as run_context

from .timing import poll  # every "after N seconds" wait polls, scaled by DRILL_TIMEOUT_MULTIPLIER


@pytest.fixture(scope="session")
def drill_lab(request):
    """The embedded lab: reused when one is running under $DRILL_STATE_DIR, else started (and stopped) here.

    Under pytest-xdist each worker has a lab of its own: $DRILL_STATE_DIR-<worker> (gw0, gw1, ...), or a new
    temporary dir; two workers never drill on one lab."""
    from harness.lab.manager import Lab

    state = os.environ.get("DRILL_STATE_DIR")
    workerinput = getattr(request.config, "workerinput", None)  # an xdist worker (not its env, which children inherit)
    worker = workerinput["workerid"] if workerinput else None
    if worker and state:
        state = f"{state.rstrip('/')}-{worker}"
    elif not state:
        state = tempfile.mkdtemp(prefix=f"drill-bdd-lab-{worker}-" if worker else "drill-bdd-lab-")
        os.chmod(state, 0o755)  # as root the servers run as an unprivileged user who writes their logs here
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
    """Holds the session a Background step opens; SIGINT/SIGTERM interrupt the scenario (KeyboardInterrupt) so
    that this teardown runs: roll back, revert this run's leftover faults, write the report, close. Signals
    during the teardown are recorded, not raised."""
    holder: dict[str, Any] = {}
    with drill_session.SIGNALS as signals:
        yield holder
        with signals.shielded():
            _teardown(holder.get("session"), drill_lab, drill_configuration)


def _teardown(s, drill_lab, drill_configuration) -> None:
    if s is None:
        return
    from harness.drill import finalize
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    try:
        drill_session.note_signals(s, "(the scenario was interrupted; rolling back)")
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
        for entry, error in FaultLedger(ledger_path(drill_lab.state)).revert_all(how="scenario teardown",
                                                                                  run_id=s.run_id):
            s.note(f"reverted leftover fault {entry.fault} on {entry.target}" + (f" (error: {error})" if error else ""))
        drill_session.note_signals(s, "during the teardown (recorded; the teardown ran to the end)")
        finalize.write(s, s.plan)
    finally:
        drill_session.end()


@given(parsers.parse('a drill of kind "{kind}" is recording'), target_fixture="drill")
def drill_recording(request, drill_run, drill_configuration, kind: str):
    from harness.config import load_plan, read_yaml
    from harness.core import catalog as catalog_core

    overrides_path = os.environ.get("DRILL_PLAN_OVERRIDES")
    overrides = read_yaml(Path(overrides_path)) if overrides_path else None
    plan = load_plan(overrides=overrides)  # once, before anything runs
    report_dir = os.environ.get("DRILL_REPORT_DIR")
    s = drill_session.begin(kind, os.environ.get("DRILL_FEATURE", "features"), run_id=os.environ.get("DRILL_RUN_ID"),
                            report_dir=Path(report_dir) if report_dir else None, plan=plan,
                            config={"drill_plan_overrides": overrides,
                                    "drill_dry_run": bool(drill_configuration.get("drill_dry_run"))})
    # the feature's level tag (pytest-bdd makes tags markers): the report judges the level's downtime, as for an
    # experiment's drill_level
    tags = catalog_core.read_tags(m.name for m in request.node.iter_markers())
    if tags.level is not None:
        s.config["drill_level"] = tags.level
    s.approvals |= {g for g in os.environ.get("DRILL_APPROVALS", "").split(",") if g}
    drill_session.register_lab_secrets(s, drill_configuration["drill_state_dir"])
    drill_configuration[run_context.RUN_ID_KEY] = s.run_id  # the steps pass the run context on by its id
    drill_run["session"] = s
    return s


@given(parsers.parse('the gate "{gate}" is approved for the lab'))
def gate_approved_for_the_lab(drill, drill_configuration, gate: str):
    """A lab-only pre-approval (configuration drill_lab_approvals: the guard ignores it outside the lab);
    anywhere else approvals come from `drill run --approve` / DRILL_APPROVALS."""
    from harness.safety import guard

    if gate not in {g.name for g in drill.plan.gates}:
        raise AssertionError(f"{gate!r} is not a gate of the plan")
    drill_configuration["drill_lab_approvals"] = sorted({*drill_configuration.get("drill_lab_approvals", ()), gate})
    honoured = gate in guard.lab_approvals(drill_configuration)
    drill.event("note", f"lab pre-approval of {gate}" + ("" if honoured else " ignored: not the lab"), gate=gate,
                by="scenario", honoured=honoured)


@given(parsers.parse('the pre_test item "{item}" is degraded on purpose in the lab'))
def pre_test_degraded_in_the_lab(drill, drill_configuration, item: str):
    """The scenario degrades a pre-condition deliberately (configuration drill_degraded_pre_test): the pre-fault
    gate lets its first fault through in the lab only, and refuses it anywhere else."""
    from harness.drill import pretest

    names = sorted({*drill_configuration.get(pretest.DEGRADED_KEY, ()), item})
    pretest.degraded_items(drill.plan, {pretest.DEGRADED_KEY: names})  # an unknown item fails the step
    drill_configuration[pretest.DEGRADED_KEY] = names
    drill.event("note", f"pre_test {item} degraded on purpose by the scenario (lab only)", item=item, by="scenario")


@when(parsers.parse('the gate "{gate}" is approved'))
def gate_is_approved(drill, drill_configuration, gate: str):
    """Checks the approval (it never grants one): --approve / DRILL_APPROVALS, or a lab pre-approval in the lab."""
    from harness.safety import guard

    guard.require_gates([gate], drill_configuration, name=f"gate {gate}")


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
        error = f"{type(exception).__name__}: {str(exception)[:300]}"
        s.failed_steps.append(f"{step.keyword} {step.name}: {error}")
        s.event("check", f"step failed: {step.keyword} {step.name}", status="fail", error=error)
        if not isinstance(exception, AssertionError) and s.harness_error is None:
            from harness.errors import SafetyRefusal

            if isinstance(exception, SafetyRefusal):
                s.refused = str(exception)
            else:
                s.harness_error = f"step {step.name!r} raised {type(exception).__name__}: {exception}"
