"""The lab's continuous WAL archive and base backups in S3: PostgreSQL's archive_command copies each finished
WAL segment into a spool directory, the shipper (`python -m harness.lab.walarchive`) uploads it gzip-compressed
with SSE-KMS and a sha256 to the primary region's bucket and to the DR region's (kerp-backups-dr, so a
point-in-time recovery from the DR copies alone is possible after a region loss), and `base_backup` streams `pg_basebackup -Ft` into S3 (the automated backups a
point-in-time recovery starts from).

The spool exists because, as root, PostgreSQL runs as the unprivileged lab user, who can run `cp` but not the
harness's Python (the interpreter may live in a directory only root can read); the shipper runs as the lab's
other processes do. A segment counts as archived for PostgreSQL once it is in the spool and for a recovery
once it is in S3 (`wait_archived`), as with an asynchronous archiver (pgBackRest's archive-async).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import queue
import re
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from harness.errors import LabError
from harness.lab import aws

WAL_PREFIX = "postgresql/wal/"
BASE_PREFIX = "postgresql/base/"
SPOOL_DIR = "wal-spool"
#: a WAL segment (timeline, log, seg) or a timeline history file
WAL_NAME = re.compile(r"^[0-9A-F]{24}$")
HISTORY_NAME = re.compile(r"^[0-9A-F]{8}\.history$")
#: multipart upload with small parts and few threads: the harness never holds a whole backup in memory
PART_SIZE = 8 * 1024 * 1024
UPLOAD_THREADS = 2
#: how far a producer (pg_dump, pg_basebackup) may run ahead of the upload
READ_AHEAD = 64 * 1024 * 1024


def archive_command(spool: Path) -> str:
    """The archive_command (as PostgreSQL's documentation writes it): never overwrite, copy then rename."""
    d = shlex.quote(str(spool))
    return f"test ! -f {d}/%f && cp %p {d}/.%f.tmp && mv {d}/.%f.tmp {d}/%f"


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                          max_concurrency=UPLOAD_THREADS, use_threads=True)


