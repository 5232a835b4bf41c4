"""WAL archive and point-in-time recovery on the real lab: `drill backup pitr` brings up a NEW server from the base
backup taken at `lab up` plus the archived WAL; rows committed after the target are not there, the live cluster
keeps them all, and the recovered server is stopped by `discard` (as by `lab down`).

The rows live in a throwaway database `pitr_probe_*` on the live primary (dropped afterwards); kerp is not written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg import sql

from harness.lab import procs, recovered
from tests.labs import fresh_lab
from tests.cli import drill_on as drill

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

USAGE, REFUSED = 2, 5


def error_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("drill: error:"), r.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def lab():
    """A lab of its own: the session's shared lab has been failed over and back by other modules, and a point-in-time
    recovery across a timeline switch is not supported yet (WAL of the promoted DR server is not archived)."""
    with fresh_lab("drill-pitr-") as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def written(lab):
    """Rows committed every 50 ms before and after a target time (a quiet 0.3 s gap around it), on the live primary.

    Yields (dsn of the probe database on the live primary, its name, target, ids acknowledged before the target,
    ids whose INSERT began after it).
    """
    from harness.workload import find_primary_dsn

    live = find_primary_dsn(lab.topology())
    db = f"pitr_probe_{uuid.uuid4().hex[:8]}"
    admin = psycopg.conninfo.make_conninfo(live, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    probe = psycopg.conninfo.make_conninfo(live, dbname=db)
    before, after = [], []
    try:
        with psycopg.connect(probe, autocommit=True) as c:
            c.execute("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
            for i in range(20):
                c.execute("INSERT INTO rows (id) VALUES (%s)", (i,))
                before.append(i)
                time.sleep(0.05)
            time.sleep(0.15)
            target = datetime.now(timezone.utc)
            time.sleep(0.15)
            for i in range(100, 120):
                c.execute("INSERT INTO rows (id) VALUES (%s)", (i,))
                after.append(i)
                time.sleep(0.05)
        yield probe, db, target, before, after
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def test_without_approval_is_refused_and_starts_nothing(lab, written):
    _, _, target, _, _ = written
    r = drill(lab, "backup", "pitr", "--to", target.isoformat(), "--into", "refused")
    assert r.returncode == REFUSED, r.stdout + r.stderr
    assert "--approve database_point_in_time_recovery" in error_line(r)
    assert "refused" not in recovered.records(lab.state)


@pytest.mark.parametrize("to, says", [
    ("yesterday", "is not an ISO-8601 time"),
    ("2026-01-01T00:00:00", "has no UTC offset"),
    ("2999-01-01T00:00:00Z", "is in the future"),
    ("2000-01-01T00:00:00Z", "no base backup finished before 2000-01-01T00:00:00+00:00"),
])
def test_bad_targets_are_usage_errors(lab, to, says):
    r = drill(lab, "backup", "pitr", "--to", to, "--into", "bad", "--approve", "database_point_in_time_recovery")
    assert r.returncode == USAGE, r.stdout + r.stderr
    assert says in error_line(r)
    assert "bad" not in recovered.records(lab.state)


def test_recovers_only_what_was_committed_before_the_target(lab, written):
    probe, db, target, before, after = written
    name = f"t{uuid.uuid4().hex[:6]}"
    r = drill(lab, "backup", "pitr", "--to", target.isoformat(), "--into", name, "--approve",
              "database_point_in_time_recovery", "--json")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res["requested"] == target.isoformat()
        achieved = datetime.fromisoformat(res["recovered_to"])
        assert achieved <= target and (target - achieved).total_seconds() < 1.0, res
        assert res["ok"] and {c["status"] for c in res["integrity"]} <= {"pass", "warning"}, res["integrity"]
        assert res["base_backup"]["key"].startswith("postgresql/base/") and res["wal_segments"] >= 1
        live_port = lab.topology()["regions"]["primary"]["postgres"]["port"]
        assert res["port"] != live_port
        with psycopg.connect(psycopg.conninfo.make_conninfo(res["dsn"], dbname=db)) as c:
            got = {row[0] for row in c.execute("SELECT id FROM rows")}
            assert not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # promoted
        assert got == set(before), f"missing {sorted(set(before) - got)}, extra {sorted(got - set(before))}"
        with psycopg.connect(probe) as c:  # the live cluster keeps everything
            assert {row[0] for row in c.execute("SELECT id FROM rows")} == set(before) | set(after)
        again = drill(lab, "backup", "pitr", "--to", target.isoformat(), "--into", name, "--approve",
                      "database_point_in_time_recovery")
        assert again.returncode == USAGE and f"named {name!r} exists already" in error_line(again)
    finally:
        rec = recovered.records(lab.state).get(name)
        d = drill(lab, "backup", "discard", name)
    assert d.returncode == 0, d.stderr
    assert rec is not None and not procs.port_open(rec["port"])
    assert not os.path.exists(rec["data_dir"]) and name not in recovered.records(lab.state)


def test_lab_down_stops_recovered_servers(lab, written):
    """`Lab.down` calls `recovered.stop_all` first; run it alone here so the shared lab stays up."""
    _, _, target, _, _ = written
    r = drill(lab, "backup", "pitr", "--to", target.isoformat(), "--into", "downed", "--approve",
              "database_point_in_time_recovery", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    port = json.loads(r.stdout)["port"]
    assert procs.port_open(port)
    assert recovered.stop_all(lab.state, lab.pg_runtime()) == ["downed"]
    assert not procs.port_open(port) and recovered.records(lab.state) == {}
