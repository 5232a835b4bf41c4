"""PostgreSQL logical backups to S3 (SSE-KMS) with metadata in DynamoDB: create and list."""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

PREFIX = "postgresql/daily/"


class BackupError(HarnessError):
    """A backup could not be taken, uploaded or listed."""


@dataclass(frozen=True)
class BackupInfo:
    key: str
    size: int
    last_modified: float
    sha256: str | None = None

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.last_modified)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "age_s": round(self.age_s, 1), "sha256": self.sha256,
                "last_modified": datetime.fromtimestamp(self.last_modified, tz=timezone.utc).isoformat()}


def create(dsn: str, *, pg_runtime, endpoint_url: str, bucket: str = "kerp-backups", kms_alias: str = "alias/kerp-backups",
           metadata_table: str = "kerp-backup-metadata") -> BackupInfo:
    """pg_dump (custom format) of `dsn`, uploaded with SSE-KMS, verified by size, recorded in DynamoDB."""
    from harness.lab.aws import client

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    key = f"{PREFIX}kerp_{stamp}.dump"
    with tempfile.TemporaryDirectory(prefix="drill-backup-") as tmp:
        out = Path(tmp) / "kerp.dump"
        Path(tmp).chmod(0o777)
        r = pg_runtime.run("pg_dump", ["--format=custom", "--compress=6", "--no-owner", "--no-acl", "-f", str(out),
                                       "-d", dsn], timeout=600, check=False)
        if r.returncode != 0 or not out.exists():
            raise BackupError(f"pg_dump of {dsn.split('@')[-1]} failed: {(r.stderr or '').strip()[-300:]}")
        data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    s3 = client("s3", endpoint_url)
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_alias,
                      Metadata={"sha256": digest})
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as e:
        raise BackupError(f"uploading s3://{bucket}/{key} failed: {e}") from e
    if int(head["ContentLength"]) != len(data):
        raise BackupError(f"s3://{bucket}/{key} has {head['ContentLength']} bytes, expected {len(data)}")
    try:
        client("dynamodb", endpoint_url).put_item(TableName=metadata_table, Item={
            "backup_id": {"S": stamp}, "backup_type": {"S": "postgresql_full"},
            "file_path": {"S": f"s3://{bucket}/{key}"}, "size_bytes": {"N": str(len(data))},
            "sha256": {"S": digest}, "created_at": {"S": datetime.now(timezone.utc).isoformat()}})
    except Exception as e:
        raise BackupError(f"recording backup metadata in {metadata_table} failed: {e}") from e
    return BackupInfo(key, len(data), head["LastModified"].timestamp(), digest)


def list_backups(*, endpoint_url: str, bucket: str = "kerp-backups", prefix: str = PREFIX) -> list[BackupInfo]:
    """Backups under `prefix`, newest first."""
    from harness.lab.aws import client

    s3 = client("s3", endpoint_url)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = [o for p in pages for o in p.get("Contents", [])]
    except Exception as e:
        raise BackupError(f"listing s3://{bucket}/{prefix} failed: {e}") from e
    out = [BackupInfo(o["Key"], int(o["Size"]), o["LastModified"].timestamp()) for o in items]
    return sorted(out, key=lambda b: b.last_modified, reverse=True)
