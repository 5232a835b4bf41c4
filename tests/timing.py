"""Timing helpers of the tests: one timeout multiplier, scaled deadlines and polling ("... after N seconds").

Every timed assertion of a test polls up to a deadline scaled by DRILL_TIMEOUT_MULTIPLIER (default 1;
slow or loaded machines: 2 or 3), the multiplier the Gherkin steps use too (steps/common.py). Speed
figures are measured by the benches in bench/, not asserted here.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

#: every deadline of the tests is multiplied by this (same variable as steps/common.py)
MULTIPLIER = float(os.environ.get("DRILL_TIMEOUT_MULTIPLIER", "1"))


def scaled(seconds: float) -> float:
    """`seconds` × the timeout multiplier."""
    return seconds * MULTIPLIER


def poll(pred: Callable[[], Any], seconds: float, what: str, interval: float = 0.05) -> Any:
    """Poll `pred` until it returns a truthy value (returned), for `seconds` × the multiplier; else fail.

    Exceptions of `pred` count as "not yet" (the system may be down while we wait); the last one is shown.
    """
    deadline = time.monotonic() + scaled(seconds)
    last: Any = None
    while True:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not true after {scaled(seconds):.1f} seconds (last: {last!r})")
        time.sleep(interval)


def processes_mentioning(markers: list[str]) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line mentions one of `markers`."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if any(m in cmd for m in markers):
            found.append((p.info["pid"], cmd))
    return found
