"""One drill run in progress (implements the safety layer's run context): its timeline, workload, observations, report."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from harness.core.report import redact
from harness.core.timeline import Event, Timeline, iso
from harness.drill.pretest import require_pre_test
from harness.errors import HarnessError, SafetyRefusal
from harness.lab.kerp.seed import LAB_PASSWORD
from harness.lab.paths import state_dir as lab_state
from harness.safety import context as run_context

_lock = threading.Lock()
_current: "DrillSession | None" = None

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


def new_run_id(kind: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"


class JsonlSink:
    """Writes each timeline event as one JSON line as soon as it is appended (a crashed run keeps its history).

    `secrets` (a callable returning the run's known secret values) are redacted from every line as it is
    written: activity errors and tracebacks land here verbatim otherwise.
    """

    def __init__(self, path: Path, secrets: Callable[[], Iterable[str]] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8", buffering=1024 * 64)
        self._n = 0
        self._secrets = secrets or (lambda: ())

    def __call__(self, e: Event) -> None:
        doc = redact(e.to_dict(), tuple(self._secrets()))
        self._f.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
        self._n += 1
        if e.kind != "op" and e.kind != "probe":
            self._f.flush()

    def close(self) -> None:
        try:
            self._f.flush()
            self._f.close()
        except ValueError:
            pass


@dataclass
class DrillSession:
    """Mutable state of the run in progress; everything measured is derived from `timeline` at the end.

    It is the run's `harness.safety.context.RunContext`: `begin` registers it under its run id, the layers
    below find it from configuration drill_run_id, `end` unregisters it."""

    run_id: str
    kind: str
    target: str
    report_dir: Path
    timeline: Timeline
    config: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    topology: dict[str, Any] | None = None
    workload: Any = None
    final_keys: set[str] | None = None
    #: every final read of the run by op `f` ("write" vouchers, "invoice", "session"); None before it
    final_keys_by_f: dict[str, set[str]] | None = None
    final_read_region: str | None = None
    integrity: list[dict[str, Any]] = field(default_factory=list)
    observations: dict[str, Any] = field(default_factory=dict)
    approvals: set[str] = field(default_factory=set)
    snapshot: Any = None
    aborted: bool = False
    harness_error: str | None = None
    notes: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    _sink: JsonlSink | None = None
    report: dict[str, Any] | None = None
    journal: dict[str, Any] | None = None
    refused: str | None = None
    #: the DR plan of this run (overrides merged and validated once, at begin); None only for bare sessions
    plan: Any = None
    #: Gherkin steps that failed ("step name: error"), also assertion failures
    failed_steps: list[str] = field(default_factory=list)
    #: the environment the drill acts on (harness.config.environment.Environment); None: the lab
    environment: Any = None
    #: a dry run's recorder of the API calls it would make (harness.dryrun.DryRunRecorder)
    recorder: Any = None
    #: (time, SafetyRefusal) for every refusal the guard raised in this run (typed: the journal keeps text only)
    refusals: list[tuple[float, SafetyRefusal]] = field(default_factory=list)
    #: the disaster-level detector sampling during the workload (harness.drill.detector.Sampler)
    detector: Any = None
    #: who approved which gate and when: {"gate", "who", "t", "at", "source"}
    approvers: list[dict[str, Any]] = field(default_factory=list)

    # -- recording helpers ----------------------------------------------------
    def event(self, kind: str, event: str, **data: Any) -> Event:
        return self.timeline.append(kind, event, data)

    def note(self, text: str, **data: Any) -> None:
        self.notes.append(text)
        self.timeline.append("note", text, data)

    def record_approval(self, gate: str, who: str, source: str) -> None:
        """Who approved `gate` and when (timeline + report `approvers`)."""
        now = time.time()
        self.approvers.append({"gate": gate, "who": who, "t": now, "at": iso(now), "source": source})
        self.timeline.append("note", f"approval: {gate} by {who}", {"gate": gate, "who": who, "source": source}, t=now)

    def observe(self, item: str, ok: bool | None, observed: str) -> None:
        """Evidence for a checklist item (ok None = skipped)."""
        status = "skipped" if ok is None else ("pass" if ok else "fail")
        self.observations[item] = {"ok": ok, "status": status, "observed": observed}
        self.timeline.append("check", f"checklist: {item}", {"status": status, "observed": observed})

    @property
    def fault_t(self) -> float | None:
        """Time of the first injected fault (None before any, and in a dry run); cheap: the fault index only."""
        return next((e.t for e in self.timeline.of_kind("fault") if e.data.get("phase", "inject") == "inject"), None)

    def pre_fault_gate(self, configuration: Any) -> None:
        """The run's first fault waits for its pre_test evidence (harness.drill.pretest)."""
        require_pre_test(self, configuration)

    @property
    def dry_run(self) -> bool:
        v = self.config.get("drill_dry_run")
        return v.strip().lower() in ("1", "true", "yes", "on") if isinstance(v, str) else bool(v)

    def close(self) -> None:
        if self._sink:
            self._sink.close()


def _fanout(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    def emit(e: Event) -> None:
        for sink in sinks:
            try:
                sink(e)
            except Exception:  # a broken listener (e.g. a closed console) must not break the run
                pass

    return emit


def begin(kind: str, target: str, *, report_dir: Path | None = None, run_id: str | None = None,
          config: dict[str, Any] | None = None, listeners: tuple[Callable[[Event], None], ...] = (),
          plan: Any = None) -> DrillSession:
    """Start a session (one at a time per process); `plan` is the run's resolved plan (loaded once, up front)."""
    global _current
    with _lock:
        if _current is not None and _current.ended_at is None:
            raise HarnessError(f"a drill is already running in this process (run {_current.run_id})")
        rid = run_id or new_run_id(kind)
        if not RUN_ID_RE.match(rid):
            raise HarnessError(f"invalid run id {rid!r}")
        rdir = Path(report_dir) if report_dir else Path(os.environ.get("DRILL_REPORTS_DIR", "reports")) / rid
        rdir.mkdir(parents=True, exist_ok=True)
        holder: list[DrillSession] = []
        sink = JsonlSink(rdir / "timeline.jsonl", secrets=lambda: holder[0].secrets if holder else ())
        s = DrillSession(rid, kind, target, rdir, Timeline(sink=_fanout(sink, *listeners)), dict(config or {}),
                         plan=plan)
        holder.append(s)
        s._sink = sink
        s.timeline.append("note", "drill started", {"run_id": rid, "kind": kind, "target": target,
                                                    "started_at": iso(s.started_at)})
        _current = s
        run_context.register(s)
        return s


def judged_only_after_a_fault(result: Any = True):
    """Decorator of a drill check that judges what the fault did: in a dry run (no fault injected) it records a
    `skipped` check event and returns `result` instead of judging nothing (or failing on the fault's absence)."""
    def decorate(check):
        @functools.wraps(check)
        def judged(*args: Any, **kwargs: Any) -> Any:
            s = current(required=False)
            if s is not None and s.dry_run and s.fault_t is None:
                s.event("check", f"{check.__name__.replace('_', ' ')}: not judged", status="skipped",
                        reason="dry run: no fault was injected")
                return dict(result) if isinstance(result, dict) else result
            return check(*args, **kwargs)
        return judged
    return decorate


def current(required: bool = True) -> DrillSession | None:
    with _lock:
        s = _current
    if s is None and required:
        raise HarnessError("no drill session is running (start one with `drill run`, the drill control, "
                           "or the Gherkin background)")
    return s


def end() -> DrillSession | None:
    """Detach the current session (after its report is written)."""
    global _current
    with _lock:
        s, _current = _current, None
    if s is not None:
        run_context.unregister(s)
        if s.ended_at is None:
            s.ended_at = time.time()
        s.close()
    return s


def lab_secrets(state_dir: str | os.PathLike | None = None) -> set[str]:
    """Secret values of the embedded lab: the app's secret that wraps its signing keys (state dir `jwt-secret`),
    the ops API token (`ops-token`) and the seeded users' password (what the workload logs in with)."""
    out = {LAB_PASSWORD}
    for name in ("jwt-secret", "ops-token"):
        try:
            value = (lab_state(state_dir) / name).read_text(encoding="utf-8").strip()
        except OSError:
            value = ""
        if value:
            out.add(value)
    return out


def register_lab_secrets(s: DrillSession, state_dir: str | os.PathLike | None = None) -> None:
    """The lab is the target: redact its secrets from the timeline, the journal and the report."""
    s.secrets |= lab_secrets(state_dir)


# -- signals --------------------------------------------------------------------------------------
class SignalShield:
    """SIGINT/SIGTERM interrupt the run once; while held (rollbacks, teardown, report) and after that first
    interrupt they are recorded only.

    The handler only sets flags (the running session's `aborted`, `received`, `pending`) and raises
    KeyboardInterrupt: it takes no lock and writes nothing (the timeline's lock may be held by the very
    frame it interrupts). Callers record `unrecorded()` signals as notes once the interrupt is caught.
    `with` blocks nest (each restores what it replaced); `hold()`/`shielded()` apply to all of them.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._saved: list[dict[int, Any]] = []
        self._depth = 0
        self._held = 0
        self.received: list[str] = []
        self._recorded = 0
        self.pending: int | None = None
        self._interrupted = False

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        name = signal.Signals(signum).name
        self.received.append(name)
        s = _current  # no lock here: see the class docstring
        if s is not None and s.ended_at is None:
            s.aborted = True
        if self._held or self._interrupted:  # one interrupt per run: the clean-up it starts must finish
            self.pending = signum
            return
        self._interrupted = True
        raise KeyboardInterrupt(name)

    def __enter__(self) -> "SignalShield":
        """Install the handlers (again, if something replaced them since an outer `with`, e.g. chaoslib)."""
        if self._depth == 0:
            self.received, self._recorded, self.pending, self._held, self._interrupted = [], 0, None, 0, False
        saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) != self._handler:
                    saved[sig] = signal.signal(sig, self._handler)
        self._saved.append(saved)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, h in (self._saved.pop() if self._saved else {}).items():
            signal.signal(sig, h)
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self._held = 0

    @property
    def installed(self) -> bool:
        return self._depth > 0

    @property
    def held(self) -> bool:
        return self._held > 0

    def hold(self) -> None:
        """From now on record signals instead of interrupting (until `release`)."""
        self._held += 1

    def release(self) -> None:
        self._held = max(0, self._held - 1)

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Signals inside the block are recorded, not raised (rollbacks must run to the end)."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def unrecorded(self) -> list[str]:
        """Signals received since the last call (to be written down outside the handler)."""
        new = self.received[self._recorded:]
        self._recorded += len(new)
        return new

    def raise_pending(self) -> None:
        """Re-raise a signal deferred by the shield as KeyboardInterrupt."""
        if self.pending is not None:
            sig, self.pending = self.pending, None
            self._interrupted = True
            raise KeyboardInterrupt(signal.Signals(sig).name)


#: the process's one signal shield (drill run, the Chaos Toolkit control, the Gherkin scenario, calibrate)
SIGNALS = SignalShield()


def note_signals(s: DrillSession | None, when: str) -> None:
    """Write the signals received so far down in the session's timeline (never from a signal handler)."""
    if s is None:
        return
    for name in SIGNALS.unrecorded():
        s.note(f"{name} received {when}")
