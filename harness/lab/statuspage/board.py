"""Status board: each service's status from its recent probe results, and incidents opened and closed on transitions.

A service is `operational` when its last `window` probes all succeeded (none slower than `slow_s`), `outage` when
they all failed, else `degraded` (failing on and off, recovering, or slow). An incident opens when a service
leaves operational while none is open, gets an update on every status change, and is resolved when every
service is operational again. Its severity is the worst seen: `critical` (an outage of a P1 service), `major`
(another outage) or `minor` (degraded only).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

OPERATIONAL, DEGRADED, OUTAGE = "operational", "degraded", "outage"
SEVERITIES = ("minor", "major", "critical")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Probe:
    """One probe of one service through the global endpoint."""

    ok: bool
    latency_s: float
    at: float
    detail: str = ""
    region: str | None = None


class StatusBoard:
    """Thread-safe: the probe loop records, the HTTP handlers read."""

    def __init__(self, services: Iterable[str], *, window: int = 2, slow_s: float = 1.0,
                 priorities: Mapping[str, str] | None = None, clock=time.time) -> None:
        self.services = tuple(services)
        self.window = max(1, int(window))
        self.slow_s = slow_s
        self.priorities = dict(priorities or {})
        self.clock = clock
        self._recent: dict[str, deque[Probe]] = {s: deque(maxlen=self.window) for s in self.services}
        self._status: dict[str, str] = {s: OPERATIONAL for s in self.services}
        self._since: dict[str, float] = {s: clock() for s in self.services}
        self._incidents: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _derive(self, service: str) -> str:
        recent = self._recent[service]
        if not recent:
            return OPERATIONAL
        if len(recent) == self.window and not any(p.ok for p in recent):
            return OUTAGE
        if all(p.ok and p.latency_s <= self.slow_s for p in recent):
            return OPERATIONAL
        return DEGRADED

    def record(self, service: str, probe: Probe) -> str:
        """Add a probe result; returns the service's status after it (and updates the incidents)."""
        with self._lock:
            self._recent[service].append(probe)
            new, old = self._derive(service), self._status[service]
            if new != old:
                self._status[service] = new
                self._since[service] = probe.at
                self._transition(service, old, new, probe)
            return new

    def _severity(self) -> str:
        outages = [s for s, st in self._status.items() if st == OUTAGE]
        if any(self.priorities.get(s) == "P1" for s in outages):
            return "critical"
        return "major" if outages else "minor"

    def _transition(self, service: str, old: str, new: str, probe: Probe) -> None:
        open_ = next((i for i in self._incidents if i["status"] != "resolved"), None)
        message = f"{service}: {old} -> {new}" + (f" ({probe.detail})" if probe.detail and new != OPERATIONAL else "")
        if open_ is None:
            if new == OPERATIONAL:
                return
            open_ = {"id": f"INC-{len(self._incidents) + 1:04d}", "title": f"{service} {new}", "severity": "minor",
                     "status": "investigating", "startedAt": iso(probe.at), "resolvedAt": None, "services": [],
                     "updates": []}
            self._incidents.append(open_)
        if service not in open_["services"]:
            open_["services"].append(service)
        sev = self._severity()
        if SEVERITIES.index(sev) > SEVERITIES.index(open_["severity"]):
            open_["severity"] = sev
        if all(st == OPERATIONAL for st in self._status.values()):
            open_["status"], open_["resolvedAt"] = "resolved", iso(probe.at)
        elif new == OPERATIONAL or (old == OUTAGE and new == DEGRADED):
            open_["status"] = "monitoring"  # recovering
        elif any(st == OUTAGE for st in self._status.values()):
            open_["status"] = "identified"
        open_["updates"].append({"timestamp": iso(probe.at), "status": open_["status"], "message": message})

    def services_status(self) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for s in self.services:
                last = self._recent[s][-1] if self._recent[s] else None
                out.append({"service": s, "status": self._status[s], "since": iso(self._since[s]),
                            "lastUpdated": iso(last.at) if last else None,
                            "latency_ms": round(last.latency_s * 1000, 1) if last else None,
                            "region": last.region if last else None,
                            "detail": last.detail if last and not last.ok else ""})
            return out

    def incidents(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i, services=list(i["services"]), updates=list(i["updates"])) for i in reversed(self._incidents)]
