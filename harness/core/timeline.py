"""The run's append-only timeline: events (fault, failover, probe, check, note) and workload operations."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

EVENT_KINDS = ("fault", "failover", "probe", "check", "note", "op", "detector", "decision", "escalation")
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


class _Ordered:
    """One append-ordered list of events and its time-sorted view, sorted lazily.

    `append` is O(1). `view` concatenates the events appended since the last call to the cached sorted
    view when they are in time order and not older than its last event (the usual case); only an
    out-of-order append (threads append slightly out of order, some events carry an earlier `t`) costs a
    sort, done outside the timeline's lock. Equal times keep append order (stable), as a full sort would.
    """

    __slots__ = ("items", "_view")

    def __init__(self) -> None:
        self.items: list[Event] = []
        self._view: tuple[int, tuple[Event, ...]] = (0, ())

    def snapshot(self) -> tuple[tuple[Event, ...], list[Event], int]:
        """(sorted view so far, events appended after it, count); call under the lock (cheap)."""
        n = len(self.items)
        done, view = self._view
        return view, self.items[done:n], n

    def settle(self, view: tuple[Event, ...], new: list[Event], n: int) -> tuple[Event, ...]:
        """The sorted view of the first `n` events (no lock needed: reads only its arguments)."""
        if not new:
            return view
        in_order = (not view or view[-1].t <= new[0].t) and all(a.t <= b.t for a, b in zip(new, new[1:]))
        out = view + tuple(new) if in_order else tuple(sorted(view + tuple(new), key=_by_t))
        if n > self._view[0]:  # one attribute store: atomic, never moves backwards a newer view
            self._view = (n, out)
        return out


def _by_t(e: Event) -> float:
    return e.t


class Timeline:
    """Append-only, thread-safe record of one run.

    Events are kept in append order, with one index per kind; `events` and `of_kind` return them sorted
    by time, sorting lazily (see `_Ordered`) and never while holding the lock for long. The lock is
    re-entrant, so a signal handler that appends while the main thread is inside the timeline cannot
    deadlock it (handlers should only set flags anyway).

    `sink` (optional) receives every event as it is appended; the edge passes a writer
    to a JSONL file so a crashed run still leaves its history behind.
    """

    def __init__(self, clock: Callable[[], float] = time.time, sink: Callable[[Event], None] | None = None) -> None:
        self._clock = clock
        self._sink = sink
        self._lock = threading.RLock()
        self._all = _Ordered()
        self._kinds: dict[str, _Ordered] = {k: _Ordered() for k in EVENT_KINDS}

    def now(self) -> float:
        return self._clock()

    def _add(self, e: Event) -> None:
        with self._lock:
            self._all.items.append(e)
            self._kinds[e.kind].items.append(e)
            if self._sink is not None:
                self._sink(e)

    def append(self, kind: str, event: str, data: Mapping[str, Any] | None = None, t: float | None = None) -> Event:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown timeline event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
        e = Event(self._clock() if t is None else t, kind, event, dict(data or {}))
        self._add(e)
        return e

    def record_op(self, process: str, type: str, key: str, f: str = "write", value: Mapping[str, Any] | None = None,
                  t: float | None = None) -> Op:
        if type not in OP_TYPES:
            raise ValueError(f"unknown operation type {type!r}; expected one of {', '.join(OP_TYPES)}")
        op = Op(self._clock() if t is None else t, process, type, f, key, dict(value or {}))
        self._add(op.to_event())
        return op

    def extend(self, events: Iterable[Event]) -> None:
        for e in events:
            if e.kind not in EVENT_KINDS:
                raise ValueError(f"unknown timeline event kind {e.kind!r}; expected one of {', '.join(EVENT_KINDS)}")
            self._add(e)

    def _sorted(self, ordered: _Ordered) -> tuple[Event, ...]:
        with self._lock:
            view, new, n = ordered.snapshot()
        return ordered.settle(view, new, n)

    @property
    def events(self) -> tuple[Event, ...]:
        """Every event, sorted by time (stable: equal times in append order)."""
        return self._sorted(self._all)

    def of_kind(self, kind: str) -> tuple[Event, ...]:
        """The events of one kind, sorted by time (cheap: a per-kind index)."""
        ordered = self._kinds.get(kind)
        return self._sorted(ordered) if ordered is not None else ()

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(Op.from_event(e) for e in self.of_kind("op"))
