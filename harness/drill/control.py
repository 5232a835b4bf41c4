"""Chaos Toolkit control: the timeline, SIGTERM handled as Ctrl-C, shielded rollbacks, the report at the end."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from harness.drill import session as drill_session
from harness.errors import HarnessError, SafetyRefusal
from harness.safety import context as run_context
from harness.report.redact import NOT_SECRET_KEYS
from harness.safety import guard

_state: dict[str, Any] = {"owns_session": False, "signals": False, "held": False}

#: SystemExit code that makes chaoslib end the run without playing rollbacks (chaoslib.exit, SIGUSR2): used
#: when the run is refused before its first fault, so there is nothing to roll back
_EXIT_WITHOUT_ROLLBACKS = 30


def configure_control(configuration: dict | None = None, secrets: dict | None = None, settings: dict | None = None,
                      experiment: dict | None = None, **kwargs: Any) -> None:
    """Nothing to configure: the session is opened when the experiment starts."""


def before_experiment_control(context: dict, configuration: dict | None = None, secrets: dict | None = None,
                              **kwargs: Any) -> None:
    cfg = configuration if configuration is not None else {}
    s = run_context.of(cfg)  # `drill run` put its run's id in the configuration
    if s is None:
        from harness.config import load_plan
        from harness.errors import HarnessError

        report_dir = cfg.get("drill_report_dir")
        try:
            plan = load_plan(cfg.get("drill_plan"), overrides=cfg.get("drill_plan_overrides"))
        except HarnessError as e:  # an invalid plan: nothing may run
            raise SystemExit(_EXIT_WITHOUT_ROLLBACKS) from e
        s = drill_session.begin(cfg.get("drill_kind", "experiment"), context.get("title", "experiment"),
                                report_dir=Path(report_dir) if report_dir else None, config=dict(cfg), plan=plan)
        # chaoslib hands this very dict to the other controls and a copy of it to every activity: they find
        # the run context by this id
        cfg[run_context.RUN_ID_KEY] = s.run_id
        _state["owns_session"] = True
    else:
        _state["owns_session"] = False
    s.approvals |= set(cfg.get("drill_approvals") or [])
    s.secrets |= {str(v) for v in _secret_values(secrets) if v}
    if _is_lab(cfg):
        drill_session.register_lab_secrets(s, cfg.get("drill_state_dir"))
    s.note(f"experiment started: {context.get('title', '')}")
    # chaoslib turns SIGTERM into a failure of the current activity only and carries on; a drill must stop
    # and roll back, exactly as on Ctrl-C. The handler only sets flags and raises KeyboardInterrupt.
    if threading.current_thread() is threading.main_thread():
        drill_session.SIGNALS.__enter__()
        _state["signals"] = True
    if _state["owns_session"]:
        _preflight(s, context, cfg)


def _is_lab(cfg: dict) -> bool:
    return str(cfg.get("drill_environment") or "lab") == "lab"


def _preflight(s: drill_session.DrillSession, experiment: dict, cfg: dict) -> None:
    """A plain `chaos run`: refuse before the first fault (no rollbacks then) when faults of another run are
    still in the ledger, the environment is not allowed or a gate the method needs is not approved.
    (`drill run` does the same before it starts the experiment.)"""
    try:
        guard.ledger(cfg).refuse_if_active(s.run_id)
        gates = guard.experiment_gates(experiment, s.plan)
        guard.require_gates([g for gs in gates.values() for g in gs], cfg, name=experiment.get("title") or "drill")
    except SafetyRefusal as e:
        s.refused = str(e)
        s.note(f"refused by safety before the first fault: {e}")
        raise SystemExit(_EXIT_WITHOUT_ROLLBACKS) from e
    except HarnessError as e:
        s.harness_error = str(e)
        s.note(f"not starting: {e}")
        raise SystemExit(_EXIT_WITHOUT_ROLLBACKS) from e


def _secret_values(secrets: Any) -> list[str]:
    out: list[str] = []
    if isinstance(secrets, dict):
        for k, v in secrets.items():
            if k not in NOT_SECRET_KEYS:
                out.extend(_secret_values(v))
    elif isinstance(secrets, (list, tuple)):
        for v in secrets:
            out.extend(_secret_values(v))
    elif isinstance(secrets, str) and len(secrets) >= 4:
        out.append(secrets)
    return out


def before_activity_control(context: dict, configuration: dict | None = None, secrets: dict | None = None,
                            experiment: dict | None = None, **kwargs: Any) -> None:
    s = drill_session.current(required=False)
    if s is not None:
        s.event("note", f"{context.get('type', 'activity')} started: {context.get('name')}")
    _guard_chaosk8s(s, context, configuration, secrets, experiment)


def _guard_chaosk8s(s: drill_session.DrillSession | None, activity: dict, configuration: dict | None,
                    secrets: dict | None, experiment: dict | None) -> None:
    """A chaostoolkit-kubernetes fault action goes through the guard (ledger entry, our rollback). Refused (or
    not resolvable): chaoslib skips it (the activity is made dry; chaoslib ignores a control's exception) and
    the run is refused (exit 5) or failed (exit 1), as when one of our own activities is refused."""
    from chaoslib.types import Dry

    from harness.drill import chaosk8s_guard

    rollback = any(a is activity for a in (experiment or {}).get("rollbacks") or [])
    try:
        chaosk8s_guard.before(activity, configuration, secrets, is_rollback=rollback)
    except SafetyRefusal as e:
        activity["dry"] = Dry.ACTIVITIES
        if s is not None:
            s.refused = s.refused or str(e)
            s.note(f"refused by safety in {activity.get('name')}: {e} (not run)")
    except HarnessError as e:
        activity["dry"] = Dry.ACTIVITIES
        if s is not None:
            s.harness_error = s.harness_error or f"activity {activity.get('name')} not run: {e}"
            s.note(f"activity {activity.get('name')} not run: {e}")


def after_activity_control(context: dict, state: Any = None, configuration: dict | None = None,
                           secrets: dict | None = None, **kwargs: Any) -> None:
    from harness.drill import chaosk8s_guard

    chaosk8s_guard.after(context, state, configuration, secrets)
    s = drill_session.current(required=False)
    if s is None:
        return
    status = state.get("status") if isinstance(state, dict) else None
    data: dict[str, Any] = {"status": status}
    if isinstance(state, dict) and state.get("exception"):
        data["error"] = "".join(state["exception"])[-500:]
    s.event("note", f"{context.get('type', 'activity')} {status or 'ended'}: {context.get('name')}"
            + _probe_output(context, state), **data)


def _probe_output(context: dict, state: Any) -> str:
    """" (returned False)" for a probe that ran and returned a boolean: "succeeded" only says it ran."""
    out = state.get("output") if isinstance(state, dict) else None
    return f" (returned {out})" if context.get("type") == "probe" and isinstance(out, bool) else ""


def after_hypothesis_control(context: dict, state: Any = None, configuration: dict | None = None,
                             **kwargs: Any) -> None:
    s = drill_session.current(required=False)
    if s is not None and isinstance(state, dict):
        s.event("check", "steady state hypothesis " + ("met" if state.get("steady_state_met") else "NOT met"),
                steady_state_met=bool(state.get("steady_state_met")))
        if not state.get("steady_state_met"):
            _refuse_on_pre_test(s, configuration)


def _refuse_on_pre_test(s: drill_session.DrillSession, configuration: dict | None) -> None:
    """Steady state not met before any fault because a pre_test item's evidence failed (its one measurement):
    the run is refused by the pre-fault gate (exit 5), not a harness error."""
    from harness.drill import pretest

    if s.fault_t is not None or s.refused or s.plan is None:
        return
    reason = pretest.refusal_of_observations(s, configuration)
    if reason is not None:
        _observe_rest_of_pre_test(s, configuration)
        s.refused = reason
        s.note(f"refused by safety before the first fault: {reason}")


def _observe_rest_of_pre_test(s: drill_session.DrillSession, configuration: dict | None) -> None:
    """The refused run's report shows every pre_test item: observe those the steady state did not measure."""
    from harness.drill import actions, pretest

    missing = [i for i in pretest.pre_test_items(s.plan) if i not in s.observations]
    try:
        actions.observe_pre_test(missing, configuration=configuration)
    except Exception as e:  # the refusal stands whatever this finds
        s.note(f"observing the other pre_test items failed: {e}")


def before_rollback_control(context: Any = None, **kwargs: Any) -> None:
    """From here to the end of the experiment SIGINT/SIGTERM are recorded, not raised (chaoslib skips the
    remaining rollbacks on a second signal); the workload stops first (an interrupted method never reached
    stop_workload)."""
    if _state.get("signals") and not _state.get("held"):
        drill_session.SIGNALS.hold()
        _state["held"] = True
    s = drill_session.current(required=False)
    if s is None:
        return
    drill_session.note_signals(s, "during the method: the experiment was interrupted, rollbacks run")
    if s.workload is not None and s.final_keys is None:
        try:
            counts = s.workload.stop()
            s.event("note", "workload stopped before rollbacks",
                    **{k: v for k, v in counts.items() if isinstance(v, (dict, int))})
        except Exception as e:  # the rollbacks must run regardless
            s.note(f"stopping the workload before rollbacks failed: {e}")
    s.event("note", "rollbacks started")


def after_experiment_control(context: dict, state: Any = None, configuration: dict | None = None,
                             secrets: dict | None = None, **kwargs: Any) -> None:
    """Revert this run's leftover faults; write the report (with the redacted journal) and close the session
    if this control opened it. Signals stay recorded-only until that is done."""
    signals = drill_session.SIGNALS
    if _state.get("signals") and not _state.get("held"):
        signals.hold()
        _state["held"] = True
    try:
        s = drill_session.current(required=False)
        if s is None:
            return
        drill_session.note_signals(s, "during the rollbacks: recorded, the rollbacks ran to the end")
        journal = state if isinstance(state, dict) else None
        if (journal is not None and journal.get("status") in ("interrupted", "aborted")
                and not (s.refused or s.harness_error)):  # not the preflight's own refusal
            s.aborted = True
        s.journal = journal
        if _state.get("owns_session"):
            revert_leftovers(s, configuration)
            from harness.drill import finalize

            report = finalize.write(s, s.plan, journal=journal, refused=bool(s.refused))
            drill_session.end()
            from rich.console import Console

            from harness.report.console import print_summary

            print_summary(report, Console(stderr=True), lang=report.get("_lang"))
    finally:
        if _state.get("held"):
            signals.release()
            _state["held"] = False
        if _state.get("signals"):
            signals.__exit__(None, None, None)
            _state["signals"] = False


def revert_leftovers(s: drill_session.DrillSession, configuration: dict | None) -> list[str]:
    """After the rollbacks: revert the faults this run injected that are still active in the ledger."""
    out = []
    try:
        results = guard.ledger(configuration).revert_all(how="end of run", run_id=s.run_id)
    except Exception as e:  # the report must still be written
        s.harness_error = s.harness_error or f"reverting this run's leftover faults failed: {e}"
        s.note(f"reverting this run's leftover faults failed: {e}")
        return out
    for entry, error in results:
        msg = f"reverted leftover fault {entry.fault} on {entry.target}" + (f" (error: {error})" if error else "")
        s.note(msg)
        out.append(msg)
        if error and s.harness_error is None:
            s.harness_error = f"leftover fault {entry.fault} on {entry.target} could not be reverted: {error}"
    return out
