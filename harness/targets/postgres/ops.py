"""PostgreSQL operations on clients passed in (connections, PgNode): roles, lag, promote, rejoin as standby."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from harness.errors import LabError
from harness.lab.postgres import PgNode
from harness.targets._lab import wait_for

Connect = Callable[[], Any]  # returns a psycopg connection (autocommit)


def in_recovery(conn: Any) -> bool:
    return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])


def role(connect: Connect) -> str:
    """"primary", "standby" or "down"."""
    try:
        with connect() as c:
            return "standby" if in_recovery(c) else "primary"
    except Exception:
        return "down"


def writable(conn: Any) -> bool:
    """True when the server assigns transaction ids (not in recovery, not read-only)."""
    if in_recovery(conn):
        return False
    with conn.transaction():
        # never wait for a synchronous standby: a freshly promoted primary may have none streaming yet
        conn.execute("SET LOCAL synchronous_commit TO local")
        conn.execute("SELECT pg_current_xact_id()")
    return True


def wal_receiver(conn: Any) -> dict[str, Any] | None:
    row = conn.execute("SELECT status, sender_port, written_lsn::text, flushed_lsn::text "
                       "FROM pg_stat_wal_receiver").fetchone()
    if not row:
        return None
    return {"status": row[0], "sender_port": row[1], "written_lsn": row[2], "flushed_lsn": row[3]}


def streaming_from(conn: Any, port: int) -> bool:
    w = wal_receiver(conn)
    return bool(w) and w["status"] == "streaming" and w["sender_port"] == port


def replication_rows(primary: Any) -> list[dict[str, Any]]:
    rows = primary.execute(
        "SELECT application_name, state, EXTRACT(EPOCH FROM replay_lag)::float8, EXTRACT(EPOCH FROM write_lag)::float8,"
        " sent_lsn::text, replay_lsn::text, (sent_lsn = replay_lsn) AS caught_up,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 FROM pg_stat_replication").fetchall()
    return [{"application_name": r[0], "state": r[1], "replay_lag_s": r[2], "write_lag_s": r[3], "sent_lsn": r[4],
             "replay_lsn": r[5], "caught_up": r[6], "behind_bytes": r[7]} for r in rows]


def lag_seconds(primary: Any, standby: Any | None, application_name: str | None = None) -> float | None:
    """Replication lag of a standby as time, None when it is not connected.

    The primary's pg_stat_replication replay_lag (else write_lag) when present; else 0 when the
    standby has replayed everything sent; else the standby's age of its last replayed transaction.
    (`now() - pg_last_xact_replay_timestamp()` alone grows while the primary is idle.)
    """
    rows = replication_rows(primary)
    if application_name and len(rows) > 1:
        rows = [r for r in rows if r["application_name"] == application_name] or rows
    if not rows:
        return None
    r = rows[0]
    if r["replay_lag_s"] is not None:
        return float(r["replay_lag_s"])
    if r["write_lag_s"] is not None:
        return float(r["write_lag_s"])
    if r["caught_up"]:
        return 0.0
    return catch_up_seconds(primary, r["application_name"])


def replay_delay(primary: Any, standby: Any | None, limit_s: float, poll_s: float = 0.02) -> tuple[float | None, str]:
    """Replication lag measured end to end: (seconds, what was seen). A transaction committed on the primary now
    must be replayed by the standby; the lag is how long that takes (a backlog is replayed first, so it counts).

    Read on the standby itself, never from the primary's statistics (with a link that holds WAL they keep the last
    value they saw). None when the standby is down, not in recovery, not streaming, or has not replayed the
    commit within `limit_s` (the link holds WAL at least that long).
    """
    if standby is None:
        return None, "no standby: the DR database does not answer"
    if not in_recovery(standby):
        return None, "no standby: the DR database is not in recovery"
    receiver = wal_receiver(standby)
    if not receiver or receiver["status"] != "streaming":
        return None, (f"no standby streaming: WAL receiver {receiver['status'] if receiver else 'not running'}")
    primary.execute("SET synchronous_commit TO local")  # this session's commit is flushed before it returns
    primary.execute("SELECT pg_current_xact_id()")  # autocommit: a commit record, flushed (sent to the standby)
    target = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    t0 = time.monotonic()
    while True:
        row = standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
        waited = time.monotonic() - t0
        if row and row[0]:
            return waited, f"commit at {target} replayed on the standby in {waited:.3f} s"
        if waited >= limit_s:
            return None, (f"WAL held: a commit at {target} not replayed on the standby within {limit_s:.0f} s "
                          f"(replayed up to {standby.execute('SELECT pg_last_wal_replay_lsn()::text').fetchone()[0]})")
        time.sleep(poll_s)


def catch_up_seconds(primary: Any, application_name: str, limit_s: float = 10.0) -> float | None:
    """Measured lag when the statistics have none (a freshly started standby): the time the standby takes to
    replay what the primary has written now. None when it has not caught up within `limit_s`."""
    target = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    t0 = time.monotonic()
    while True:
        row = primary.execute("SELECT replay_lsn >= %s::pg_lsn FROM pg_stat_replication WHERE application_name = %s",
                              (target, application_name)).fetchone()
        if row and row[0]:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= limit_s:
            return None
        time.sleep(0.02)


def timeline_id(conn: Any) -> int:
    """The timeline a running primary writes on now (the WAL file name's first 8 hex digits).

    pg_control_checkpoint().timeline_id lags: it is the last checkpoint's, which a promotion does not wait for.
    """
    if in_recovery(conn):
        row = conn.execute("SELECT received_tli FROM pg_stat_wal_receiver").fetchone()
        if row and row[0]:
            return int(row[0])
        return int(conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
    name = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    return int(name[:8], 16)


def controldata(node: PgNode) -> dict[str, str]:
    """pg_controldata of `node`'s data dir as {label: value} (readable whether the server runs or not)."""
    r = node.rt.run("pg_controldata", ["-D", str(node.data_dir)], timeout=30, check=False)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise LabError(f"pg_controldata cannot read {node.data_dir}: {msg[-1] if msg else 'exit ' + str(r.returncode)}")
    out = {}
    for line in r.stdout.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


#: "Database cluster state" of a data dir that was (or is) a primary / a standby
PRIMARY_STATES = ("in production", "shut down", "in crash recovery", "shutting down")
STANDBY_STATES = ("in archive recovery", "shut down in recovery")


def disk_state(node: PgNode) -> dict[str, Any]:
    """What `node`'s data dir says about it, running or not: {"state", "timeline", "standby", "primary"}.

    A data dir with standby.signal, or in (shut down in) archive recovery, is a standby; any other cluster
    state ("in production", "shut down", crash recovery) was a primary. The timeline is the newest of the
    last checkpoint's and of the timeline history files in pg_wal (a promotion writes its history file at
    once, its checkpoint later).
    """
    cd = controldata(node)
    state = cd.get("Database cluster state", "unknown")
    tl = int(cd.get("Latest checkpoint's TimeLineID", "0") or 0)
    try:
        for f in (node.data_dir / "pg_wal").iterdir():
            if f.name.endswith(".history") and len(f.name) == 16:
                tl = max(tl, int(f.name[:8], 16))
    except (OSError, ValueError):
        pass
    standby = (node.data_dir / "standby.signal").exists() or state in STANDBY_STATES
    return {"state": state, "timeline": tl, "standby": standby, "primary": not standby}


def promote(connect: Connect, timeout: float = 30.0) -> dict[str, Any]:
    """Promote the standby behind `connect` (`pg_promote(true, timeout)`) and wait until it is writable."""
    t0 = time.monotonic()
    with connect() as c:
        if not in_recovery(c):
            return {"promoted": False, "already_primary": True, "seconds": 0.0}
        ok = c.execute("SELECT pg_promote(true, %s)", (int(timeout),)).fetchone()[0]
        if not ok:
            raise LabError(f"pg_promote did not finish within {timeout:.0f} s")

    def is_writable() -> bool:
        with connect() as c:
            return writable(c)

    wait_for(is_writable, timeout, "promoted PostgreSQL writable")
    return {"promoted": True, "already_primary": False, "seconds": round(time.monotonic() - t0, 3)}


def signal_cluster(node: PgNode, sig: int) -> list[int]:
    """Send `sig` to the postmaster and all its children (SIGSTOP/SIGCONT a whole server)."""
    import psutil

    pid = node.pid()
    if pid is None:
        return []
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []
    sent = []
    for p in procs:
        try:
            os.kill(p.pid, sig)
            sent.append(p.pid)
        except ProcessLookupError:
            pass
    return sent


def running(node: PgNode) -> bool:
    """The postmaster is alive (a SIGKILLed one awaiting its reaper counts as gone)."""
    from harness.lab import procs

    pid = node.pid()
    return pid is not None and procs.alive(pid)


def wait_reaped(node: PgNode, timeout: float = 15.0) -> None:
    """After a SIGKILL the postmaster stays a zombie until init reaps it (seconds here); until then
    postmaster.pid looks live and neither `pg_ctl start` nor pg_rewind will touch the data dir."""
    if node.pid() is None or running(node):
        return
    wait_for(lambda: node.pid() is None, timeout, f"killed PostgreSQL {node.region} reaped")


def is_paused(node: PgNode) -> bool:
    import psutil

    pid = node.pid()
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def standby_conninfo(upstream_port: int, region: str) -> str:
    return PgNode.conninfo(upstream_port).replace("application_name=drill_dr", f"application_name=drill_{region}")


def write_standby_config(node: PgNode, stream_port: int) -> None:
    """Our settings (port, conninfo naming the region) in postgresql.auto.conf (pg_rewind overwrote it)."""
    node.write_config(primary_conninfo=standby_conninfo(stream_port, node.region))


def make_standby(node: PgNode, stream_port: int) -> None:
    """standby.signal + our settings in postgresql.auto.conf, which pg_rewind overwrote with the source's."""
    node.make_standby(stream_port)
    write_standby_config(node, stream_port)


def streams_to_upstream(node: PgNode, connect: Connect, upstream_connect: Connect, stream_port: int) -> bool:
    """`node` is a standby whose WAL receiver streams from `stream_port` AND the upstream's WAL sender for it has
    reached state 'streaming' (caught up). The receiver alone is not enough: it reports 'streaming' for an
    instant before a standby whose history diverged from the upstream's timeline is rejected, then retries."""
    with connect() as c:
        if not (in_recovery(c) and streaming_from(c, stream_port)):
            return False
        started = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    with upstream_connect() as u:
        # a sender of this standby's previous life may linger (up to wal_sender_timeout): only one started since
        return u.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
                         "AND state = 'streaming' AND backend_start >= %s",
                         (node.application_name, started)).fetchone()[0] > 0


