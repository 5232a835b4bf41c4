"""Read-only S3 probes: list the backups in the lab's bucket (moto) or a configured endpoint."""

from __future__ import annotations

from typing import Any

from harness.errors import LabError
from harness.targets import _lab

__all__ = ["backup_count", "list_backups"]


def _client(configuration: dict | None, secrets: dict | None) -> tuple[Any, str]:
    from harness.lab import aws

    cfg = configuration or {}
    endpoint = cfg.get("drill_s3_endpoint_url") or _lab.resolve(configuration).s3_endpoint_url
    return aws.client("s3", endpoint), cfg.get("drill_backup_bucket") or aws.BUCKET


def list_backups(prefix: str = "", configuration: dict | None = None, secrets: dict | None = None) -> list[dict]:
    """Objects under `prefix` in the backups bucket: key, size, last_modified (ISO-8601), newest first."""
    s3, bucket = _client(configuration, secrets)
    out: list[dict] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out.append({"key": o["Key"], "size": o["Size"], "last_modified": o["LastModified"].isoformat()})
    except Exception as e:
        raise LabError(f"cannot list bucket {bucket!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return sorted(out, key=lambda o: o["last_modified"], reverse=True)


def backup_count(prefix: str = "", configuration: dict | None = None, secrets: dict | None = None) -> int:
    """How many objects are under `prefix` in the backups bucket."""
    return len(list_backups(prefix, configuration, secrets))
