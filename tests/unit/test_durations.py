"""Unit tests of duration parsing."""

import pytest

from harness.core.durations import DurationError, format_duration, parse_duration, parse_duration_range
from harness.errors import ConfigError


@pytest.mark.parametrize("text, seconds", [
    ("60m", 3600), ("4h", 14400), ("300s", 300), ("1h", 3600), ("24h", 86400), ("7d", 604800),
    ("10y", 10 * 365 * 86400), ("5000ms", 5), ("1h30m", 5400), ("1.5h", 5400), ("15 min", 900),
    ("0s", 0), (" 2H ", 7200), ("90", 90), (42, 42), (0.001, 0.001),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5x", "", "h", "-5s", "1h-", "abc", True, None, [1], -1, float("nan")])
def test_bad_duration_names_value_and_key(bad):
    with pytest.raises(DurationError) as ei:
        parse_duration(bad, key="services.authentication.rto")
    msg = str(ei.value)
    assert repr(bad) in msg and "services.authentication.rto" in msg
    assert "\n" not in msg
    assert isinstance(ei.value, ConfigError)


def test_ranges():
    assert parse_duration_range("2-4h") == (7200, 14400)
    assert parse_duration_range("30m-1h") == (1800, 3600)
    assert parse_duration_range("24h") == (86400, 86400)
    with pytest.raises(DurationError):
        parse_duration_range("4-2h")
    with pytest.raises(DurationError):
        parse_duration_range("2-4x")


def test_format_duration():
    assert format_duration(None) == "n/a"
    assert format_duration(2.4) == "2.4s"
    assert format_duration(42) == "42s"
    assert format_duration(900) == "15m"
    assert format_duration(5400) == "1h30m"
    assert format_duration(86400) == "1d"
