"""The pure parts of point-in-time recovery: the target time and the server name are checked before any I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.backup.pitr import check_server_name, parse_target
from harness.errors import UsageError
from harness.lab.walarchive import archive_command, segment_position

NOW = datetime(2026, 12, 6, 20, 0, tzinfo=timezone.utc)


def test_target_with_offset_is_normalised_to_utc():
    assert parse_target("2026-12-06T21:30:00.250+09:00", now=NOW) == datetime(2026, 12, 6, 12, 30, 0, 250000,
                                                                               tzinfo=timezone.utc)
    assert parse_target("2026-12-06T19:59:59Z", now=NOW) == NOW - timedelta(seconds=1)


@pytest.mark.parametrize("text, says", [
    ("2026-12-06 19:00", "has no UTC offset"),
    ("last tuesday", "is not an ISO-8601 time"),
    ("2026-12-06T20:00:01Z", "is in the future"),
])
def test_bad_targets(text, says):
    with pytest.raises(UsageError, match=says):
        parse_target(text, now=NOW)


@pytest.mark.parametrize("name", ["", "Upper", "1abc", "a b", "x" * 41, "../etc"])
def test_bad_server_names(name):
    with pytest.raises(UsageError, match="server name"):
        check_server_name(name)


def test_archive_command_never_overwrites_and_renames_into_place():
    cmd = archive_command(Path("/var/lib/drill/lab x/wal-spool"))
    assert cmd.startswith("test ! -f '/var/lib/drill/lab x/wal-spool'/%f && cp %p ")
    assert cmd.endswith("&& mv '/var/lib/drill/lab x/wal-spool'/.%f.tmp '/var/lib/drill/lab x/wal-spool'/%f")


def test_segment_position_ignores_the_timeline():
    assert segment_position("000000020000000A000000FF") == (10, 255)
    assert segment_position("000000010000000A000000FF") == segment_position("000000020000000A000000FF")


@pytest.mark.parametrize("ahead", [0, 4 << 20])
def test_hashing_reader_gives_every_byte_once_and_hashes_them(ahead):
    import hashlib
    import io

    from harness.lab.walarchive import HashingReader

    data = bytes(range(256)) * 40000
    r = HashingReader(io.BytesIO(data), ahead=ahead)
    parts = []
    while b := r.read(3_000_001):
        parts.append(b)
    assert b"".join(parts) == data and r.size == len(data) and r.hexdigest == hashlib.sha256(data).hexdigest()
