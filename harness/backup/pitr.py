"""Point-in-time recovery into a NEW PostgreSQL server: the newest base backup finished before the target, the
archived WAL after it, `restore_command` + `recovery_target_time` (then promote), and the integrity checks
there. The live cluster is only asked to close its current WAL segment (`pg_switch_wal`, as archive_timeout
would) so the target is in the archive; nothing of it is stopped, restored into or rewritten."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from harness.checks import integrity
from harness.errors import ExitCode, HarnessError, UsageError
from harness.lab import aws, procs, recovered, walarchive
from harness.lab.postgres import PgNode
from harness.safety import guard

__all__ = ["PITR_GATE", "ArchiveTampered", "PitrError", "PitrResult", "check_server_name", "parse_target", "discard",
           "point_in_time_recovery"]

PITR_GATE = "database_point_in_time_recovery"
#: integrity checks not run on a recovered copy: it has no pre-fault snapshot of its own to compare with
SKIPPED_CHECKS = ("snapshot_unchanged",)
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_STOPPING = re.compile(r"recovery stopping (?:before|after) commit of transaction \d+, time (.+)$", re.M)


class PitrError(HarnessError):
    """The recovery could not be done (no archive, the server did not start or not reach the target)."""


class ArchiveTampered(HarnessError):
    """A base backup or an archived WAL file does not match its recorded sha256 (exit 4)."""

    exit_code = ExitCode.INTEGRITY_VIOLATION


def check_server_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UsageError(f"server name {name!r} must be lower-case letters, digits, '_' or '-' (at most 40, "
                         "starting with a letter)")
    return name


def parse_target(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time with a UTC offset (or Z), not in the future; UsageError otherwise."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise UsageError(f"--to {text!r} is not an ISO-8601 time (e.g. 2026-12-06T20:41:07.250+00:00)") from e
    if t.tzinfo is None:
        raise UsageError(f"--to {text!r} has no UTC offset; add one (Z or +00:00) so the time is unambiguous")
    now = now or datetime.now(timezone.utc)
    if t > now:
        raise UsageError(f"--to {t.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})")
    return t.astimezone(timezone.utc)


@dataclass(frozen=True)
class PitrResult:
    """A recovered server: where it runs, the requested and achieved recovery points, its integrity checks."""

    name: str
    dsn: str
    port: int
    data_dir: str
    requested: datetime
    recovered_to: datetime | None
    stopped_before: str | None
    base_backup: dict[str, Any]
    wal_segments: int
    integrity: tuple[Any, ...] = ()
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.integrity)

    @property
    def difference_s(self) -> float | None:
        return None if self.recovered_to is None else round((self.requested - self.recovered_to).total_seconds(), 6)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dsn": self.dsn, "port": self.port, "data_dir": self.data_dir,
                "requested": self.requested.isoformat(),
                "recovered_to": self.recovered_to.isoformat() if self.recovered_to else None,
                "difference_s": self.difference_s, "stopped_before": self.stopped_before,
                "base_backup": self.base_backup, "wal_segments": self.wal_segments, "ok": self.ok,
                "seconds": round(self.seconds, 3), "integrity": [c.to_dict() for c in self.integrity],
                "notes": list(self.notes)}


def _switch_and_wait(primary_dsn: str | None, s3: Any, bucket: str, timeout: float) -> str:
    """Close the live primary's current WAL segment and wait until it is in S3; a note on what happened."""
    if not primary_dsn:
        return "no live primary reached: recovering from what is archived"
    t0 = time.monotonic()
    try:
        with psycopg.connect(primary_dsn, autocommit=True, connect_timeout=3) as c:
            # the segment holding the last WAL written: after a switch the returned LSN is the next segment's
            # start; with nothing written since the last switch it is the current segment's first record
            # (its start + the 40-byte long page header), a segment that is not complete: step back before both
            name = c.execute("SELECT pg_walfile_name(pg_switch_wal() - 41)").fetchone()[0]
            while (c.execute("SELECT last_archived_wal >= %s FROM pg_stat_archiver", (name,)).fetchone()[0]
                   is not True):
                if time.monotonic() - t0 > timeout:
                    raise PitrError(f"the live primary did not archive WAL segment {name} within {timeout:.0f} s "
                                    "(see its log: archive_command)")
                time.sleep(0.1)
    except psycopg.Error as e:
        return f"live primary not reachable ({str(e).strip().splitlines()[0] if str(e).strip() else e}): " \
               "recovering from what is archived"
    t1 = time.monotonic()
    if not walarchive.wait_archived(s3, bucket, name, max(5.0, timeout - (t1 - t0))):
        raise PitrError(f"WAL segment {name} did not reach s3://{bucket}/{walarchive.WAL_PREFIX} within "
                        f"{timeout:.0f} s (see the lab's walship.log)")
    return (f"live primary switched WAL; {name} archived by PostgreSQL in {t1 - t0:.2f} s, "
            f"in S3 {time.monotonic() - t1:.2f} s later")