#: what a standby's server log says when its WAL ran past the point where the upstream's timeline forked off:
#: it will never stream from that upstream without pg_rewind
DIVERGED_MARKS = ("forked off current database system timeline", "is not in this server's history")


def _log_size(node: PgNode) -> int:
    try:
        return node.log_file.stat().st_size
    except OSError:
        return 0


def diverged_since(node: PgNode, offset: int) -> bool:
    """The node's server log, from byte `offset` on, says its history diverged from its upstream's."""
    try:
        with node.log_file.open("rb") as f:
            f.seek(offset)
            text = f.read(4 << 20).decode("utf-8", "replace")
    except OSError:
        return False
    return any(m in text for m in DIVERGED_MARKS)


def _start_and_stream(node: PgNode, connect: Connect, upstream_connect: Connect, stream_port: int,
                      timeout: float) -> bool:
    """Start `node` (a standby by its config) and wait until it streams from the upstream; False on timeout, or at
    once when its log says it diverged from the upstream's timeline (it needs pg_rewind, waiting cannot help)."""
    offset = _log_size(node)
    try:
        node.start(timeout=timeout)
    except LabError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if streams_to_upstream(node, connect, upstream_connect, stream_port):
                return True
        except Exception:  # not answering yet: asked again
            pass
        if diverged_since(node, offset):
            return False
        time.sleep(0.1)
    return False


