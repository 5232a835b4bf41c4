"""Chaos Toolkit control: feeds the run's timeline, handles SIGTERM like Ctrl-C, writes the drill report at the end."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from harness.drill import session as drill_session

_owned = threading.local()
_state: dict[str, Any] = {"owns_session": False, "prev_sigterm": None}


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    s = drill_session.current(required=False)
    if s is not None:
        s.aborted = True
        s.note("SIGTERM received: interrupting the experiment, rollbacks will run")
    raise KeyboardInterrupt("SIGTERM")


def configure_control(configuration: dict | None = None, secrets: dict | None = None, settings: dict | None = None,
                      experiment: dict | None = None, **kwargs: Any) -> None:
    """Nothing to configure: the session is opened when the experiment starts."""


def before_experiment_control(context: dict, configuration: dict | None = None, secrets: dict | None = None,
                              **kwargs: Any) -> None:
    cfg = configuration or {}
    s = drill_session.current(required=False)
    if s is None:
        report_dir = cfg.get("drill_report_dir")
        s = drill_session.begin(cfg.get("drill_kind", "experiment"), context.get("title", "experiment"),
                                report_dir=Path(report_dir) if report_dir else None, config=dict(cfg))
        _state["owns_session"] = True
    else:
        _state["owns_session"] = False
    s.approvals |= set(cfg.get("drill_approvals") or [])
    s.secrets |= {str(v) for v in _secret_values(secrets) if v}
    s.note(f"experiment started: {context.get('title', '')}")
    # chaoslib turns SIGTERM into a failure of the current activity only and carries on; a drill must stop
    # and roll back, exactly as on Ctrl-C.
    if threading.current_thread() is threading.main_thread():
        _state["prev_sigterm"] = signal.signal(signal.SIGTERM, _on_sigterm)


def _secret_values(secrets: Any) -> list[str]:
    out: list[str] = []
    if isinstance(secrets, dict):
        for v in secrets.values():
            out.extend(_secret_values(v))
    elif isinstance(secrets, (list, tuple)):
        for v in secrets:
            out.extend(_secret_values(v))
    elif isinstance(secrets, str) and len(secrets) >= 4:
        out.append(secrets)
    return out


def before_activity_control(context: dict, **kwargs: Any) -> None:
    s = drill_session.current(required=False)
    if s is not None:
        s.event("note", f"{context.get('type', 'activity')} started: {context.get('name')}")


def after_activity_control(context: dict, state: Any = None, **kwargs: Any) -> None:
    s = drill_session.current(required=False)
    if s is None:
        return
    status = state.get("status") if isinstance(state, dict) else None
    data: dict[str, Any] = {"status": status}
    if isinstance(state, dict) and state.get("exception"):
        data["error"] = "".join(state["exception"])[-500:]
    s.event("note", f"{context.get('type', 'activity')} {status or 'ended'}: {context.get('name')}", **data)


def after_hypothesis_control(context: dict, state: Any = None, **kwargs: Any) -> None:
    s = drill_session.current(required=False)
    if s is not None and isinstance(state, dict):
        s.event("check", "steady state hypothesis " + ("met" if state.get("steady_state_met") else "NOT met"),
                steady_state_met=bool(state.get("steady_state_met")))


def before_rollback_control(context: Any = None, **kwargs: Any) -> None:
    """The workload stops before any rollback (an interrupted method never reached stop_workload)."""
    s = drill_session.current(required=False)
    if s is None:
        return
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
    """Write the report (with the redacted journal) and close the session if this control opened it."""
    if _state.get("prev_sigterm") is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _state["prev_sigterm"])
        _state["prev_sigterm"] = None
    s = drill_session.current(required=False)
    if s is None:
        return
    journal = state if isinstance(state, dict) else None
    if journal is not None and journal.get("status") in ("interrupted", "aborted"):
        s.aborted = True
    s.journal = journal
    if _state.get("owns_session"):
        from harness.config import load_plan
        from harness.drill import finalize

        plan = load_plan(overrides=s.config.get("drill_plan_overrides"))
        report = finalize.write(s, plan, journal=journal)
        drill_session.end()
        from rich.console import Console

        from harness.report.console import print_summary

        print_summary(report, Console(stderr=True))
