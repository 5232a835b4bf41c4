"""Outages of a service seen by its probes, each from a failed probe to the next streak of successes (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from harness.core.timeline import Event

__all__ = ["Outage", "outages", "longest_outage_s"]


@dataclass(frozen=True)
class Outage:
    """One outage: `start` is the first failed probe, `end` the first probe of the streak that ended it (None:
    it had not ended at the last probe)."""

    start: float
    end: float | None
    failed_probes: int

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


def outages(events: Iterable[Event], service: str, since: float, consecutive: int = 3) -> list[Outage]:
    """Every outage of `service` from `since` on, in time order: an outage starts at a failed probe and ends at
    the start of the next streak of `consecutive` successful probes (as the report's RTO ends)."""
    if consecutive < 1:
        raise ValueError(f"consecutive must be >= 1, got {consecutive!r}")
    probes = sorted((e for e in events if e.kind == "probe" and e.data.get("service") == service and e.t >= since),
                    key=lambda e: e.t)
    out: list[Outage] = []
    start: float | None = None
    failed = 0
    streak_start: float | None = None
    streak = 0
    for p in probes:
        if not p.data.get("ok"):
            if start is None:
                start = p.t
            failed += 1
            streak, streak_start = 0, None
            continue
        if start is None:
            continue
        if streak == 0:
            streak_start = p.t
        streak += 1
        if streak >= consecutive:
            out.append(Outage(start, streak_start, failed))
            start, failed, streak, streak_start = None, 0, 0, None
    if start is not None:
        out.append(Outage(start, None, failed))
    return out


def longest_outage_s(found: Iterable[Outage]) -> float | None:
    """The longest outage in seconds (0.0 when there was none; None when one has not ended)."""
    longest = 0.0
    for o in found:
        if o.seconds is None:
            return None
        longest = max(longest, o.seconds)
    return longest
