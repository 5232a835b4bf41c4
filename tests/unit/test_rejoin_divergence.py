"""The rejoin's early way out: a standby whose own log says its history diverged from the upstream's timeline is
sent to pg_rewind at once instead of being waited for."""

from __future__ import annotations

from types import SimpleNamespace

from harness.targets.postgres import ops

DIVERGED = [
    'FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/6000000 on timeline 1 is not in '
    "this server's history",
    "LOG:  new timeline 3 forked off current database system timeline 1 before current recovery point 0/60596B8",
]


def test_only_what_was_logged_after_the_start_counts(tmp_path) -> None:
    log = tmp_path / "postgres.log"
    log.write_text(DIVERGED[1] + "\n")  # an earlier rejoin's trouble, before this start
    node = SimpleNamespace(log_file=log)
    offset = ops._log_size(node)
    assert not ops.diverged_since(node, offset)
    with log.open("a") as f:
        f.write("LOG:  started streaming WAL from primary at 0/8000000 on timeline 3\n")
    assert not ops.diverged_since(node, offset)
    for line in DIVERGED:
        with log.open("a") as f:
            start = f.tell()
            f.write(line + "\n")
        assert ops.diverged_since(node, start)


def test_a_missing_log_is_not_divergence(tmp_path) -> None:
    node = SimpleNamespace(log_file=tmp_path / "none.log")
    assert ops._log_size(node) == 0 and not ops.diverged_since(node, 0)
