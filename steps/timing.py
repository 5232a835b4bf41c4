"""Timed polling of the steps ("... after N seconds"): deadlines scaled by DRILL_TIMEOUT_MULTIPLIER (default 1;
slow or loaded machines: 2 or 3). The tests use the same helpers (tests/timing.py)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

#: every deadline of the steps and the tests is multiplied by this
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
