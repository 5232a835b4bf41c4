"""One drill run in progress: its timeline, workload, observations and, at the end, its report."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from harness.core.timeline import Event, Timeline, iso
from harness.errors import HarnessError

_lock = threading.Lock()
_current: "DrillSession | None" = None

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


def new_run_id(kind: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"


class JsonlSink:
    """Writes each timeline event as one JSON line as soon as it is appended (a crashed run keeps its history)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8", buffering=1024 * 64)
        self._n = 0

    def __call__(self, e: Event) -> None:
        self._f.write(json.dumps(e.to_dict(), ensure_ascii=False, default=str) + "\n")
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
    """Mutable state of the run in progress; everything measured is derived from `timeline` at the end."""

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

    # -- recording helpers ----------------------------------------------------
    def event(self, kind: str, event: str, **data: Any) -> Event:
        return self.timeline.append(kind, event, data)

    def note(self, text: str, **data: Any) -> None:
        self.notes.append(text)
        self.timeline.append("note", text, data)

    def observe(self, item: str, ok: bool | None, observed: str) -> None:
        """Evidence for a checklist item (ok None = skipped)."""
        self.observations[item] = {"ok": ok, "observed": observed}
        status = "skipped" if ok is None else ("pass" if ok else "fail")
        self.timeline.append("check", f"checklist: {item}", {"status": status, "observed": observed})

    @property
    def fault_t(self) -> float | None:
        faults = [e for e in self.timeline.events if e.kind == "fault" and e.data.get("phase", "inject") == "inject"]
        return faults[0].t if faults else None

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
          config: dict[str, Any] | None = None, listeners: tuple[Callable[[Event], None], ...] = ()) -> DrillSession:
    """Start a session (one at a time per process)."""
    global _current
    with _lock:
        if _current is not None and _current.ended_at is None:
            raise HarnessError(f"a drill is already running in this process (run {_current.run_id})")
        rid = run_id or new_run_id(kind)
        if not RUN_ID_RE.match(rid):
            raise HarnessError(f"invalid run id {rid!r}")
        rdir = Path(report_dir) if report_dir else Path(os.environ.get("DRILL_REPORTS_DIR", "reports")) / rid
        rdir.mkdir(parents=True, exist_ok=True)
        sink = JsonlSink(rdir / "timeline.jsonl")
        s = DrillSession(rid, kind, target, rdir, Timeline(sink=_fanout(sink, *listeners)), dict(config or {}))
        s._sink = sink
        s.timeline.append("note", "drill started", {"run_id": rid, "kind": kind, "target": target,
                                                    "started_at": iso(s.started_at)})
        _current = s
        return s


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
        if s.ended_at is None:
            s.ended_at = time.time()
        s.close()
    return s