class HashingReader:
    """A read-only file object over `raw` that counts and hashes (sha256) every byte read through it.

    With `ahead` (bytes), a thread drains `raw` (a producer's pipe) into a bounded buffer, so the producer
    (pg_dump, pg_basebackup) never waits while a part is being uploaded; memory stays bounded by `ahead`.
    """

    CHUNK = 1 << 20

    def __init__(self, raw: IO[bytes], ahead: int = 0) -> None:
        self.raw, self.sha = raw, hashlib.sha256()
        self.size = 0
        self._q: queue.Queue | None = None
        self._rest = b""
        self._eof = False
        if ahead > 0:
            self._q = queue.Queue(maxsize=max(1, ahead // self.CHUNK))
            threading.Thread(target=self._drain, daemon=True, name="drill-read-ahead").start()

    def _drain(self) -> None:
        try:
            while True:
                b = self.raw.read(self.CHUNK)
                self._q.put(b)
                if not b:
                    return
        except Exception as e:  # handed to the reader
            self._q.put(e)

    def _read_ahead(self, n: int) -> bytes:
        parts, have = [self._rest] if self._rest else [], len(self._rest)
        self._rest = b""
        while (n < 0 or have < n) and not self._eof:
            b = self._q.get()
            if isinstance(b, Exception):
                raise b
            if not b:
                self._eof = True
                break
            parts.append(b)
            have += len(b)
        data = b"".join(parts)
        if n >= 0 and len(data) > n:
            data, self._rest = data[:n], data[n:]
        return data

    def read(self, n: int = -1) -> bytes:
        b = self._read_ahead(n) if self._q is not None else self.raw.read(n)
        self.sha.update(b)
        self.size += len(b)
        return b

    @property
    def hexdigest(self) -> str:
        return self.sha.hexdigest()


# -- shipping -------------------------------------------------------------------------------------
def ship_one(s3: Any, bucket: str, path: Path, kms_alias: str = aws.KMS_ALIAS) -> str:
    """Upload one spooled WAL file (gzip, SSE-KMS, sha256 of the stored bytes); returns the key.

    An object already there with the same content is success (a retry); different content is an error: two
    servers archived different WAL under one name, and the first is kept.
    """
    raw = path.read_bytes()
    body = gzip.compress(raw, compresslevel=1, mtime=0)
    digest = hashlib.sha256(body).hexdigest()
    key = f"{WAL_PREFIX}{path.name}.gz"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        head = None
    if head is not None:
        if (head.get("Metadata") or {}).get("sha256") == digest:
            return key
        raise LabError(f"s3://{bucket}/{key} exists with other content; keeping {path} in the spool")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_alias,
                  Metadata={"sha256": digest, "wal-size": str(len(raw))})
    return key


def ship(spool: Path, endpoint_url: str, bucket: str = aws.BUCKET, interval: float = 0.2,
         dr_bucket: str | None = aws.DR_BUCKET) -> None:
    """Upload every spooled WAL file (oldest name first) to `bucket` and, when given, to the DR-region
    `dr_bucket` (that region's key); delete it from the spool once both hold it; loop until SIGTERM.

    The two uploads are independent: one bucket refusing (a region's storage lost) does not hold the other
    back, newer files included; the spool keeps a file until both have it (re-shipping is a no-op)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    targets: list[tuple[str, str, str, Any]] = [(bucket, aws.LAB_REGION, aws.KMS_ALIAS, None)]
    if dr_bucket:
        targets.append((dr_bucket, aws.DR_REGION, aws.DR_KMS_ALIAS, None))
    done: dict[str, set[str]] = {}  # file name -> buckets holding it
    while not stop:
        try:
            targets = [(b, r, k, c or aws.regional_client("s3", endpoint_url, r)) for b, r, k, c in targets]
            names = sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
            refused = False
            for name in names:
                if stop:
                    break
                spooled = (spool / name).stat().st_mtime
                have = done.setdefault(name, set())
                for b, _region, kms_alias, s3 in targets:
                    if b in have:
                        continue
                    try:
                        ship_one(s3, b, spool / name, kms_alias)
                        have.add(b)
                    except Exception as e:
                        print(f"{datetime.now(timezone.utc).isoformat()} {name} not in s3://{b} yet: "
                              f"{type(e).__name__}: {e}", flush=True)
                if len(have) == len(targets):
                    (spool / name).unlink()
                    done.pop(name, None)
                    print(f"{datetime.now(timezone.utc).isoformat()} archived {name} "
                          f"({time.time() - spooled:.2f} s after PostgreSQL spooled it)", flush=True)
                else:
                    refused = True  # kept in the spool; newer files still go to the bucket that takes them
            if refused:
                time.sleep(1.0)
        except Exception as e:  # moto not up yet, bucket not provisioned yet: PostgreSQL keeps the spool
            print(f"{datetime.now(timezone.utc).isoformat()} not shipped yet: {type(e).__name__}: {e}", flush=True)
            time.sleep(1.0)
        time.sleep(interval)


def shipper_command(spool: Path, endpoint_url: str, bucket: str = aws.BUCKET,
                    dr_bucket: str = aws.DR_BUCKET) -> list[str]:
    return [sys.executable, "-m", "harness.lab.walarchive", "--spool", str(spool), "--endpoint-url", endpoint_url,
            "--bucket", bucket, "--dr-bucket", dr_bucket]


def wait_archived(s3: Any, bucket: str, wal_name: str, timeout: float = 60.0) -> bool:
    """True once segment `wal_name` is in S3 (the spool shipped it) within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3.head_object(Bucket=bucket, Key=f"{WAL_PREFIX}{wal_name}.gz")
            return True
        except Exception:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


# -- base backups ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseBackup:
    """A base backup in S3: its key, when it was started and finished (consistent from then on), start WAL."""

    key: str
    started_at: datetime
    finished_at: datetime
    start_wal: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
                "start_wal": self.start_wal, "size": self.size, "sha256": self.sha256}

    @staticmethod
    def from_head(key: str, head: dict[str, Any]) -> "BaseBackup | None":
        m = head.get("Metadata") or {}
        try:
            return BaseBackup(key, datetime.fromisoformat(m["started-at"]), datetime.fromisoformat(m["finished-at"]),
                              m["start-wal"], int(head["ContentLength"]), m["sha256"])
        except (KeyError, ValueError):
            return None