def rejoin_as_standby(node: PgNode, connect: Connect, upstream: PgNode, upstream_connect: Connect,
                      stream_port: int, timeout: float = 20.0, grace_s: float = 3.0,
                      keep_copy: bool = True) -> dict[str, Any]:
    """Make `node` a streaming standby of `upstream` (which must be a running primary).

    Tries in order: already streaming (nothing to do); restart with the right conninfo (it was a
    standby); pg_rewind (CHECKPOINT on the upstream first; our settings rewritten after it); a fresh
    base backup. `node`'s data is only replaced once the upstream is confirmed a writable primary, and
    before pg_rewind or a base backup touch it, its data dir is copied to `<data_dir>.before-rejoin`
    ("kept_aside" in the result): WAL it acknowledged but never shipped stays there for forensics.
    `keep_copy=False` only for a node whose every WAL record the upstream has replayed (a clean switchover).
    """
    t0 = time.monotonic()
    if node.data_dir == upstream.data_dir:
        raise LabError(f"refusing to rejoin PostgreSQL {node.region} to itself")
    try:
        with upstream_connect() as c:
            if in_recovery(c):
                raise LabError(f"refusing to rejoin PostgreSQL {node.region}: upstream {upstream.region} is not a "
                               "primary (it is in recovery)")
    except LabError:
        raise
    except Exception as e:
        raise LabError(f"refusing to rejoin PostgreSQL {node.region}: upstream {upstream.region} on port "
                       f"{upstream.port} is not reachable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e

    kept: dict[str, Any] = {}

    def done(how: str) -> dict[str, Any]:
        return {"region": node.region, "upstream": upstream.region, "how": how, "stream_port": stream_port,
                "seconds": round(time.monotonic() - t0, 3), **kept}

    wait_reaped(node)
    running_role = None
    if node.is_running():
        try:
            with connect() as c:
                running_role = "standby" if in_recovery(c) else "primary"
            if running_role == "standby":
                # a standby whose upstream just came back reconnects by itself within a retry interval
                try:
                    wait_for(lambda: streams_to_upstream(node, connect, upstream_connect, stream_port), grace_s,
                             f"PostgreSQL {node.region} streaming")
                    return done("already streaming")
                except LabError:
                    pass
        except Exception:
            running_role = None
    was_standby = (node.data_dir / "standby.signal").exists()
    node.stop(mode="fast", timeout=20)
    if was_standby and running_role != "primary":
        make_standby(node, stream_port)
        if _start_and_stream(node, connect, upstream_connect, stream_port, min(timeout, 8.0)):
            return done("restarted as standby")
        node.stop(mode="fast", timeout=20)
    with upstream_connect() as c:
        c.execute("CHECKPOINT")  # pg_rewind reads the new timeline from the upstream's control file
    t_copy = time.monotonic()
    # before anything rewrites the data dir; LabError (nothing touched) if the copy fails
    aside = node.keep_aside() if keep_copy else None
    if aside is not None:
        kept.update(kept_aside=str(aside), copy_seconds=round(time.monotonic() - t_copy, 3))
    try:
        (node.data_dir / "standby.signal").unlink(missing_ok=True)
        node.rewind_from(upstream.port)
        make_standby(node, stream_port)
        if _start_and_stream(node, connect, upstream_connect, stream_port, timeout):
            return done("pg_rewind")
        node.stop(mode="fast", timeout=20)
        how = "base backup (streaming after pg_rewind failed)"
    except LabError as e:
        how = f"base backup (pg_rewind failed: {e})"
    node.basebackup_from(upstream.port, stream_port, keep_aside=keep_copy and aside is None)
    write_standby_config(node, stream_port)
    if not _start_and_stream(node, connect, upstream_connect, stream_port, timeout):
        raise LabError(f"PostgreSQL {node.region} does not stream from port {stream_port} even after a fresh base "
                       f"backup; log: {node.log_file}")
    return done(how)


def wait_caught_up(upstream_connect: Connect, standby_connect: Connect, timeout: float = 30.0) -> str:
    """Wait until the standby has replayed the upstream's current WAL position; returns that LSN."""
    with upstream_connect() as c:
        target = c.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

    def replayed() -> bool:
        with standby_connect() as c:
            return bool(c.execute("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0",
                                  (target,)).fetchone()[0])

    wait_for(replayed, timeout, f"standby replay up to {target}")
    return target


#: the tables the apps write, with their never-reused key: what "took writes" means, what a failback carries over
WRITTEN_TABLES = (("vouchers", "id"), ("tax_invoices", "id"), ("audit_log", "seq"))
_BUCKET = 1024  # keys per bucket when two copies of a table are compared


def _digest_upto(conn: Any, table: str, key: str, upto: int) -> tuple[int, str | None]:
    n, digest = conn.execute(f"SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY t.{key})) "
                             f"FROM {table} AS t WHERE t.{key} <= %s", (upto,)).fetchone()
    return int(n), digest


def data_fingerprint(conn: Any) -> dict[str, dict[str, Any]]:
    """Per written table: rows, the highest key and a content digest of all rows up to it."""
    out = {}
    for table, key in WRITTEN_TABLES:
        mx = int(conn.execute(f"SELECT COALESCE(max({key}), 0) FROM {table}").fetchone()[0])
        n, digest = _digest_upto(conn, table, key, mx)
        out[table] = {"rows": n, "max": mx, "digest": digest}
    return out


def holds_all_of(conn: Any, fingerprint: dict[str, dict[str, Any]]) -> bool:
    """True when `conn` has every row of every table in `fingerprint`, unchanged (keys are never reused, so
    rows written since have higher keys and writes may go on)."""
    return not missing_from(conn, fingerprint)


def missing_from(conn: Any, fingerprint: dict[str, dict[str, Any]]) -> list[str]:
    """The tables of `fingerprint` whose rows up to its highest key `conn` does not hold identically."""
    bad = []
    for table, key in WRITTEN_TABLES:
        fp = fingerprint.get(table)
        if fp is not None and _digest_upto(conn, table, key, fp["max"]) != (fp["rows"], fp["digest"]):
            bad.append(table)
    return bad


def _buckets(conn: Any, table: str, key: str) -> dict[int, tuple[int, str]]:
    rows = conn.execute(f"SELECT t.{key} / {_BUCKET}, count(*), md5(string_agg(md5(t::text), '' ORDER BY t.{key})) "
                        f"FROM {table} AS t GROUP BY 1").fetchall()
    return {int(b): (int(n), d) for b, n, d in rows}


def _rows_in(conn: Any, table: str, key: str, buckets: list[int]) -> dict[int, str]:
    rows = conn.execute(f"SELECT t.{key}, md5(t::text) FROM {table} AS t WHERE t.{key} / {_BUCKET} = ANY(%s)",
                        (buckets,)).fetchall()
    return {int(k): d for k, d in rows}


def divergence(a: Any, b: Any) -> dict[str, dict[str, list[int]]]:
    """Rows of the written tables that only `a` has, only `b` has, or both have with different content.

    {table: {"a_only": [keys], "b_only": [keys], "differ": [keys]}} for the tables that differ; empty when
    both hold the same rows. One grouped scan per table and side, then only the differing buckets' rows.
    """
    out: dict[str, dict[str, list[int]]] = {}
    for table, key in WRITTEN_TABLES:
        ba, bb = _buckets(a, table, key), _buckets(b, table, key)
        diff = sorted(k for k in set(ba) | set(bb) if ba.get(k) != bb.get(k))
        if not diff:
            continue
        ra, rb = _rows_in(a, table, key, diff), _rows_in(b, table, key, diff)
        out[table] = {"a_only": sorted(set(ra) - set(rb)), "b_only": sorted(set(rb) - set(ra)),
                      "differ": sorted(k for k in set(ra) & set(rb) if ra[k] != rb[k])}
    return out


def fence_writes(connect: Connect, on: bool = True, timeout: float = 5.0) -> None:
    """Make a running primary refuse writes (`default_transaction_read_only`; sessions begun before are cut,
    so their clients reconnect under it), or undo that. The setting lives in postgresql.auto.conf, which a
    rejoin rewrites."""
    with connect() as c:
        c.execute("ALTER SYSTEM SET default_transaction_read_only = on" if on
                  else "ALTER SYSTEM RESET default_transaction_read_only")
        c.execute("SELECT pg_reload_conf()")
    want = "on" if on else "off"

    def applied() -> bool:
        with connect() as c:
            return c.execute("SHOW default_transaction_read_only").fetchone()[0] == want

    wait_for(applied, timeout, f"default_transaction_read_only = {want}", interval=0.05)
    if on:
        with connect() as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")


DIVERGED_MARKER = "drill-diverged.json"


def mark_diverged(node: PgNode, own_rows: dict[str, int], against: str) -> Path:
    """Note in `node`'s data dir that it holds rows `against` lacks (fail_back then refuses to rewind it)."""
    import json

    path = node.data_dir / DIVERGED_MARKER
    path.write_text(json.dumps({"own_rows": own_rows, "against": against, "at": time.time()}) + "\n")
    node.rt.chown(path)
    return path


def diverged(node: PgNode) -> dict[str, Any] | None:
    """The note `mark_diverged` left in `node`'s data dir, if any."""
    import json

    try:
        return json.loads((node.data_dir / DIVERGED_MARKER).read_text())
    except (OSError, ValueError):
        return None


def checkpoint_lsn(node: PgNode) -> str:
    """"Latest checkpoint location" of a stopped node (pg_controldata): where a clean shutdown ended its WAL."""
    r = node.rt.run("pg_controldata", ["-D", str(node.data_dir)], timeout=30)
    for line in r.stdout.splitlines():
        if line.startswith("Latest checkpoint location:"):
            return line.split(":", 1)[1].strip()
    raise LabError(f"pg_controldata of {node.data_dir} shows no latest checkpoint location")


def wait_replayed(standby_connect: Connect, lsn: str, timeout: float = 30.0) -> None:
    """Wait until the standby has replayed WAL past `lsn`."""
    def replayed() -> bool:
        with standby_connect() as c:
            return bool(c.execute("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) > 0",
                                  (lsn,)).fetchone()[0])

    wait_for(replayed, timeout, f"standby replay past {lsn}")