def _extract_base(s3: Any, bucket: str, base: walarchive.BaseBackup, data_dir: Path) -> None:
    """Stream the base backup's tar into `data_dir`, checking its sha256 against the recorded one."""
    obj = s3.get_object(Bucket=bucket, Key=base.key)
    reader = walarchive.HashingReader(obj["Body"])
    with tarfile.open(fileobj=reader, mode="r|gz") as tar:
        tar.extractall(data_dir, filter="data")
    while reader.read(1 << 20):  # the tar's trailing padding counts in the digest
        pass
    if reader.hexdigest != base.sha256:
        raise ArchiveTampered(f"base backup {base.key} has sha256 {reader.hexdigest}, recorded {base.sha256}")


def _fetch_wal(s3: Any, bucket: str, start_wal: str, wal_dir: Path) -> int:
    """Download (and gunzip) the archived WAL from `start_wal` on, every timeline, plus the history files."""
    start = walarchive.segment_position(start_wal)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=walarchive.WAL_PREFIX):
        for o in page.get("Contents", []):
            name = o["Key"][len(walarchive.WAL_PREFIX):].removesuffix(".gz")
            seg = walarchive.WAL_NAME.match(name)
            if not (walarchive.HISTORY_NAME.match(name) or (seg and walarchive.segment_position(name) >= start)):
                continue
            obj = s3.get_object(Bucket=bucket, Key=o["Key"])
            body = obj["Body"].read()
            declared = (obj.get("Metadata") or {}).get("sha256")
            if declared != hashlib.sha256(body).hexdigest():
                raise ArchiveTampered(f"archived WAL {o['Key']} does not match its sha256 metadata")
            (wal_dir / name).write_bytes(gzip.decompress(body))
            n += seg is not None
    return n


def _chown_tree(rt: Any, root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        rt.chown(Path(dirpath))
        for f in filenames:
            rt.chown(Path(dirpath) / f)
    root.chmod(0o700)


def _recovery_config(node: PgNode, wal_dir: Path, target: datetime | None, timeline: str = "latest") -> None:
    """Archive recovery up to `target` (then promote), or with None to the end of the archived WAL (the latest
    recoverable point; recovery then ends and the server is promoted by itself), following `timeline`
    ('latest': any later timeline in the archive; 'current': the base backup's only)."""
    node.write_config(primary_conninfo=None)  # the node has no archive spool: archive_mode stays off
    extra = {"restore_command": f"'cp {wal_dir}/%f \"%p\"'", "recovery_target_timeline": f"'{timeline}'"}
    if target is not None:
        extra.update({"recovery_target_time": f"'{target.isoformat()}'", "recovery_target_action": "'promote'",
                      "recovery_target_inclusive": "on"})
    path = node.data_dir / "postgresql.auto.conf"
    with path.open("a") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in extra.items()))
    for leftover in ("standby.signal", "postmaster.pid", "postmaster.opts"):
        (node.data_dir / leftover).unlink(missing_ok=True)
    sig = node.data_dir / "recovery.signal"
    sig.touch()
    node.rt.chown(sig)


