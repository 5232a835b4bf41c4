"""The disaster-level detector in every drill: a sampler thread puts the plan's indicators on the timeline and the metrics endpoint."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from harness.core import detector as core_detector
from harness.core import escalation
from harness.failover.runbook import detect_level
from harness.safety import guard
from harness.targets import _lab

DEFAULT_INTERVAL_S = 0.5


def measure(configuration: dict | None) -> core_detector.LevelSample:
    """One sample now: `runbook.detect_level` (the one detector) judged for the region the router serves."""
    t = time.time()
    target = _lab.resolve(configuration)
    with target.http(timeout=1.0) as http:
        region = _lab.quiet(lambda: http.get(f"{target.router_url}/_router/state").json()["active_region"], None)
    res = detect_level(configuration=configuration)
    states = {k: (v["healthy"], v["detail"]) for k, v in res["indicators"].items()}
    return core_detector.sample(guard.plan(configuration), t, region or "unknown", states)


def push(configuration: dict | None, smp: core_detector.LevelSample) -> bool:
    """PUT the sample to the lab's metrics endpoint (topology `metrics.url`); False when there is none or it fails."""
    import httpx

    try:
        url = (_lab.resolve(configuration).lab.topology().get("metrics") or {}).get("url")
    except Exception:
        return False
    if not url:
        return False
    try:
        r = httpx.put(url.rsplit("/metrics", 1)[0] + "/detector", json=smp.to_dict(), timeout=1.0, trust_env=False)
        return r.status_code < 300
    except httpx.HTTPError:
        return False


class Sampler:
    """Samples the detector every `interval_s` into the session's timeline until stopped; `extra` callbacks run
    after each sample (the failover policy engine reads the same tick)."""

    def __init__(self, session: Any, configuration: dict | None, interval_s: float = DEFAULT_INTERVAL_S,
                 extra: tuple[Callable[[core_detector.LevelSample | None], None], ...] = ()) -> None:
        self.s = session
        self.cfg = dict(configuration or {})
        self.interval_s = interval_s
        self.extra = list(extra)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-detector", daemon=True)
        self.samples = 0
        self.errors = 0
        self._metrics_url: str | None = None

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def tick(self) -> core_detector.LevelSample | None:
        smp = None
        try:
            smp = measure(self.cfg)
            d = smp.to_dict()
            self.s.timeline.append("detector", "sample", {k: v for k, v in d.items() if k != "t"}, t=smp.t)
            self.samples += 1
            push(self.cfg, smp)
        except Exception as e:  # a failing detector is recorded, never breaks the drill
            self.errors += 1
            if self.errors <= 3:
                self.s.note(f"detector sample failed: {type(e).__name__}: {e}")
        for fn in self.extra:
            try:
                fn(smp)
            except Exception as e:
                self.errors += 1
                if self.errors <= 3:
                    self.s.note(f"detector tick callback failed: {type(e).__name__}: {e}")
        return smp

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            self.tick()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - start)))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start(session: Any, configuration: dict | None) -> Sampler | None:
    """Start the run's sampler (once; configuration `drill_detector_interval_s`, 0 turns it off)."""
    if getattr(session, "detector", None) is not None:
        return session.detector
    interval = float((configuration or {}).get("drill_detector_interval_s", DEFAULT_INTERVAL_S) or 0)
    if interval <= 0 or guard.is_dry_run(configuration):
        return None
    if str((configuration or {}).get("drill_environment") or "lab") != "lab":  # the indicators read the lab
        session.note("detector not sampled: its indicators read the embedded lab only")
        return None
    plan = guard.plan(configuration)
    scale = escalation.time_scale((configuration or {}).get("drill_time_scale"))
    clock = escalation.EscalationClock.for_plan(plan, scale)

    def escalate(smp: core_detector.LevelSample | None) -> None:
        """The escalation matrix on the drill clock, driven by the level just sampled."""
        if smp is None:
            return
        for step in clock.observe(smp.t, smp.level):
            d = step.to_dict()
            session.timeline.append("escalation", f"called L{step.level} {step.who}",
                                    {k: v for k, v in d.items() if k != "t"}, t=step.t)

    session.detector = Sampler(session, configuration, interval, extra=(escalate,)).start()
    session.event("note", "detector started", interval_s=interval, time_scale=scale)
    return session.detector


def stop(session: Any) -> None:
    """Stop the run's sampler if it runs (stop_workload, and finalize for runs that never got there)."""
    sampler = getattr(session, "detector", None)
    if sampler is not None and sampler._thread.is_alive():
        sampler.stop()
        session.event("note", "detector stopped", samples=sampler.samples, errors=sampler.errors)


def samples_of(session: Any) -> list[core_detector.LevelSample]:
    """The run's detector samples, from its timeline."""
    return [core_detector.LevelSample.from_dict({**e.data, "t": e.t}) for e in session.timeline.of_kind("detector")
            if e.event == "sample"]
