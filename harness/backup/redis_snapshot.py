"""Redis (Valkey) snapshots as the plan's section 4.3 takes them: LASTSAVE read, BGSAVE, LASTSAVE polled until it
changes, the RDB file streamed to S3 like the other backups (SSE-KMS, sha256 in the metadata and DynamoDB); a
restore starts a NEW Valkey (free port) on the downloaded RDB and counts the sessions it holds."""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from harness.backup.pitr import ArchiveTampered, check_server_name
from harness.errors import HarnessError, UsageError
from harness.lab import aws, procs, recovered
from harness.lab.manager import valkey_binary
from harness.lab.walarchive import transfer_config
from harness.safety import guard
from harness.workload import find_primary_redis

__all__ = ["RedisBackupError", "RedisSnapshot", "create", "restore"]

SESSION_PATTERN = "session:*"
RESTORE_GATE = "data_restore_from_backup"


class RedisBackupError(HarnessError):
    """The snapshot could not be taken, stored or restored."""


@dataclass(frozen=True)
class RedisSnapshot:
    key: str
    layer: str
    size: int
    sha256: str
    lastsave_before: int
    lastsave_after: int
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "layer": self.layer, "size": self.size, "sha256": self.sha256,
                "lastsave_before": self.lastsave_before, "lastsave_after": self.lastsave_after,
                "created_at": self.created_at.isoformat()}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lastsave(r: redis.Redis) -> int:
    v = r.lastsave()
    return int(v.timestamp()) if isinstance(v, datetime) else int(v)


def create(topo: dict[str, Any], *, endpoint_url: str, bucket: str = aws.BUCKET, prefix: str = "redis/",
           layer: str = "snapshot.redis", kms_alias: str = aws.KMS_ALIAS, metadata_table: str = aws.METADATA_TABLE,
           timeout: float = 60.0) -> RedisSnapshot:
    """BGSAVE on the current master, wait for LASTSAVE to change, store its RDB in S3 and DynamoDB."""
    url = find_primary_redis(topo)
    r = redis.Redis.from_url(url, socket_timeout=5)
    try:
        before = _lastsave(r)
        while _lastsave(r) == before and int(time.time()) == before:
            time.sleep(0.05)  # LASTSAVE has 1 s resolution: a save in the same second would look unchanged
        r.bgsave()
        deadline = time.monotonic() + timeout
        after = _lastsave(r)
        while after == before:
            if time.monotonic() > deadline:
                raise RedisBackupError(f"BGSAVE on {url} did not finish within {timeout:.0f} s (LASTSAVE unchanged)")
            time.sleep(0.1)
            after = _lastsave(r)
        if r.info("persistence").get("rdb_last_bgsave_status") != "ok":
            raise RedisBackupError(f"BGSAVE on {url} failed (rdb_last_bgsave_status not ok)")
        rdb = Path(r.config_get("dir")["dir"]) / r.config_get("dbfilename")["dbfilename"]
    except redis.RedisError as e:
        raise RedisBackupError(f"snapshot of {url} failed: {e}") from e
    finally:
        r.close()
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d_%H%M%S")
    key = f"{prefix}{stamp}_dump.rdb"
    digest, size = _sha256_file(rdb), rdb.stat().st_size
    s3 = aws.client("s3", endpoint_url)
    try:
        s3.upload_file(str(rdb), bucket, key, Config=transfer_config(), ExtraArgs={
            "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_alias,
            "Metadata": {"sha256": digest, "layer": layer, "created-at": now.isoformat()}})
        aws.client("dynamodb", endpoint_url).put_item(TableName=metadata_table, Item={
            "backup_id": {"S": f"{layer}:{stamp}"}, "backup_type": {"S": "redis_rdb"}, "layer": {"S": layer},
            "file_path": {"S": f"s3://{bucket}/{key}"}, "size_bytes": {"N": str(size)}, "sha256": {"S": digest},
            "created_at": {"S": now.isoformat()}, "status": {"S": "completed"}})
    except Exception as e:
        raise RedisBackupError(f"storing s3://{bucket}/{key} failed: {e}") from e
    return RedisSnapshot(key, layer, size, digest, before, after, now)


def restore(lab: Any, key: str, name: str, *, bucket: str = aws.BUCKET, configuration: dict[str, Any] | None = None,
            timeout: float = 60.0) -> dict[str, Any]:
    """Start a NEW Valkey (free port, own dir) on snapshot `key` and count its keys and sessions.

    Gate data_restore_from_backup first; the RDB's sha256 must match its metadata (ArchiveTampered, exit 4,
    before anything starts). The server is recorded like a point-in-time recovery: `discard` / `lab down`."""
    guard.approve(RESTORE_GATE, "restore_from_backup", configuration)
    check_server_name(name)
    if name in recovered.records(lab.state):
        raise UsageError(f"a recovered server named {name!r} exists already")
    s3 = aws.client("s3", lab.topology()["s3"]["endpoint_url"])
    d = lab.state / f"redis-restore-{name}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    rdb = d / "dump.rdb"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        s3.download_file(bucket, key, str(rdb), Config=transfer_config())
    except Exception as e:
        shutil.rmtree(d, ignore_errors=True)
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise UsageError(f"no snapshot s3://{bucket}/{key}") from e
        raise RedisBackupError(f"downloading s3://{bucket}/{key} failed: {e}") from e
    declared, digest = (head.get("Metadata") or {}).get("sha256"), _sha256_file(rdb)
    if declared != digest:
        shutil.rmtree(d, ignore_errors=True)
        raise ArchiveTampered(f"snapshot {key} has sha256 {digest}, its metadata says {declared}")
    port = procs.free_ports(1)[0]
    cmd = [str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--dbfilename",
           "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"]
    pid = procs.spawn(cmd, d / "valkey.log")
    recovered.record(lab.state, name, {"kind": "valkey", "name": name, "port": port, "pid": pid,
                                       "pid_started": procs.started_at(pid), "remove": [str(d)], "snapshot": key})
    try:
        r = redis.Redis(port=port, socket_timeout=2)
        if not procs.wait_until(lambda: r.info("persistence").get("loading") == 0, timeout, interval=0.1):
            raise RedisBackupError(f"the restored Valkey did not load {key} within {timeout:.0f} s; log: {d / 'valkey.log'}")
        keys = int(r.dbsize())
        sessions = sum(1 for _ in r.scan_iter(match=SESSION_PATTERN, count=1000))
        r.close()
    except BaseException:
        recovered.stop(lab.state, name, None)
        raise
    return {"name": name, "url": f"redis://127.0.0.1:{port}/0", "port": port, "snapshot": key, "sha256": digest,
            "keys": keys, "sessions": sessions}
