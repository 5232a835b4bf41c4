"""The run's append-only timeline: events (fault, failover, probe, check, note) and workload operations."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

EVENT_KINDS = ("fault", "failover", "probe", "check", "note", "op")
OP_TYPES = ("invoke", "ok", "fail", "indeterminate")


def iso(t: float) -> str:
    """Epoch seconds to an ISO-8601 UTC string with milliseconds."""
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Event:
    """One thing that happened at wall-clock time `t` (epoch seconds)."""

    t: float
    kind: str
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"t": iso(self.t), "ts": self.t, "kind": self.kind, "event": self.event, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Event":
        return cls(t=float(d["ts"]), kind=d["kind"], event=d["event"], data=dict(d.get("data") or {}))


@dataclass(frozen=True)
class Op:
    """A workload operation (Jepsen style): `invoke`, then `ok`, `fail` or `indeterminate`.

    `process` is the writer that issued it, `key` the record id it writes.
    """

    t: float
    process: str
    type: str
    f: str
    key: str
    value: Mapping[str, Any] = field(default_factory=dict)

    def to_event(self) -> Event:
        return Event(self.t, "op", self.type, {"process": self.process, "f": self.f, "key": self.key, "value": dict(self.value)})

    @classmethod
    def from_event(cls, e: Event) -> "Op":
        d = e.data
        return cls(t=e.t, process=d["process"], type=e.event, f=d["f"], key=d["key"], value=dict(d.get("value") or {}))


class Timeline:
    """Append-only, thread-safe record of one run.

    `sink` (optional) receives every event as it is appended; the edge passes a writer
    to a JSONL file so a crashed run still leaves its history behind.
    """

    def __init__(self, clock: Callable[[], float] = time.time, sink: Callable[[Event], None] | None = None) -> None:
        self._clock = clock
        self._sink = sink
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def now(self) -> float:
        return self._clock()

    def append(self, kind: str, event: str, data: Mapping[str, Any] | None = None, t: float | None = None) -> Event:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown timeline event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
        e = Event(self._clock() if t is None else t, kind, event, dict(data or {}))
        with self._lock:
            self._events.append(e)
            if self._sink is not None:
                self._sink(e)
        return e

    def record_op(self, process: str, type: str, key: str, f: str = "write", value: Mapping[str, Any] | None = None,
                  t: float | None = None) -> Op:
        if type not in OP_TYPES:
            raise ValueError(f"unknown operation type {type!r}; expected one of {', '.join(OP_TYPES)}")
        op = Op(self._clock() if t is None else t, process, type, f, key, dict(value or {}))
        with self._lock:
            e = op.to_event()
            self._events.append(e)
            if self._sink is not None:
                self._sink(e)
        return op

    def extend(self, events: Iterable[Event]) -> None:
        with self._lock:
            for e in events:
                self._events.append(e)
                if self._sink is not None:
                    self._sink(e)

    @property
    def events(self) -> tuple[Event, ...]:
        with self._lock:
            return tuple(sorted(self._events, key=lambda e: e.t))

    def of_kind(self, kind: str) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind == kind)

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(Op.from_event(e) for e in self.events if e.kind == "op")
