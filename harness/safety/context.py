"""The run context: the part of a drill run that targets, failover and the guard use, found from the activity configuration."""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Protocol

from harness.core.timeline import Timeline
from harness.errors import SafetyRefusal

#: configuration key naming the run an activity belongs to (a JSON-safe run id, never the object)
RUN_ID_KEY = "drill_run_id"


class RunContext(Protocol):
    """What the layers below the drill may read and record of a run (`harness.drill.session.DrillSession`
    implements it): its id, plan, approvals, configuration (dry run), secrets, timeline and observations."""

    run_id: str
    plan: Any
    approvals: set[str]
    config: dict[str, Any]
    secrets: set[str]
    timeline: Timeline
    observations: dict[str, Any]
    #: the environment the run acts on (harness.config.environment.Environment; None: the lab) and a dry run's
    #: recorder of the API calls it would make (harness.dryrun.DryRunRecorder; None unless a dry run)
    environment: Any
    recorder: Any
    #: (time.time(), refusal) for every SafetyRefusal the guard raised in this run, oldest first
    refusals: list[tuple[float, SafetyRefusal]]

    def event(self, kind: str, event: str, **data: Any) -> Any: ...

    def note(self, text: str, **data: Any) -> None: ...

    def observe(self, item: str, ok: bool | None, observed: str) -> None: ...

    @property
    def fault_t(self) -> float | None: ...

    @property
    def dry_run(self) -> bool: ...

    def pre_fault_gate(self, configuration: Mapping[str, Any] | None) -> None:
        """Before the run's first fault: raise SafetyRefusal unless the run's pre-conditions hold (the drill
        layer decides which; the guard only calls it)."""
        ...


_lock = threading.Lock()
_runs: dict[str, RunContext] = {}


def register(ctx: RunContext) -> None:
    """Make `ctx` findable by its run id (a run registers itself when it begins)."""
    with _lock:
        _runs[ctx.run_id] = ctx


def unregister(ctx: RunContext) -> None:
    """Forget `ctx` (when its run ends); later activities with its id find no run context."""
    with _lock:
        if _runs.get(ctx.run_id) is ctx:
            del _runs[ctx.run_id]


def of(configuration: Mapping[str, Any] | None) -> RunContext | None:
    """The run context named by configuration drill_run_id (None outside a run, or for a run that ended)."""
    rid = (configuration or {}).get(RUN_ID_KEY)
    if not rid:
        return None
    with _lock:
        return _runs.get(str(rid))


def configuration_for(ctx: RunContext, configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `configuration` that names `ctx` (for a Python caller that calls activities directly)."""
    return {**dict(configuration or {}), RUN_ID_KEY: ctx.run_id}


def record_refusal(ctx: RunContext | None, refusal: SafetyRefusal) -> SafetyRefusal:
    """Keep the typed refusal in the run context (chaoslib's journal keeps activity errors as text only)."""
    if ctx is not None:
        ctx.refusals.append((time.time(), refusal))
    return refusal