def point_in_time_recovery(lab: Any, target: datetime | None, name: str, *, primary_dsn: str | None,
                           configuration: dict[str, Any] | None = None, bucket: str = aws.BUCKET,
                           timeout: float = 180.0, checks: tuple[str, ...] | None = None,
                           timeline: str = "latest") -> PitrResult:
    """Recover the lab's database as of `target` into a new server `name` (see the module docstring); with
    target None, as far as the archive in `bucket` goes (its newest base backup and every WAL segment after it);
    `timeline` 'current' keeps to the base backup's timeline (what the archive holds of the server it was taken
    from), 'latest' follows any later one in the archive (a promoted standby's).

    The gate database_point_in_time_recovery must be approved first, else SafetyRefusal before anything is
    read or started. The server is recorded (harness.lab.recovered) before it starts: `drill lab down` or
    `discard` stops it. Integrity checks (`checks`, default every one but snapshot_unchanged) run on its kerp
    database; their failures are in the result.
    """
    guard.approve(PITR_GATE, "point_in_time_recovery", configuration)
    # the arguments before any work (a WAL switch, downloads, a new server): one line, nothing left running
    if timeline not in ("latest", "current"):
        raise UsageError(f"timeline {timeline!r} must be 'latest' or 'current'")
    unknown = sorted(set(checks or ()) - set(integrity.CHECK_NAMES))
    if unknown:
        raise UsageError(f"unknown integrity check(s) {', '.join(unknown)} (known: {', '.join(integrity.CHECK_NAMES)})")
    check_server_name(name)
    t0 = time.monotonic()
    topo = lab.topology()
    endpoint = topo["s3"]["endpoint_url"]
    if name in recovered.records(lab.state):
        raise UsageError(f"a recovered server named {name!r} exists already; pick another name or "
                         f"`drill backup discard {name}`")
    s3 = aws.client("s3", endpoint)
    notes = [_switch_and_wait(primary_dsn, s3, bucket, timeout=120)]
    latest = target is None
    if latest:
        target = datetime.now(timezone.utc)
    bases = [b for b in walarchive.base_backups(s3, bucket) if b.finished_at <= target]
    if not bases:
        every = walarchive.base_backups(s3, bucket)
        earliest = f"the earliest recoverable time is {every[0].finished_at.isoformat()}" if every else \
            "there is no base backup at all"
        raise UsageError(f"no base backup finished before {target.isoformat()}: {earliest}")
    base = bases[-1]
    rt = lab.pg_runtime()
    root = Path(lab.server_root)
    port = procs.free_ports(1)[0]
    node = PgNode(f"recovered {name}", root / f"pitr-{name}", port, root / "logs" / f"pitr-{name}.log", rt)
    wal_dir = root / f"pitr-{name}-wal"
    recovered.record(lab.state, name, {"kind": "postgres", "name": name, "port": port, "data_dir": str(node.data_dir),
                                       "log_file": str(node.log_file), "remove": [str(wal_dir)],
                                       "target": "latest" if latest else target.isoformat(),
                                       "base_backup": base.key})
    try:
        for d in (node.data_dir, wal_dir):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, mode=0o700)
        node.log_file.parent.mkdir(parents=True, exist_ok=True)
        node.log_file.touch()
        rt.chown(node.log_file)
        _extract_base(s3, bucket, base, node.data_dir)
        segments = _fetch_wal(s3, bucket, base.start_wal, wal_dir)
        _chown_tree(rt, node.data_dir)
        _chown_tree(rt, wal_dir)
        _recovery_config(node, wal_dir, None if latest else target, timeline)
        try:
            node.start(timeout=timeout)
        except HarnessError as e:
            raise PitrError(f"the recovered server did not start: {e}") from e
        recovered_to = _wait_promoted(node, timeout)
    except BaseException:
        recovered.stop(lab.state, name, rt)
        raise
    log = node.log_file.read_text(errors="replace")
    m = _STOPPING.findall(log)
    dsn = node.dsn
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        results = integrity.run_all(c, rt=rt, dsn=dsn, only=[n for n in (checks or integrity.CHECK_NAMES)
                                                             if n not in SKIPPED_CHECKS])
    if recovered_to is None:
        notes.append("no transaction was replayed after the base backup: the server holds the base backup")
    recovered.update(lab.state, name, recovered_to=recovered_to.isoformat() if recovered_to else None)
    return PitrResult(name, dsn, port, str(node.data_dir), target, recovered_to, m[-1].strip() if m else None,
                      base.to_dict(), segments, tuple(results), time.monotonic() - t0, tuple(notes))


def _wait_promoted(node: PgNode, timeout: float) -> datetime | None:
    """Wait until recovery ended (promoted); the time of the last transaction it replayed."""
    deadline = time.monotonic() + timeout
    while True:
        if not node.is_running():
            raise PitrError(f"the recovered server stopped during recovery: "
                            f"{' | '.join(node.log_file.read_text(errors='replace').strip().splitlines()[-3:])}")
        try:
            with psycopg.connect(node.admin_dsn(), autocommit=True, connect_timeout=2) as c:
                in_rec, last = c.execute("SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()").fetchone()
            if not in_rec:
                return last.astimezone(timezone.utc) if last else None
        except psycopg.Error:
            pass
        if time.monotonic() >= deadline:
            raise PitrError(f"recovery did not end within {timeout:.0f} s; log: {node.log_file}")
        time.sleep(0.2)


def discard(lab: Any, name: str) -> bool:
    """Stop the recovered server `name` and remove its data; False when there is none by that name."""
    return recovered.stop(lab.state, name, lab.pg_runtime())