def base_backup(node: Any, endpoint_url: str, bucket: str = aws.BUCKET, kms_alias: str = aws.KMS_ALIAS,
                metadata_table: str = aws.METADATA_TABLE) -> BaseBackup:
    """Stream `pg_basebackup -Ft -z -X none -D -` of `node` (a running PgNode) into S3, hashing on the way.

    The WAL the backup needs comes from the archive (pg_basebackup waits until it is archived). The object
    is uploaded under a temporary name and renamed (copied) once complete with its sha256 and times in the
    metadata, then recorded in DynamoDB like every other backup.
    """
    import psycopg

    s3 = aws.client("s3", endpoint_url)
    started = datetime.now(timezone.utc)
    with psycopg.connect(node.admin_dsn(), autocommit=True, connect_timeout=5) as c:
        start_wal = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    stamp = started.strftime("%Y%m%d_%H%M%S_%f")
    key = f"{BASE_PREFIX}base_{stamp}.tar.gz"
    proc = node.rt.popen("pg_basebackup", ["-h", "127.0.0.1", "-p", str(node.port), "-U", "postgres", "-D", "-",
                                           "-Ft", "-z", "-X", "none", "-c", "fast", "-l", f"drill {stamp}"])
    reader = HashingReader(proc.stdout, ahead=READ_AHEAD)
    tmp_key = key + ".partial"
    try:
        s3.upload_fileobj(reader, bucket, tmp_key, Config=transfer_config(),
                          ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_alias})
    except Exception as e:
        proc.kill()
        proc.wait()
        raise LabError(f"uploading the base backup to s3://{bucket}/{tmp_key} failed: {e}") from e
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        s3.delete_object(Bucket=bucket, Key=tmp_key)
        raise LabError(f"pg_basebackup of PostgreSQL {node.region} failed: {err.strip()[-300:]}")
    finished = datetime.now(timezone.utc)
    meta = {"sha256": reader.hexdigest, "started-at": started.isoformat(), "finished-at": finished.isoformat(),
            "start-wal": start_wal, "layer": "postgresql-base"}
    s3.copy({"Bucket": bucket, "Key": tmp_key}, bucket, key, Config=transfer_config(),
            ExtraArgs={"Metadata": meta, "MetadataDirective": "REPLACE", "ServerSideEncryption": "aws:kms",
                       "SSEKMSKeyId": kms_alias})
    s3.delete_object(Bucket=bucket, Key=tmp_key)
    aws.client("dynamodb", endpoint_url).put_item(TableName=metadata_table, Item={
        "backup_id": {"S": f"base_{stamp}"}, "backup_type": {"S": "postgresql_base"},
        "file_path": {"S": f"s3://{bucket}/{key}"}, "size_bytes": {"N": str(reader.size)},
        "sha256": {"S": reader.hexdigest}, "created_at": {"S": finished.isoformat()}, "status": {"S": "completed"}})
    return BaseBackup(key, started, finished, start_wal, reader.size, reader.hexdigest)


def base_backups(s3: Any, bucket: str = aws.BUCKET) -> list[BaseBackup]:
    """Every complete base backup in the bucket, oldest first."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=BASE_PREFIX):
        for o in page.get("Contents", []):
            if o["Key"].endswith(".partial"):
                continue
            b = BaseBackup.from_head(o["Key"], s3.head_object(Bucket=bucket, Key=o["Key"]))
            if b is not None:
                out.append(b)
    return sorted(out, key=lambda b: b.finished_at)


def segment_position(name: str) -> tuple[int, int]:
    """(log, seg) of a WAL segment file name: its place in the WAL stream whatever the timeline."""
    return int(name[8:16], 16), int(name[16:24], 16)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.lab.walarchive", description=__doc__.splitlines()[0])
    p.add_argument("--spool", required=True, type=Path)
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--bucket", default=aws.BUCKET)
    p.add_argument("--dr-bucket", default=aws.DR_BUCKET, help="the DR-region copy of the archive ('' for none)")
    a = p.parse_args(argv)
    print(json.dumps({"spool": str(a.spool), "bucket": a.bucket, "dr_bucket": a.dr_bucket,
                      "endpoint_url": a.endpoint_url}), flush=True)
    ship(a.spool, a.endpoint_url, a.bucket, dr_bucket=a.dr_bucket or None)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        os._exit(130)
