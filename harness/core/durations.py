"""Durations as the plan writes them ("60m", "4h", "300s", "2-4h", plain seconds) parsed to seconds, and back."""

from __future__ import annotations

import math
import re

from harness.errors import ConfigError

#: Seconds per unit. A year is 365 days, a month is not a unit (ambiguous).
UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d|w|y)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?\s*(?:ms|min|s|m|h|d|w|y)\s*)+$")
_EXPECTED = "a number of seconds or <number><unit>[...] with unit ms|s|m|min|h|d|w|y (e.g. 300s, 60m, 1h30m)"


class DurationError(ConfigError):
    """A duration value could not be parsed."""


def _where(key: str | None) -> str:
    return f" for {key}" if key else ""


def parse_duration(value: object, key: str | None = None) -> float:
    """Seconds from a number (already seconds) or a string like "300s", "60m", "4h", "1h30m", "500ms".

    Raises DurationError (a ConfigError) naming `key` and the bad value.
    """
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}{_where(key)}: expected {_EXPECTED}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            if not text or not _WHOLE.match(text):
                raise DurationError(f"invalid duration {value!r}{_where(key)}: expected {_EXPECTED}") from None
            seconds = sum(float(n) * UNITS[u] for n, u in _PART.findall(text))
    else:
        raise DurationError(f"invalid duration {value!r}{_where(key)}: expected {_EXPECTED}")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise DurationError(f"invalid duration {value!r}{_where(key)}: must be a finite, non-negative number of seconds")
    return seconds


def parse_duration_range(value: object, key: str | None = None) -> tuple[float, float]:
    """(min, max) seconds from "2-4h", "30m-1h", "24h" (min == max) or a number."""
    if isinstance(value, str) and "-" in value.strip().lstrip("-"):
        low, _, high = value.strip().partition("-")
        high_s = parse_duration(high, key)
        low = low.strip()
        # "2-4h": the unit of the upper bound applies to a bare lower bound.
        if low and re.fullmatch(r"\d+(?:\.\d+)?", low):
            unit = _PART.findall(high.strip().lower())
            low_s = float(low) * UNITS[unit[-1][1]] if unit else float(low)
        else:
            low_s = parse_duration(low, key)
        if low_s > high_s:
            raise DurationError(f"invalid duration range {value!r}{_where(key)}: lower bound exceeds upper bound")
        return low_s, high_s
    s = parse_duration(value, key)
    return s, s


def format_duration(seconds: float | None) -> str:
    """Short human form: 0.35s, 42s, 15m, 1h, 1h30m, 2d; "n/a" for None."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.0f}s"
    out = []
    rest = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
